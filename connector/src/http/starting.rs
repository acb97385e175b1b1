//! What the port answers while the backend is still loading (the embedded catalog takes seconds): the
//! process binds its port first, so a kubelet's liveness probe and a client see a live server at once.
//!
//! - `GET /healthz`: 200 (the process is alive);
//! - `GET /readyz`: 503 with the reason [`STARTING`];
//! - anything else, `/mcp` included: 503 with `Retry-After: 1` and a JSON-RPC error.
//!
//! The accept loop is the application's own (`app::serve_starting`): once the backend is loaded, the same
//! connections reach the application. HTTP/1 answers here still close their connection, so a client that
//! retries after the 503 starts afresh.

use axum::{
    Json, Router,
    extract::Request,
    http::{HeaderValue, StatusCode, Version, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use super::{host::AllowedHosts, jsonrpc};

/// The readiness reason while the backend loads. Clients that wait for a started server (tests, scripts)
/// poll `/readyz` until it is no longer this.
pub const STARTING: &str = "starting: loading the backend";

/// The router served until the backend is loaded. `allowed_hosts` as for the operational routes.
pub fn router(allowed_hosts: &[String]) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"status": "not ready", "reason": STARTING})),
                )
            }),
        )
        .fallback(|| async {
            jsonrpc::retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                -32000,
                "the connector is starting: retry shortly",
                1,
            )
        })
        .layer(middleware::from_fn_with_state(
            AllowedHosts::new(allowed_hosts),
            super::host::check,
        ))
        .layer(middleware::from_fn(close_http1))
}

/// `Connection: close` on HTTP/1 answers (HTTP/2 forbids the header).
async fn close_http1(request: Request, next: Next) -> Response {
    let http1 = request.version() <= Version::HTTP_11;
    let mut response = next.run(request).await.into_response();
    if http1 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use tower::ServiceExt;

    use super::*;

    async fn answer(method: &str, path: &str, host: &str) -> (StatusCode, Option<String>, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let response = router(&["localhost".into()]).oneshot(request).await.unwrap();
        let status = response.status();
        let connection = response
            .headers()
            .get(header::CONNECTION)
            .map(|value| value.to_str().unwrap().to_string());
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, connection, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn alive_not_ready_and_mcp_asked_to_retry_each_closing_the_connection() {
        let (status, connection, body) = answer("GET", "/healthz", "localhost").await;
        assert_eq!(
            (status, connection.as_deref(), body.as_str()),
            (StatusCode::OK, Some("close"), "ok")
        );

        let (status, _, body) = answer("GET", "/readyz", "127.0.0.1:8080").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(STARTING), "{body}");

        let (status, connection, body) = answer("POST", "/mcp", "localhost:8080").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(connection.as_deref(), Some("close"));
        let rpc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(rpc["error"]["code"], -32000);
    }

    #[tokio::test]
    async fn names_that_are_not_allowed_are_refused_while_starting_too() {
        for (method, path) in [
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("POST", "/mcp"),
            ("GET", "/metrics"),
        ] {
            let (status, _, _) = answer(method, path, "rebind.attacker.example").await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        }
    }
}
