//! The body guard of `/mcp`, after the caller was authenticated from the headers: refuses a declared length
//! over the limit before reading anything, reads at most `max_bytes` within `read_timeout` into one buffer
//! (sized from the declared length, or grown as bytes arrive: chunks are copied, not kept) while holding one
//! of a fixed number of permits, and checks the body strictly ([`jsonrpc::parse_message`], which builds
//! only the envelope; the MCP SDK builds the message). The permit is held until the call's answer was
//! sent, so the bodies, parsed messages and answers held at once are bounded by the number of permits.
//!
//! Answers: 413 (declared or actual length over the limit), 408 (body not received in time), 415 (not
//! `application/json`), 503 with `Retry-After` (too many bodies being read at once), 400 with a JSON-RPC
//! error (not JSON, or not a valid JSON-RPC message).

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::Response,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::jsonrpc::{self, INVALID_REQUEST};
use crate::metrics::{Metrics, ReasonLabels};

/// Limits on request bodies.
#[derive(Clone)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
    /// One permit per request whose body is being read or whose call is being served.
    pub readers: Arc<Semaphore>,
    pub metrics: Metrics,
}

impl BodyLimits {
    pub fn new(max_bytes: usize, read_timeout: Duration, max_readers: usize, metrics: Metrics) -> Self {
        BodyLimits {
            max_bytes,
            read_timeout,
            readers: Arc::new(Semaphore::new(max_readers.max(1))),
            metrics,
        }
    }

    fn refuse(&self, reason: &'static str, response: Response) -> Response {
        self.metrics
            .requests_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
        response
    }
}

/// The parsed JSON-RPC message of a request, left in its extensions for the layers after the guard.
#[derive(Clone, Debug)]
pub struct RpcMessage(pub Arc<Map<String, Value>>);

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let essence = value.split_once(';').map_or(value, |(essence, _)| essence);
            essence.trim().eq_ignore_ascii_case("application/json")
        })
}

fn declared_length(request: &http::request::Parts) -> Option<u64> {
    request
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

/// Reads and parses the body of a POST; other methods pass untouched.
pub async fn guard(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    if !is_json(&request) {
        return limits.refuse(
            "content_type",
            jsonrpc::error_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                INVALID_REQUEST,
                "Unsupported Media Type: Content-Type must be application/json",
            ),
        );
    }
    let too_large = || {
        jsonrpc::error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            INVALID_REQUEST,
            &format!("request body is larger than {} bytes", limits.max_bytes),
        )
    };
    let (parts, body) = request.into_parts();
    let declared = declared_length(&parts);
    if declared.is_some_and(|length| length > limits.max_bytes as u64) {
        return limits.refuse("too_large", too_large());
    }
    let Ok(permit) = limits.readers.clone().try_acquire_owned() else {
        return limits.refuse(
            "busy",
            jsonrpc::retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                -32000,
                "too many requests are being received or served: retry shortly",
                1,
            ),
        );
    };
    let expected = declared.map_or(0, |length| length as usize);
    let read = tokio::time::timeout(limits.read_timeout, gather(body, expected, limits.max_bytes)).await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(Gathered::TooLarge)) => return limits.refuse("too_large", too_large()),
        // The client closed or broke the connection mid-body: nobody reads this answer.
        Ok(Err(Gathered::Broken)) => {
            return limits.refuse(
                "body_error",
                jsonrpc::error_response(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    "the request body could not be read",
                ),
            );
        }
        Err(_) => {
            return limits.refuse(
                "body_timeout",
                jsonrpc::error_response(
                    StatusCode::REQUEST_TIMEOUT,
                    INVALID_REQUEST,
                    &format!(
                        "the request body was not received within {}",
                        humantime::format_duration(limits.read_timeout)
                    ),
                ),
            );
        }
    };
    let message = match jsonrpc::parse_message(&bytes) {
        Ok(message) => message,
        Err(rejection) => return limits.refuse("invalid_json_rpc", rejection.into_response()),
    };
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(RpcMessage(Arc::new(message)));
    let response = next.run(request).await;
    if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        // The content type was checked above, so the MCP SDK could not read the message as any MCP
        // request: that is an invalid request, not a media type problem.
        return jsonrpc::error_response(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "Invalid Request: the message is not a valid MCP request",
        );
    }
    // The permit is held until the answer was sent (or dropped): an answer waiting for a client that does
    // not read it counts against the same cap as a body, until the send timeout closes the connection.
    super::tracked::hold_until_sent(response, permit)
}

/// Why a body could not be gathered.
enum Gathered {
    TooLarge,
    Broken,
}

/// Reads a body into one buffer of at most `max` bytes: sized from the declared length up front, else grown
/// as bytes arrive. Each chunk is copied and dropped, so a body sent in many small chunks costs its length,
/// not a chunk header (and a read buffer kept alive) per chunk.
async fn gather(mut body: Body, declared: usize, max: usize) -> Result<Bytes, Gathered> {
    let mut buffer: Vec<u8> = Vec::with_capacity(declared.min(max));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Gathered::Broken)?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > max {
                return Err(Gathered::TooLarge);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buffer))
}
