//! Client of a tenant's Lumenore server, speaking as the original Python server did (its requests are
//! recorded in `connector/tests/fixtures/seed-contract/` and replayed by `e2e/tests/seed_contract`).
//!
//! - Every request sends `Accept: application/json`; bodies are JSON. Login and tokens: [`login`].
//! - A 401 triggers one re-login and one retry (not for a static key, nor when the backend refuses every
//!   fresh token: see [`login`]).
//! - Connection errors (refused, reset before or during the answer) and 502/503/504 are retried a bounded
//!   number of times with jittered backoff.
//! - Time limits as the original's: connecting, silence between reads (waiting for the headers and between
//!   parts of the body), and the whole request. Dropping a call's future (the MCP client went away) aborts
//!   its HTTP request.
//! - Answers are read within the byte cap and parsed keeping only what the result limits allow: [`body`].
//! - The connection pool is bounded: idle connections per host and how long they are kept.
//!
//! Nothing here logs a URL (schema ids are path segments), a body, a header or a reqwest error text.

pub(crate) mod body;
pub(crate) mod bounded;
pub mod credentials;
pub(crate) mod failure;
mod login;

use std::{sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use futures::TryStreamExt;
use reqwest::{Method, StatusCode, header};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use url::Url;

pub use self::credentials::Credentials;
use self::{
    body::{BodyLimits, Chunks, Expect},
    failure::{AttemptError, Redactions, Timeouts},
    login::{Issued, LoginRequest, Tokens},
};
use super::{BackendError, ProgressSender, Readiness};
use crate::{
    config::ReadinessCheck,
    metrics::{ClassLabels, Metrics},
    tools::{
        ToolCall,
        envelope::{Answer, ResultLimits},
    },
};

/// The columns `get_metadata_info` asks for, in the original server's order.
pub const METADATA_COLUMNS: [&str; 7] = [
    "description",
    "column_name",
    "column_alias",
    "column_type",
    "unit",
    "column_datatype_name",
    "date_format",
];

/// Settings of the client, from the connector's configuration.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub base_url: Url,
    pub connect_timeout: Duration,
    /// Allowed without a byte from the backend: waiting for the headers, and between parts of the body.
    pub read_timeout: Duration,
    /// Allowed for a whole request, body included.
    pub total_timeout: Duration,
    pub max_retries: usize,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    pub max_response_bytes: usize,
    /// What is kept of an answer while it is parsed.
    pub result_limits: ResultLimits,
    /// How long a failed login, or a token refused right after its login, is remembered.
    pub login_backoff: Duration,
    pub pool_max_idle_per_host: usize,
    pub pool_idle_timeout: Duration,
    pub readiness_check: ReadinessCheck,
}

impl ClientSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            base_url: config.server_url.clone(),
            connect_timeout: config.connect_timeout,
            read_timeout: config.request_timeout,
            total_timeout: config.total_timeout,
            max_retries: config.max_retries,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(3),
            max_response_bytes: config.max_backend_response_bytes,
            result_limits: ResultLimits {
                max_rows: config.max_result_rows,
                max_bytes: config.max_result_bytes,
            },
            login_backoff: config.login_backoff,
            pool_max_idle_per_host: config.backend_pool_max_idle,
            pool_idle_timeout: config.backend_pool_idle_timeout,
            readiness_check: config.readiness_check,
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            read: self.read_timeout,
            total: self.total_timeout,
        }
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.retry_min_delay)
            .with_max_delay(self.retry_max_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
    }
}

pub struct LumenoreBackend {
    http: reqwest::Client,
    settings: ClientSettings,
    tokens: Tokens,
    metrics: Metrics,
}

/// One backend HTTP request.
#[derive(Debug)]
struct Operation {
    method: Method,
    path: String,
    body: Option<Value>,
    expect: Expect,
    /// Removed from any backend message passed on.
    redactions: Redactions,
}

/// What one attempt produced, before the 401 handling.
enum Attempt {
    Done(Answer),
    /// A 401, with the backend's message.
    Unauthorized(Option<String>),
}

impl LumenoreBackend {
    pub fn new(settings: ClientSettings, credentials: Credentials, metrics: Metrics) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .timeout(settings.total_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .pool_idle_timeout(settings.pool_idle_timeout)
            .user_agent(concat!("lumenore-connector/", env!("CARGO_PKG_VERSION")))
            // The login cookie is read explicitly; no cookie jar keeps it beyond the token state.
            .build()
            .map_err(|_| "could not build the HTTP client (TLS set-up failed)".to_string())?;
        let mut base_url = settings.base_url.clone();
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        let login_url = base_url
            .join(login::LOGIN_PATH)
            .map_err(|_| "--server-url (SERVER_URL) cannot be joined with the login path".to_string())?;
        let tokens = Tokens::new(
            credentials,
            LoginRequest {
                http: http.clone(),
                url: login_url,
                timeouts: settings.timeouts(),
                retry: settings.backoff(),
                metrics: metrics.clone(),
            },
            settings.login_backoff,
        );
        Ok(Self {
            http,
            settings: ClientSettings { base_url, ..settings },
            tokens,
            metrics,
        })
    }

    fn url(&self, path: &str) -> Result<Url, BackendError> {
        self.settings
            .base_url
            .join(path)
            .map_err(|_| BackendError::Unreachable)
    }

    fn operation(call: &ToolCall) -> Operation {
        let query_body =
            |user_query: &str, schema_id: i64| Some(json!({"userQuery": user_query, "schemaId": schema_id}));
        let redactions = |user_query: Option<&str>, schema_id: Option<i64>| {
            let mut redactions = Redactions::new();
            if let Some(query) = user_query {
                redactions = redactions.with(query);
            }
            if let Some(id) = schema_id {
                redactions = redactions.with(id.to_string());
            }
            redactions
        };
        match call {
            ToolCall::DatasetMetadata => Operation {
                method: Method::GET,
                path: "api/askme-manager/get-domain".into(),
                body: None,
                expect: Expect::Json,
                redactions: Redactions::new(),
            },
            ToolCall::MetadataInfo { schema_id } => Operation {
                method: Method::POST,
                path: format!("api/askme-manager/metadata/get/{schema_id}"),
                body: Some(json!({"data": {"columns": METADATA_COLUMNS, "domainId": schema_id}})),
                expect: Expect::Json,
                redactions: redactions(None, Some(*schema_id)),
            },
            ToolCall::NlqToData {
                user_query,
                schema_id,
            } => Operation {
                method: Method::POST,
                path: "api/ai-engine/mcp/nlq-to-data".into(),
                body: query_body(user_query, *schema_id),
                expect: Expect::Stream,
                redactions: redactions(Some(user_query), Some(*schema_id)),
            },
            ToolCall::Analysis {
                kind,
                user_query,
                schema_id,
            } => Operation {
                method: Method::POST,
                path: format!("api/ai-engine/mcp/get-{}-data", kind.as_str()),
                body: query_body(user_query, *schema_id),
                expect: Expect::Json,
                redactions: redactions(Some(user_query), Some(*schema_id)),
            },
        }
    }

    /// Answers one call. Cancel it by dropping the future.
    pub async fn call(
        &self,
        call: ToolCall,
        progress: Option<ProgressSender>,
    ) -> Result<Answer, BackendError> {
        let operation = Self::operation(&call);
        let result = self.authorized(&operation, progress.as_ref()).await;
        if let Err(error) = &result {
            self.metrics
                .backend_errors
                .get_or_create(&ClassLabels { class: error.class() })
                .inc();
        }
        result
    }

    /// Checks that the backend accepts the credentials. `full`: an authenticated `get-domain` (logging in
    /// first when needed). `login`: only that a token can be had — no request while one is held, a login
    /// when none is. The reason never carries the backend's own message (it is logged and shown on /readyz).
    pub async fn check_readiness(&self) -> Readiness {
        let result = match self.settings.readiness_check {
            ReadinessCheck::Full => self
                .authorized(&Self::operation(&ToolCall::DatasetMetadata), None)
                .await
                .map(|_| ()),
            ReadinessCheck::Login => {
                if self.tokens.holds_token() {
                    Ok(())
                } else {
                    self.tokens.current().await.map(|_| ())
                }
            }
        };
        match result {
            Ok(()) => Readiness::Ready,
            Err(error) => Readiness::NotReady(error.summary()),
        }
    }

    /// Runs the operation with a token; on 401, logs in again once (if the credentials allow) and retries.
    async fn authorized(
        &self,
        operation: &Operation,
        progress: Option<&ProgressSender>,
    ) -> Result<Answer, BackendError> {
        let issued = self.tokens.current().await?;
        let detail = match self.send_with_retries(operation, &issued, progress).await? {
            Attempt::Done(answer) => return Ok(answer),
            Attempt::Unauthorized(detail) => detail,
        };
        if !self.tokens.credentials().can_log_in() {
            return Err(BackendError::CredentialsRejected(detail));
        }
        let issued = match self.tokens.renew(&issued).await? {
            Ok(issued) => issued,
            Err(login::RecentlyRejected(backoff)) => {
                return Err(BackendError::TokenRejectedRecently { backoff, detail });
            }
        };
        match self.send_with_retries(operation, &issued, progress).await? {
            Attempt::Done(answer) => Ok(answer),
            Attempt::Unauthorized(detail) => Err(BackendError::CredentialsRejected(detail)),
        }
    }

    async fn send_with_retries(
        &self,
        operation: &Operation,
        issued: &Issued,
        progress: Option<&ProgressSender>,
    ) -> Result<Attempt, BackendError> {
        let url = self.url(&operation.path)?;
        let authorization = issued.authorization.expose_secret();
        let redactions = operation
            .redactions
            .clone()
            .with(authorization.strip_prefix("Bearer ").unwrap_or(authorization));
        let limits = BodyLimits {
            max_body_bytes: self.settings.max_response_bytes,
            result: self.settings.result_limits,
        };
        let attempt = || async {
            let started = std::time::Instant::now();
            let mut request = crate::otel::inject(self.http.request(operation.method.clone(), url.clone())) // otel
                .header(header::ACCEPT, "application/json")
                .header(header::AUTHORIZATION, authorization);
            if let Some(body) = &operation.body {
                request = request.json(body);
            }
            let timeouts = self.settings.timeouts();
            let response = request
                .send()
                .await
                .map_err(|error| failure::classify_transport(&error, timeouts, started))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                return Ok(Attempt::Unauthorized(error_detail(response, &redactions).await));
            }
            self.tokens.accepted(issued);
            if !status.is_success() {
                return Err(failure::status_error(
                    status,
                    error_detail(response, &redactions).await,
                ));
            }
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            if response
                .content_length()
                .is_some_and(|length| length > limits.max_body_bytes as u64)
            {
                return Err(AttemptError::fatal(BackendError::TooLarge(limits.max_body_bytes)));
            }
            let stream = response
                .bytes_stream()
                .map_err(move |error| failure::classify_transport(&error, timeouts, started));
            let progress = (operation.expect == Expect::Stream)
                .then(|| progress.cloned())
                .flatten();
            let chunks = Chunks::new(stream, limits.max_body_bytes, progress);
            body::read_answer(chunks, content_type, operation.expect, limits)
                .await
                .map(Attempt::Done)
        };
        // otel: a CLIENT span around the call and its retries.
        crate::otel::backend_call(operation.method.as_str(), &url, &operation.path, async {
            attempt
                .retry(self.settings.backoff())
                .when(|error: &AttemptError| error.retryable)
                .await
                .map_err(|failure| failure.error)
        })
        .await
    }
}

/// The backend's message in an error answer (read up to a small bound; a broken body gives none).
async fn error_detail(response: reqwest::Response, redactions: &Redactions) -> Option<String> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Ok(Some(chunk)) = stream.try_next().await {
        let room = failure::MAX_ERROR_BODY_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= failure::MAX_ERROR_BODY_BYTES {
            break;
        }
    }
    failure::backend_message(&body, redactions)
}

/// Shared handle, so the readiness loop and the MCP handler use one token state.
pub type SharedLumenore = Arc<LumenoreBackend>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_match_the_original_server() {
        let op = LumenoreBackend::operation(&ToolCall::MetadataInfo { schema_id: 42 });
        assert_eq!(
            (op.method, op.path.as_str()),
            (Method::POST, "api/askme-manager/metadata/get/42")
        );
        assert_eq!(
            op.body.unwrap(),
            json!({"data": {"columns": ["description", "column_name", "column_alias", "column_type", "unit",
                "column_datatype_name", "date_format"], "domainId": 42}})
        );
        let op = LumenoreBackend::operation(&ToolCall::Analysis {
            kind: crate::tools::AnalysisKind::Pareto,
            user_query: "q".into(),
            schema_id: 1,
        });
        assert_eq!(op.path, "api/ai-engine/mcp/get-pareto-data");
        assert_eq!(op.expect, Expect::Json);
        let op = LumenoreBackend::operation(&ToolCall::NlqToData {
            user_query: "q".into(),
            schema_id: 1,
        });
        assert_eq!(op.path, "api/ai-engine/mcp/nlq-to-data");
        assert_eq!(op.body.unwrap(), json!({"userQuery": "q", "schemaId": 1}));
        assert_eq!(op.expect, Expect::Stream);
    }
}
