//! Synchronous entry points for the fuzz targets in `fuzz/` (issue 21): the backend answer readers of
//! `backend::lumenore` are private and async, so this module drives them on a current-thread runtime.
//! Not part of the connector's API; nothing else in the crate uses it.

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::Value;

pub use crate::backend::lumenore::body::{BodyLimits, Expect};
use crate::backend::{
    BackendError,
    lumenore::{
        body::{self, Chunks},
        bounded,
        failure::AttemptError,
    },
};
pub use crate::tools::envelope::{Answer, ResultLimits};

/// Bodies up to this size are parsed in place, larger ones while they arrive.
pub const IN_PLACE_BYTES: usize = body::IN_PLACE_BYTES;

/// How a body reaches the reader.
#[derive(Clone, Debug)]
pub struct Delivery<'a> {
    /// The chunks, in order, as the network delivers them.
    pub chunks: Vec<&'a [u8]>,
    /// The connection breaks after the last chunk (a reset in the middle of the body).
    pub reset_at_end: bool,
    /// The `Content-Type` the backend sent.
    pub content_type: Option<&'a str>,
    /// What the endpoint answers.
    pub expect: Expect,
    /// The byte cap of the answer and what is kept of it.
    pub limits: BodyLimits,
}

/// What reading a body gave: the answer or the error, and the progress reports made while reading.
#[derive(Debug)]
pub struct Read {
    pub result: Result<Answer, Failure>,
    /// The byte counts reported as progress, in order.
    pub progress: Vec<u64>,
}

/// A read that failed, and whether the call would be tried again.
#[derive(Debug)]
pub struct Failure {
    pub error: BackendError,
    pub retryable: bool,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Reads a whole answer as the backend client does (`body::read_answer`), from chunks in memory.
pub fn read_answer(delivery: Delivery<'_>) -> Read {
    let mut parts: Vec<Result<Bytes, AttemptError>> = delivery
        .chunks
        .iter()
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    if delivery.reset_at_end {
        parts.push(Err(AttemptError::retryable(BackendError::ConnectionLost)));
    }
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let chunks = Chunks::new(
        futures::stream::iter(parts),
        delivery.limits.max_body_bytes,
        Some(sender),
    );
    let result = runtime()
        .block_on(body::read_answer(
            chunks,
            delivery.content_type.map(str::to_owned),
            delivery.expect,
            delivery.limits,
        ))
        .map_err(|failure| Failure {
            error: failure.error,
            retryable: failure.retryable,
        });
    let mut progress = Vec::new();
    while let Ok(count) = receiver.try_recv() {
        progress.push(count);
    }
    Read { result, progress }
}

/// Parses JSON (one document or JSON lines) within the limits as `bounded::parse_documents` does, from a
/// slice, or through `std::io::Read` (the path of a large body) when `as_reader`.
pub fn parse_bounded(
    bytes: &[u8],
    limits: ResultLimits,
    as_reader: bool,
) -> Result<(Value, bool), serde_json::Error> {
    if as_reader {
        bounded::parse_documents(serde_json::de::IoRead::new(bytes), limits)
    } else {
        bounded::parse_slice(bytes, limits)
    }
}
