//! The correlation id of each request: the caller's `X-Request-Id` when it is a short token of safe
//! characters, else a new one; put into the request extensions and echoed on the response.

use axum::{extract::Request, http::HeaderValue, middleware::Next, response::Response};

use crate::telemetry::CorrelationId;

const HEADER: &str = "x-request-id";

/// The caller's id when it is safe to log (1-64 characters of `[A-Za-z0-9._-]`).
pub fn accepted(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub async fn correlation(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|value| accepted(value))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let header = HeaderValue::from_str(&id).ok();
    request.extensions_mut().insert(CorrelationId(id));
    let mut response = next.run(request).await;
    if let Some(value) = header {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::accepted;

    #[test]
    fn only_short_safe_tokens_are_taken() {
        assert!(accepted("req-1.a_B"));
        assert!(!accepted(""));
        assert!(!accepted(&"a".repeat(65)));
        assert!(!accepted("a b"));
        assert!(!accepted("a\nINFO forged"));
    }
}
