//! The HTTP gate in front of `/mcp`, in two steps around the body guard (`crate::http::body`):
//! [`authenticate`] reads the headers only, before any byte of the body is read, so an unauthenticated
//! client cannot make the server hold its body; [`authorize`] runs on the parsed message and checks that
//! the caller may call the requested tool, applies the rate limits and the backend concurrency cap. Both
//! write an audit event for every request they refuse.
//!
//! Answers:
//! - 401 with `WWW-Authenticate: Bearer …` (naming the protected-resource metadata in OAuth mode, with
//!   `error="invalid_token"` when a credential was given but is not valid);
//! - 403 with `WWW-Authenticate: Bearer error="insufficient_scope", scope="…"` for a `tools/call` of a
//!   tool the caller may not use (OAuth and API keys alike);
//! - 429 with `Retry-After` over a rate limit or the concurrency cap;
//! - 503 with `Retry-After` when the rate-limit store fails and its failure policy is `closed`;
//! - 503 with `Retry-After` when the token issuer's keys cannot be fetched.
//!
//! Limits apply to `tools/call` only; `initialize`, `tools/list`, `ping` and notifications are cheap.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{
    AuthFailure, Caller, CallerKind,
    api_keys::ApiKeyStore,
    limits::{LimitHit, LimitSettings, Limits, StoreHealth, StoreSettings},
    oauth::{OAuthSettings, OAuthValidator},
    scopes,
};
pub use crate::http::jsonrpc::RpcPeek;
use crate::{
    metrics::{LimitLabels, Metrics, ReasonLabels},
    telemetry::{self, AuditEvent, CorrelationId},
    tools::ToolName,
};

/// How often the rate-limit shares file is re-read.
const SHARES_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// How callers prove who they are.
pub enum Authenticator {
    None,
    ApiKeys(Arc<ApiKeyStore>),
    OAuth(Arc<OAuthValidator>),
}

/// Caller authentication settings, from the configuration.
#[derive(Clone, Debug)]
pub enum AuthSettings {
    None,
    ApiKeys {
        file: PathBuf,
        reload_interval: Duration,
    },
    OAuth {
        settings: Box<OAuthSettings>,
        /// This connector's public URL (the protected resource).
        public_url: Box<Url>,
    },
}

/// The gate's shared state.
pub struct Gate {
    authenticator: Authenticator,
    /// Mode none: the one caller, made once.
    anonymous: Caller,
    limits: Limits,
    metrics: Metrics,
    /// RFC 9728 metadata URL named in 401 challenges (OAuth mode).
    resource_metadata_url: Option<String>,
    /// The protected-resource metadata document (OAuth mode).
    resource_metadata: Option<serde_json::Value>,
    /// Requests refused for want of a valid credential: a sampled log line, not one each.
    unauthenticated_log: crate::http::refusals::Sampled,
}

impl Gate {
    /// Builds the gate and starts its background tasks (key file watcher, JWKS prefetch, forgetting idle
    /// rate-limit buckets), which stop with `stop`. Needs a Tokio runtime.
    pub fn start(
        auth: AuthSettings,
        limits: LimitSettings,
        store: Option<StoreSettings>,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> Result<Arc<Gate>, String> {
        let mut resource_metadata_url = None;
        let mut resource_metadata = None;
        let authenticator = match auth {
            AuthSettings::None => Authenticator::None,
            AuthSettings::ApiKeys {
                file,
                reload_interval,
            } => {
                let store = Arc::new(ApiKeyStore::load(&file, metrics.clone())?);
                store.spawn_watcher(reload_interval, stop.child_token());
                Authenticator::ApiKeys(store)
            }
            AuthSettings::OAuth { settings, public_url } => {
                resource_metadata_url = Some(metadata_url(&public_url));
                resource_metadata = Some(json!({
                    "resource": public_url.as_str(),
                    "authorization_servers": [settings.issuer],
                    "scopes_supported": scopes::SUPPORTED,
                    "bearer_methods_supported": ["header"],
                    "resource_name": "Lumenore analytics (MCP)",
                }));
                let validator = Arc::new(OAuthValidator::new(*settings, metrics.clone())?);
                let prefetch = validator.clone();
                let prefetch_stop = stop.child_token();
                tokio::spawn(async move {
                    tokio::select! {
                        () = prefetch.prefetch() => {}
                        () = prefetch_stop.cancelled() => {}
                    }
                });
                Authenticator::OAuth(validator)
            }
        };
        let sweep_callers = limits.caller_per_minute.is_some();
        let shares_file = limits.shares_file.clone();
        let gate = Arc::new(Gate {
            authenticator,
            anonymous: Caller::anonymous(),
            limits: Limits::new(limits, store.as_ref(), metrics.clone())?,
            metrics,
            resource_metadata_url,
            resource_metadata,
            unauthenticated_log: Default::default(),
        });
        if let Some(path) = shares_file {
            let watcher = gate.clone();
            let stop = stop.child_token();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(SHARES_RELOAD_INTERVAL) => watcher.limits.read_shares_file(&path),
                        () = stop.cancelled() => return,
                    }
                }
            });
        }
        if sweep_callers {
            let sweeper = gate.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(60)) => sweeper.limits.forget_idle_callers(),
                        () = stop.cancelled() => return,
                    }
                }
            });
        }
        Ok(gate)
    }

    /// The rate-limit store's state, when there is a store (`/readyz` notes it).
    pub fn store_health(&self) -> Option<Arc<StoreHealth>> {
        self.limits.store_health()
    }

    pub fn resource_metadata(&self) -> Option<&serde_json::Value> {
        self.resource_metadata.as_ref()
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthFailure> {
        match &self.authenticator {
            Authenticator::None => Ok(self.anonymous.clone()),
            Authenticator::ApiKeys(store) => {
                let key = bearer(headers)
                    .or_else(|| {
                        headers
                            .get("x-api-key")
                            .and_then(|v| v.to_str().ok())
                            .map(str::trim)
                    })
                    .filter(|key| !key.is_empty())
                    .ok_or(AuthFailure::MissingCredential)?;
                store.authenticate(key)
            }
            Authenticator::OAuth(validator) => {
                let token = bearer(headers)
                    .filter(|token| !token.is_empty())
                    .ok_or(AuthFailure::MissingCredential)?;
                validator.authenticate(token).await
            }
        }
    }

    fn unauthenticated(&self, failure: AuthFailure) -> Response {
        if failure == AuthFailure::IssuerUnavailable {
            let mut response = rpc_error(StatusCode::SERVICE_UNAVAILABLE, -32001, failure.description());
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return response;
        }
        let mut challenge = String::from("Bearer");
        let mut params: Vec<String> = Vec::new();
        match &self.resource_metadata_url {
            Some(url) => {
                params.push(format!("resource_metadata=\"{url}\""));
                params.push(format!("scope=\"{}\"", scopes::SCOPE_READ));
            }
            None => params.push("realm=\"lumenore-connector\"".into()),
        }
        if failure.credential_presented() {
            params.push("error=\"invalid_token\"".into());
            params.push(format!("error_description=\"{}\"", failure.description()));
        }
        challenge.push(' ');
        challenge.push_str(&params.join(", "));
        let mut response = rpc_error(StatusCode::UNAUTHORIZED, -32001, failure.description());
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }

    fn forbidden(&self, tool: ToolName) -> Response {
        let scope = scopes::scope_for(tool);
        let message = format!("this caller may not call the tool {}", tool.as_str());
        let mut response = rpc_error(StatusCode::FORBIDDEN, -32003, &message);
        let mut challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
        if let Some(url) = &self.resource_metadata_url {
            challenge.push_str(&format!(", resource_metadata=\"{url}\""));
        }
        challenge.push_str(&format!(", error_description=\"{message}\""));
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// `{origin}/.well-known/oauth-protected-resource{path}` (RFC 9728 §3.1) for a resource URL.
pub fn metadata_url(resource: &Url) -> String {
    let path = resource.path().trim_end_matches('/');
    format!(
        "{}/.well-known/oauth-protected-resource{path}",
        resource.origin().ascii_serialization()
    )
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    crate::http::jsonrpc::error_response(status, code, message)
}

/// One audit event for a request refused at the door. Metadata only.
fn audit_refusal(
    request: &Request,
    peek: Option<RpcPeek>,
    caller: Option<&Caller>,
    outcome: &'static str,
    reason: &'static str,
    status: StatusCode,
    started: Instant,
) {
    let correlation_id = request
        .extensions()
        .get::<CorrelationId>()
        .map_or("-", |id| id.0.as_str());
    telemetry::audit(&AuditEvent {
        correlation_id,
        caller: caller.map_or("-", |c| &*c.id),
        method: peek.map_or("-", |p| p.method),
        tool: peek.and_then(|p| p.tool).map_or("-", ToolName::as_str),
        outcome,
        reason,
        status: status.as_u16(),
        latency: started.elapsed(),
        response_bytes: 0,
    });
}

/// First step, on the headers only: authenticates the caller (401, or 503 when the token issuer cannot be
/// reached), removes its credential from the request and leaves the [`Caller`] in the extensions.
pub async fn authenticate(State(gate): State<Arc<Gate>>, mut request: Request, next: Next) -> Response {
    let caller = match gate.authenticate(request.headers()).await {
        Ok(caller) => caller,
        Err(failure) => {
            gate.metrics
                .auth_failures
                .get_or_create(&ReasonLabels {
                    reason: failure.reason(),
                })
                .inc();
            let response = gate.unauthenticated(failure);
            // Counted (the metric above) and logged as a sampled line: a flood of them floods no log.
            crate::http::refusals::unauthenticated(
                &gate.unauthenticated_log,
                failure.reason(),
                response.status().as_u16(),
            );
            return response;
        }
    };
    // The body guard counts its permits per authenticated caller (mode none: per client address).
    if caller.kind != CallerKind::Anonymous {
        request
            .extensions_mut()
            .insert(crate::http::body::ShareOwner(caller.id.clone()));
    }
    // The caller's credential goes no further: neither the MCP SDK nor the tools see it.
    request.headers_mut().remove(header::AUTHORIZATION);
    request.headers_mut().remove("x-api-key");
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Second step, on the parsed message: a `tools/call` of a tool the caller may not use gets 403; a
/// `tools/call` or `resources/read` over a rate limit or the concurrency cap 429.
pub async fn authorize(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        // The router always runs `authenticate` first; without it nobody is let through.
        return gate.unauthenticated(AuthFailure::MissingCredential);
    };
    let peek = request.extensions().get::<RpcPeek>().copied();
    let mut permit = None;
    if let Some(RpcPeek { tool: Some(tool), .. }) = peek.filter(RpcPeek::is_tool_call)
        && !caller.may_call(tool)
    {
        gate.metrics
            .auth_failures
            .get_or_create(&ReasonLabels {
                reason: "insufficient_scope",
            })
            .inc();
        let response = gate.forbidden(tool);
        audit_refusal(
            &request,
            peek,
            Some(&caller),
            "forbidden",
            "insufficient_scope",
            response.status(),
            started,
        );
        return response;
    }
    if peek.is_some_and(|peek| peek.costs_work()) {
        match gate.limits.admit(&caller.id).await {
            Ok(held) => permit = held,
            Err(hit) => {
                gate.metrics
                    .rate_limited
                    .get_or_create(&LimitLabels { limit: hit.label() })
                    .inc();
                let response = too_many(hit);
                audit_refusal(
                    &request,
                    peek,
                    Some(&caller),
                    "rate_limited",
                    hit.label(),
                    response.status(),
                    started,
                );
                return response;
            }
        }
    }
    let response = next.run(request).await;
    match permit {
        // A JSON answer is complete: the call is over. A streamed (SSE) answer still runs the call, so the
        // permit goes with the body and is released when the stream ends or the client goes away.
        Some(permit) if is_event_stream(&response) => crate::http::tracked::hold_until_sent(response, permit),
        _ => response,
    }
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

fn too_many(hit: LimitHit) -> Response {
    let mut response = rpc_error(hit.status(), -32029, hit.message());
    if let Ok(value) = HeaderValue::from_str(&hit.retry_after_seconds().to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `GET /.well-known/oauth-protected-resource[/…]`: the RFC 9728 metadata (OAuth mode), else 404.
pub async fn protected_resource_metadata(State(gate): State<Arc<Gate>>) -> Response {
    match gate.resource_metadata() {
        Some(document) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"))],
            Json(document.clone()),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no OAuth protected-resource metadata: auth mode is not oauth",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_inserts_the_well_known_segment_before_the_path() {
        let url = Url::parse("https://mcp.example.com/mcp").unwrap();
        assert_eq!(
            metadata_url(&url),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        let url = Url::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            metadata_url(&url),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn peek_names_known_methods_and_tools_only() {
        let call =
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "nlq_to_data"}});
        assert_eq!(
            RpcPeek::of(call.as_object().unwrap()),
            RpcPeek {
                method: "tools/call",
                tool: Some(ToolName::NlqToData)
            }
        );
        let unknown =
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "secret question"}});
        assert_eq!(RpcPeek::of(unknown.as_object().unwrap()).tool, None);
        let odd = json!({"jsonrpc": "2.0", "id": 1, "method": "what is revenue"});
        assert_eq!(RpcPeek::of(odd.as_object().unwrap()).method, "other");
        let mut headers = HeaderMap::new();
        assert_eq!(RpcPeek::of_headers(&headers), None);
        headers.insert("mcp-method", HeaderValue::from_static("tools/call"));
        headers.insert("mcp-name", HeaderValue::from_static("get_trend_data"));
        assert_eq!(
            RpcPeek::of_headers(&headers),
            Some(RpcPeek {
                method: "tools/call",
                tool: Some(ToolName::Analysis(crate::tools::AnalysisKind::Trend))
            })
        );
    }
}
