//! Client of a tenant's Lumenore server.
//!
//! - Login: `POST /api/secure/client/user-login` with `{"data": {"clientId", "secret"}}`; the token comes back
//!   as the `access_token` cookie and is sent as `Authorization: Bearer`. A static token skips the login.
//! - One login is shared by all concurrent calls; a 401 triggers one re-login and one retry.
//! - Connection errors and 502/503/504 are retried a bounded number of times with jittered backoff.
//! - Timeouts bound connecting and each whole request. Dropping a call's future (the MCP client went away)
//!   aborts its HTTP request.
//!
//! Nothing here logs a URL (schema ids are path segments), a body, a header or a reqwest error text.

use std::{sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use url::Url;

use super::{BackendCall, BackendError, ProgressSender, Readiness};
use crate::{
    config::Credentials,
    metrics::{ClassLabels, LoginLabels, Metrics},
};

const LOGIN_PATH: &str = "api/secure/client/user-login";
const TOKEN_COOKIE: &str = "access_token";

/// Settings of the client, from the connector's configuration.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub base_url: Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_retries: usize,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    pub max_response_bytes: usize,
}

impl ClientSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            base_url: config.server_url.clone(),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            max_retries: config.max_retries,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(3),
            max_response_bytes: config.max_backend_response_bytes,
        }
    }
}

/// The current token and how many times it was replaced, so that concurrent 401s trigger one re-login.
struct TokenState {
    token: Option<SecretString>,
    generation: u64,
}

pub struct LumenoreBackend {
    http: reqwest::Client,
    settings: ClientSettings,
    credentials: Credentials,
    token: Mutex<TokenState>,
    metrics: Metrics,
}

/// One backend HTTP request.
struct Operation {
    method: Method,
    path: String,
    body: Option<Value>,
    /// Read the body as a stream, reporting progress.
    streamed: bool,
}

/// What one attempt produced, before the 401 handling.
enum Attempt {
    Done(Value),
    Unauthorized,
}

/// A failure of one HTTP attempt, with whether it is worth retrying.
struct AttemptError {
    error: BackendError,
    retryable: bool,
}

impl LumenoreBackend {
    pub fn new(settings: ClientSettings, credentials: Credentials, metrics: Metrics) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!("lumenore-connector/", env!("CARGO_PKG_VERSION")))
            // The login cookie is read explicitly; no cookie jar keeps it beyond the token state.
            .build()
            .map_err(|_| "could not build the HTTP client (TLS set-up failed)".to_string())?;
        let mut base_url = settings.base_url.clone();
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        Ok(Self {
            http,
            settings: ClientSettings { base_url, ..settings },
            credentials,
            token: Mutex::new(TokenState {
                token: None,
                generation: 0,
            }),
            metrics,
        })
    }

    fn url(&self, path: &str) -> Result<Url, BackendError> {
        self.settings
            .base_url
            .join(path)
            .map_err(|_| BackendError::Unreachable)
    }

    fn operation(call: &BackendCall) -> Operation {
        match call {
            BackendCall::DatasetMetadata => Operation {
                method: Method::GET,
                path: "api/askme-manager/get-domain".into(),
                body: None,
                streamed: false,
            },
            BackendCall::MetadataInfo { schema_id } => Operation {
                method: Method::POST,
                path: format!("api/askme-manager/metadata/get/{schema_id}"),
                body: Some(json!({"columns": [], "domainId": schema_id})),
                streamed: false,
            },
            BackendCall::NlqToData {
                user_query,
                schema_id,
            } => Operation {
                method: Method::POST,
                path: "api/ai-engine/mcp/nlq-to-data".into(),
                body: Some(json!({"userQuery": user_query, "schemaId": schema_id})),
                streamed: true,
            },
            BackendCall::Analysis {
                kind,
                user_query,
                schema_id,
            } => Operation {
                method: Method::POST,
                path: format!("api/ai-engine/mcp/get-{}-data", kind.endpoint_kind()),
                body: Some(json!({"userQuery": user_query, "schemaId": schema_id})),
                streamed: false,
            },
        }
    }

    /// Answers one call. Cancel it by dropping the future.
    pub async fn call(
        &self,
        call: BackendCall,
        progress: Option<ProgressSender>,
    ) -> Result<Value, BackendError> {
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

    /// Checks that the backend is reachable and accepts the credentials, with an authenticated metadata
    /// request (logging in first when needed).
    pub async fn check_readiness(&self) -> Readiness {
        match self
            .authorized(&Self::operation(&BackendCall::DatasetMetadata), None)
            .await
        {
            Ok(_) => Readiness::Ready,
            Err(error) => Readiness::NotReady(error.to_string()),
        }
    }

    /// Runs the operation with a token; on 401, logs in again once (if the credentials allow) and retries.
    async fn authorized(
        &self,
        operation: &Operation,
        progress: Option<&ProgressSender>,
    ) -> Result<Value, BackendError> {
        let (token, generation) = self.current_token().await?;
        match self.send_with_retries(operation, &token, progress).await? {
            Attempt::Done(value) => Ok(value),
            Attempt::Unauthorized => {
                if !matches!(self.credentials, Credentials::ClientCredentials { .. }) {
                    return Err(BackendError::CredentialsRejected);
                }
                let (token, _) = self.renew_token(generation).await?;
                match self.send_with_retries(operation, &token, progress).await? {
                    Attempt::Done(value) => Ok(value),
                    Attempt::Unauthorized => Err(BackendError::CredentialsRejected),
                }
            }
        }
    }

    /// The shared token, logging in when there is none. Holding the lock during the login makes concurrent
    /// first calls wait for one login instead of each starting their own.
    async fn current_token(&self) -> Result<(SecretString, u64), BackendError> {
        let mut state = self.token.lock().await;
        if let Some(token) = &state.token {
            return Ok((token.clone(), state.generation));
        }
        let token = match &self.credentials {
            Credentials::StaticToken(token) => token.clone(),
            Credentials::ClientCredentials { client_id, secret } => self.login(client_id, secret).await?,
            Credentials::Missing => return Err(BackendError::NotConfigured),
        };
        state.token = Some(token.clone());
        state.generation += 1;
        Ok((token, state.generation))
    }

    /// Replaces a token the backend rejected. If another call already replaced it (the generation moved
    /// on), that new token is used instead of logging in again.
    async fn renew_token(&self, rejected_generation: u64) -> Result<(SecretString, u64), BackendError> {
        let mut state = self.token.lock().await;
        if state.generation != rejected_generation
            && let Some(token) = &state.token
        {
            return Ok((token.clone(), state.generation));
        }
        state.token = None;
        let Credentials::ClientCredentials { client_id, secret } = &self.credentials else {
            return Err(BackendError::CredentialsRejected);
        };
        let token = self.login(client_id, secret).await?;
        state.token = Some(token.clone());
        state.generation += 1;
        Ok((token, state.generation))
    }

    async fn login(
        &self,
        client_id: &SecretString,
        secret: &SecretString,
    ) -> Result<SecretString, BackendError> {
        let url = self.url(LOGIN_PATH)?;
        let body = json!({"data": {"clientId": client_id.expose_secret(), "secret": secret.expose_secret()}});
        let attempt = || async {
            let response = crate::otel::inject(self.http.post(url.clone())) // otel: traceparent
                .json(&body)
                .send()
                .await
                .map_err(|error| self.classify_transport(&error))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(AttemptError {
                    error: BackendError::CredentialsRejected,
                    retryable: false,
                });
            }
            if !status.is_success() {
                return Err(status_error(status));
            }
            response
                .cookies()
                .find(|cookie| cookie.name() == TOKEN_COOKIE && !cookie.value().is_empty())
                .map(|cookie| SecretString::from(cookie.value().to_owned()))
                .ok_or(AttemptError {
                    error: BackendError::LoginWithoutToken,
                    retryable: false,
                })
        };
        // otel: a CLIENT span around the login and its retries.
        let result = crate::otel::backend_call("POST", &url, LOGIN_PATH, async {
            attempt
                .retry(self.backoff())
                .when(|error: &AttemptError| error.retryable)
                .await
                .map_err(|failure| failure.error)
        })
        .await;
        let outcome = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .backend_logins
            .get_or_create(&LoginLabels { outcome })
            .inc();
        result
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_min_delay)
            .with_max_delay(self.settings.retry_max_delay)
            .with_max_times(self.settings.max_retries)
            .with_jitter()
    }

    async fn send_with_retries(
        &self,
        operation: &Operation,
        token: &SecretString,
        progress: Option<&ProgressSender>,
    ) -> Result<Attempt, BackendError> {
        let url = self.url(&operation.path)?;
        let attempt = || async {
            let mut request = crate::otel::inject(self.http.request(operation.method.clone(), url.clone())) // otel
                .bearer_auth(token.expose_secret());
            if let Some(body) = &operation.body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|error| self.classify_transport(&error))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                return Ok(Attempt::Unauthorized);
            }
            if !status.is_success() {
                return Err(status_error(status));
            }
            let bytes = self
                .read_body(response, operation.streamed.then_some(progress).flatten())
                .await?;
            parse_body(&bytes)
                .map(Attempt::Done)
                .map_err(|error| AttemptError {
                    error,
                    retryable: false,
                })
        };
        // otel: a CLIENT span around the call and its retries.
        crate::otel::backend_call(operation.method.as_str(), &url, &operation.path, async {
            attempt
                .retry(self.backoff())
                .when(|error: &AttemptError| error.retryable)
                .await
                .map_err(|failure| failure.error)
        })
        .await
    }

    async fn read_body(
        &self,
        response: reqwest::Response,
        progress: Option<&ProgressSender>,
    ) -> Result<Vec<u8>, AttemptError> {
        let limit = self.settings.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|length| length as usize > limit)
        {
            return Err(AttemptError {
                error: BackendError::TooLarge(limit),
                retryable: false,
            });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| self.classify_transport(&error))?;
            if body.len() + chunk.len() > limit {
                return Err(AttemptError {
                    error: BackendError::TooLarge(limit),
                    retryable: false,
                });
            }
            body.extend_from_slice(&chunk);
            if let Some(progress) = progress {
                // The receiver may be gone when the caller did not ask for progress; that is fine.
                let _ = progress.send(body.len() as u64);
            }
        }
        Ok(body)
    }

    fn classify_transport(&self, error: &reqwest::Error) -> AttemptError {
        if error.is_timeout() {
            AttemptError {
                error: BackendError::Timeout(self.settings.request_timeout),
                retryable: false,
            }
        } else if error.is_connect() || error.is_request() || error.is_body() {
            // Refused or reset connections: the backend is restarting or a proxy dropped us. The analytics
            // endpoints only read, so sending the same request again is safe.
            AttemptError {
                error: BackendError::Unreachable,
                retryable: true,
            }
        } else if error.is_decode() {
            AttemptError {
                error: BackendError::Malformed,
                retryable: false,
            }
        } else {
            AttemptError {
                error: BackendError::Unreachable,
                retryable: false,
            }
        }
    }
}

fn status_error(status: StatusCode) -> AttemptError {
    let retryable = matches!(status.as_u16(), 502..=504);
    AttemptError {
        error: BackendError::Status(status.as_u16()),
        retryable,
    }
}

/// Parses a backend answer: one JSON document, or a stream of JSON lines (optionally as server-sent events
/// `data: {…}`), which becomes an array of the documents in order.
pub fn parse_body(bytes: &[u8]) -> Result<Value, BackendError> {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return Ok(value);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| BackendError::Malformed)?;
    let mut documents = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let payload = line.strip_prefix("data:").map(str::trim).unwrap_or(line);
        if payload.is_empty()
            || line.starts_with(':')
            || line.starts_with("event:")
            || line.starts_with("id:")
        {
            continue;
        }
        if payload == "[DONE]" {
            break;
        }
        documents.push(serde_json::from_str::<Value>(payload).map_err(|_| BackendError::Malformed)?);
    }
    if documents.is_empty() {
        return Err(BackendError::Malformed);
    }
    Ok(Value::Array(documents))
}

/// Shared handle, so the readiness loop and the MCP handler use one token state.
pub type SharedLumenore = Arc<LumenoreBackend>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_document_json_lines_and_sse() {
        assert_eq!(parse_body(br#"{"a":1}"#).unwrap(), json!({"a": 1}));
        assert_eq!(
            parse_body(b"{\"a\":1}\n{\"b\":2}\n").unwrap(),
            json!([{"a": 1}, {"b": 2}])
        );
        assert_eq!(
            parse_body(b"event: chunk\ndata: {\"a\":1}\n\n: keep-alive\ndata: {\"b\":2}\n\ndata: [DONE]\n")
                .unwrap(),
            json!([{"a": 1}, {"b": 2}])
        );
        assert!(matches!(
            parse_body(b"<html>oops</html>"),
            Err(BackendError::Malformed)
        ));
        assert!(matches!(parse_body(b""), Err(BackendError::Malformed)));
    }

    #[test]
    fn operations_match_the_lumenore_api() {
        let op = LumenoreBackend::operation(&BackendCall::MetadataInfo { schema_id: 42 });
        assert_eq!(
            (op.method, op.path.as_str()),
            (Method::POST, "api/askme-manager/metadata/get/42")
        );
        assert_eq!(op.body.unwrap(), json!({"columns": [], "domainId": 42}));
        let op = LumenoreBackend::operation(&BackendCall::Analysis {
            kind: crate::tools::AnalysisKind::Pareto,
            user_query: "q".into(),
            schema_id: 1,
        });
        assert_eq!(op.path, "api/ai-engine/mcp/get-pareto-data");
        assert!(!op.streamed);
        let op = LumenoreBackend::operation(&BackendCall::NlqToData {
            user_query: "q".into(),
            schema_id: 1,
        });
        assert_eq!(op.path, "api/ai-engine/mcp/nlq-to-data");
        assert!(op.streamed);
    }
}
