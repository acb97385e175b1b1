//! Reading a backend answer: bounded in bytes (the response cap), in time (reqwest's read and total
//! timeouts) and in memory (only what the result limits allow is kept, see [`super::bounded`]).
//!
//! - JSON (one document or JSON lines): a small body is parsed in place; a large one is parsed while it
//!   arrives, on a blocking thread fed through a small channel, so no whole body is ever held.
//! - The streamed NLQ answer may also be Server-Sent Events (parsed per the SSE specification by the
//!   `eventsource-stream` crate: each event's data becomes one item) or plain text (passed on as text).
//! - A reset in the middle of the body is a broken connection (retryable), not "invalid JSON".

use bytes::{Buf, Bytes};
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt, stream::BoxStream};
use serde::de::DeserializeSeed;
use serde_json::Value;

use super::{
    bounded::{self, Budget, Capped},
    failure::AttemptError,
};
use crate::{
    backend::{BackendError, ProgressSender},
    tools::envelope::{Answer, ResultLimits, bound_text},
};

/// Bodies up to this size are parsed in place; larger ones while they arrive.
pub(crate) const IN_PLACE_BYTES: usize = 256 * 1024;
/// Chunks in flight between the network and the parser of a large body.
const PARSER_QUEUE: usize = 8;

/// What the endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A JSON document.
    Json,
    /// The NLQ stream: JSON, JSON lines, Server-Sent Events or plain text.
    Stream,
}

/// The limits a body is read within.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Most bytes read from the network; beyond it the call fails.
    pub max_body_bytes: usize,
    /// What is kept of the answer.
    pub result: ResultLimits,
}

/// The body as a stream of chunks that counts bytes, enforces the byte cap, reports progress and turns
/// transport errors into attempt errors.
pub struct Chunks {
    stream: BoxStream<'static, Result<Bytes, AttemptError>>,
}

impl Chunks {
    pub fn new(
        body: impl Stream<Item = Result<Bytes, AttemptError>> + Send + 'static,
        max_bytes: usize,
        progress: Option<ProgressSender>,
    ) -> Self {
        let mut received = 0usize;
        let stream = body.map(move |chunk| {
            let chunk = chunk?;
            received += chunk.len();
            if received > max_bytes {
                return Err(AttemptError::fatal(BackendError::TooLarge(max_bytes)));
            }
            if let Some(progress) = &progress {
                // The receiver may be gone; that is fine.
                let _ = progress.send(received as u64);
            }
            Ok(chunk)
        });
        Self {
            stream: stream.boxed(),
        }
    }

    async fn next(&mut self) -> Result<Option<Bytes>, AttemptError> {
        self.stream.next().await.transpose()
    }
}

/// Reads and parses a whole answer.
pub async fn read_answer(
    mut chunks: Chunks,
    content_type: Option<String>,
    expect: Expect,
    limits: BodyLimits,
) -> Result<Answer, AttemptError> {
    // Read until the first character that is not whitespace: it tells JSON from SSE from text.
    let mut head: Vec<Bytes> = Vec::new();
    let first = loop {
        match chunks.next().await? {
            None => break None,
            Some(chunk) => {
                let found = chunk.iter().copied().find(|byte| !byte.is_ascii_whitespace());
                head.push(chunk);
                if found.is_some() {
                    break found;
                }
            }
        }
    };
    let Some(first) = first else {
        // An empty answer: nothing to pass on.
        return Ok(match expect {
            Expect::Json => Answer::from(Value::Null),
            Expect::Stream => Answer::Text {
                text: String::new(),
                truncated: false,
            },
        });
    };
    let is_sse = content_type
        .as_deref()
        .is_some_and(|kind| kind.trim().to_ascii_lowercase().starts_with("text/event-stream"))
        || (expect == Expect::Stream && looks_like_sse(&head));
    if expect == Expect::Stream && is_sse {
        return read_sse(head, chunks, limits.result).await;
    }
    let looks_like_json = matches!(
        first,
        b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
    );
    match (expect, looks_like_json) {
        (_, true) => read_json(head, chunks, expect, limits).await,
        (Expect::Stream, false) => read_text(head, chunks, limits.result).await,
        (Expect::Json, false) => {
            // Drain nothing more: the answer is unusable whatever follows (a gateway's login page...).
            Err(AttemptError::fatal(BackendError::Malformed(
                content_type.map(|kind| format!("it sent {}", mime_essence(&kind))),
            )))
        }
    }
}

/// The media type without parameters, reduced to safe characters.
fn mime_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '+' | '.' | '-'))
        .take(60)
        .collect()
}

/// Whether the body starts like an event stream: its first line is an SSE field or comment.
fn looks_like_sse(head: &[Bytes]) -> bool {
    let mut start: Vec<u8> = Vec::new();
    for chunk in head {
        start.extend_from_slice(&chunk[..chunk.len().min(64 - start.len().min(64))]);
        if start.len() >= 64 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&start);
    let line = text.trim_start_matches(['\u{feff}', '\r', '\n', ' ', '\t']);
    line.starts_with(':')
        || ["data:", "event:", "id:", "retry:"]
            .iter()
            .any(|field| line.starts_with(field))
}

/// JSON: in place when the whole body is small, else parsed while it arrives. The NLQ stream falls back
/// to text when a small body turns out not to be JSON.
async fn read_json(
    mut head: Vec<Bytes>,
    mut chunks: Chunks,
    expect: Expect,
    limits: BodyLimits,
) -> Result<Answer, AttemptError> {
    let mut size: usize = head.iter().map(Bytes::len).sum();
    while size <= IN_PLACE_BYTES {
        match chunks.next().await? {
            Some(chunk) => {
                size += chunk.len();
                head.push(chunk);
            }
            None => {
                let body = head.concat();
                return match bounded::parse_slice(&body, limits.result) {
                    Ok((data, truncated)) => Ok(Answer::Json { data, truncated }),
                    Err(error) if error.is_eof() => Err(ended_early()),
                    Err(_) if expect == Expect::Stream => {
                        let (text, truncated) = text_of(&body, limits.result.max_bytes);
                        Ok(Answer::Text { text, truncated })
                    }
                    Err(_) => Err(AttemptError::fatal(BackendError::Malformed(None))),
                };
            }
        }
    }
    parse_while_reading(head, chunks, limits.result).await
}

/// Parses on a blocking thread while this task keeps reading the network. If this future is dropped (the
/// caller went away), the channel closes and the parser stops at once.
async fn parse_while_reading(
    head: Vec<Bytes>,
    mut chunks: Chunks,
    limits: ResultLimits,
) -> Result<Answer, AttemptError> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(PARSER_QUEUE);
    let parser = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            current: Bytes::new(),
            queued: head.into(),
            receiver,
        };
        bounded::parse_documents(serde_json::de::IoRead::new(reader), limits)
    });
    let pumped: Result<(), AttemptError> = async {
        while let Some(chunk) = chunks.next().await? {
            if sender.send(chunk).await.is_err() {
                // The parser stopped early (invalid JSON): its error says why.
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(sender);
    let parsed = parser
        .await
        .map_err(|_| AttemptError::fatal(BackendError::Malformed(None)))?;
    // A transport failure explains a parse failure (the body ended early), not the other way round.
    pumped?;
    match parsed {
        Ok((data, truncated)) => Ok(Answer::Json { data, truncated }),
        Err(error) if error.is_eof() => Err(ended_early()),
        Err(_) => Err(AttemptError::fatal(BackendError::Malformed(None))),
    }
}

/// JSON that stops in the middle: the connection was closed before the answer was complete (a backend
/// does not send half a document on purpose), so it is a broken connection, worth another try.
fn ended_early() -> AttemptError {
    AttemptError::retryable(BackendError::ConnectionLost)
}

/// A blocking reader over the chunks a task sends.
struct ChannelReader {
    current: Bytes,
    queued: std::collections::VecDeque<Bytes>,
    receiver: tokio::sync::mpsc::Receiver<Bytes>,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        while !self.current.has_remaining() {
            match self.queued.pop_front().or_else(|| self.receiver.blocking_recv()) {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let count = buffer.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut buffer[..count]);
        Ok(count)
    }
}

/// Server-Sent Events: each event's data is one item (parsed as JSON when it is JSON, else kept as text),
/// `[DONE]` ends the answer, events beyond the row limit are counted, not kept, and all of them are kept
/// within the one byte budget.
async fn read_sse(head: Vec<Bytes>, chunks: Chunks, limits: ResultLimits) -> Result<Answer, AttemptError> {
    let body = futures::stream::iter(head.into_iter().map(Ok)).chain(chunks.stream);
    let mut events = without_byte_order_marks(body).eventsource();
    let budget = Budget::new(limits);
    let mut items = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.map_err(|error| match error {
            EventStreamError::Transport(error) => error,
            EventStreamError::Utf8(_) | EventStreamError::Parser(_) => AttemptError::fatal(
                BackendError::Malformed(Some("the event stream is not valid".into())),
            ),
        })?;
        if event.data.trim() == "[DONE]" {
            break;
        }
        // Past the row limit or the byte budget: counted, not kept (each event is a value of its own, so
        // the budget is checked here as an array checks it before each item; found by the fuzz target).
        if items.len() >= limits.max_rows || !budget.has_room() {
            budget.drop_one();
            continue;
        }
        let mut deserializer = serde_json::Deserializer::from_str(&event.data);
        let item = match Capped(&budget)
            .deserialize(&mut deserializer)
            .and_then(|value| deserializer.end().map(|()| value))
        {
            Ok(value) => value,
            // Text, within what is left of the budget like any string (found by the fuzz target).
            Err(_) => budget.string(&event.data),
        };
        items.push(item);
    }
    Ok(Answer::Json {
        data: Value::Array(items),
        truncated: budget.dropped() > 0,
    })
}

/// The event stream without the byte order marks it starts with: the specification ignores one, and
/// `eventsource-stream` 0.2.3 panics on one (it cuts the mark's three bytes after the first; found by the
/// `backend_answer` fuzz target). They are taken off as bytes, even when split between chunks, and all of
/// them, so that the parser never meets a mark first.
fn without_byte_order_marks(
    body: impl Stream<Item = Result<Bytes, AttemptError>>,
) -> impl Stream<Item = Result<Bytes, AttemptError>> {
    const MARK: &[u8] = "\u{feff}".as_bytes();
    // The bytes of the start that may still be (the beginning of) a mark; `None` once past the start.
    let mut start: Option<Vec<u8>> = Some(Vec::new());
    body.map(move |chunk| {
        let chunk = chunk?;
        let Some(mut held) = start.take() else {
            return Ok(chunk);
        };
        held.extend_from_slice(&chunk);
        let mut rest = held.as_slice();
        while let Some(after) = rest.strip_prefix(MARK) {
            rest = after;
        }
        if MARK.starts_with(rest) {
            // Nothing yet, or part of a mark: wait for the next chunk.
            start = Some(rest.to_vec());
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(rest))
    })
}

/// Plain text: the first `max_bytes` are kept, the rest is read and counted.
async fn read_text(
    head: Vec<Bytes>,
    mut chunks: Chunks,
    limits: ResultLimits,
) -> Result<Answer, AttemptError> {
    let mut kept: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut keep = |chunk: &[u8]| {
        let room = limits.max_bytes.saturating_sub(kept.len());
        if chunk.len() > room {
            cut = true;
        }
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    };
    for chunk in &head {
        keep(chunk);
    }
    while let Some(chunk) = chunks.next().await? {
        keep(&chunk);
    }
    let (text, truncated) = text_of(&kept, limits.max_bytes);
    Ok(Answer::Text {
        text,
        truncated: truncated || cut,
    })
}

/// Bytes as text: invalid UTF-8 (or a character cut at the limit) becomes U+FFFD.
fn text_of(bytes: &[u8], max_bytes: usize) -> (String, bool) {
    bound_text(String::from_utf8_lossy(bytes).into_owned(), max_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: BodyLimits = BodyLimits {
        max_body_bytes: 1 << 20,
        result: ResultLimits {
            max_rows: 1000,
            max_bytes: 1 << 20,
        },
    };

    fn chunks(parts: &[&[u8]]) -> Chunks {
        let parts: Vec<Result<Bytes, AttemptError>> = parts
            .iter()
            .map(|part| Ok(Bytes::copy_from_slice(part)))
            .collect();
        Chunks::new(futures::stream::iter(parts), LIMITS.max_body_bytes, None)
    }

    async fn read(
        parts: &[&[u8]],
        content_type: Option<&str>,
        expect: Expect,
    ) -> Result<Answer, BackendError> {
        read_answer(chunks(parts), content_type.map(str::to_owned), expect, LIMITS)
            .await
            .map_err(|failure| failure.error)
    }

    fn json_answer(data: Value) -> Answer {
        Answer::Json {
            data,
            truncated: false,
        }
    }

    #[tokio::test]
    async fn json_documents_and_json_lines() {
        assert_eq!(
            read(&[b"{\"a\"", b":1}"], None, Expect::Json).await.unwrap(),
            json_answer(json!({"a": 1}))
        );
        assert_eq!(
            read(
                &[b"{\"a\":1}\n{\"b\"", b":2}\n"],
                Some("application/x-ndjson"),
                Expect::Stream
            )
            .await
            .unwrap(),
            json_answer(json!([{"a": 1}, {"b": 2}]))
        );
    }

    #[tokio::test]
    async fn sse_is_parsed_per_the_specification() {
        // Events over several data lines, retry and id fields, comments, CRLF, an unknown field, [DONE].
        let stream: &[&[u8]] = &[
            b"retry: 1000\r\nevent: message\r\ndata: {\"type\":\r\n",
            b"data:  \"status\"}\r\n\r\n: keep-alive\n\nid: 7\nfoo: bar\ndata: plain words\n\n",
            b"data: [DONE]\n\ndata: {\"after\": \"done\"}\n\n",
        ];
        assert_eq!(
            read(stream, Some("text/event-stream"), Expect::Stream)
                .await
                .unwrap(),
            json_answer(json!([{"type": "status"}, "plain words"]))
        );
        // Recognised without the content type too.
        assert_eq!(
            read(
                &[b"event: message\ndata: {\"a\": 1}\n\n"],
                Some("text/plain"),
                Expect::Stream
            )
            .await
            .unwrap(),
            json_answer(json!([{"a": 1}]))
        );
    }

    #[tokio::test]
    async fn sse_byte_order_marks_are_skipped_whole_or_split() {
        let expected = json_answer(json!([{"a": 1}, "b"]));
        let body = "\u{feff}data: {\"a\": 1}\n\ndata: b\n\n".as_bytes();
        assert_eq!(
            read(&[body], Some("text/event-stream"), Expect::Stream)
                .await
                .unwrap(),
            expected
        );
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(
            read(&bytes, Some("text/event-stream"), Expect::Stream)
                .await
                .unwrap(),
            expected
        );
        let twice = "\u{feff}\u{feff}data: {\"a\": 1}\n\ndata: b\n\n".as_bytes();
        assert_eq!(
            read(
                &[&twice[..4], &twice[4..]],
                Some("text/event-stream"),
                Expect::Stream
            )
            .await
            .unwrap(),
            expected
        );
        // A mark alone, or a cut one, is no event; a mark later in the stream is data.
        for body in [&b"\xef\xbb\xbf"[..], b"\xef\xbb"] {
            assert_eq!(
                read(&[body], Some("text/event-stream"), Expect::Stream)
                    .await
                    .unwrap(),
                json_answer(json!([]))
            );
        }
        assert_eq!(
            read(
                &["data: \u{feff}x\n\n".as_bytes()],
                Some("text/event-stream"),
                Expect::Stream
            )
            .await
            .unwrap(),
            json_answer(json!(["\u{feff}x"]))
        );
    }

    #[tokio::test]
    async fn sse_text_events_are_kept_within_the_byte_budget() {
        let limits = BodyLimits {
            max_body_bytes: 1 << 20,
            result: ResultLimits {
                max_rows: 100,
                max_bytes: 1000,
            },
        };
        let event = format!("data: {}\n\n", "x".repeat(600));
        let body = event.repeat(20);
        let answer = read_answer(
            chunks(&[body.as_bytes()]),
            Some("text/event-stream".into()),
            Expect::Stream,
            limits,
        )
        .await
        .unwrap();
        let Answer::Json { data, truncated } = answer else {
            panic!("{answer:?}")
        };
        assert!(truncated);
        let kept = serde_json::to_vec(&data).unwrap().len();
        assert!(kept < 1100, "{kept} bytes kept of 12,000 with max_bytes 1,000");
        // Once the budget is spent, later events are not kept either, however small.
        let mut body = format!("data: {}\n\n", "x".repeat(2000));
        body.push_str(&"data: 1\n\n".repeat(50));
        let answer = read_answer(
            chunks(&[body.as_bytes()]),
            Some("text/event-stream".into()),
            Expect::Stream,
            limits,
        )
        .await
        .unwrap();
        let Answer::Json { data, truncated } = answer else {
            panic!("{answer:?}")
        };
        assert!(truncated);
        assert_eq!(data.as_array().map(Vec::len), Some(1), "{data}");
    }

    #[tokio::test]
    async fn plain_text_streams_are_passed_on_as_text() {
        let text = "Top 5 sales regions last month:\n1. North 120.5\n";
        assert_eq!(
            read(&[text.as_bytes()], Some("text/plain"), Expect::Stream)
                .await
                .unwrap(),
            Answer::Text {
                text: text.into(),
                truncated: false
            }
        );
        // HTML from a gateway is text for the stream, and an error where JSON is expected.
        let html: &[u8] = b"<html><body>Gateway login page</body></html>";
        assert!(matches!(
            read(&[html], Some("text/html"), Expect::Stream).await.unwrap(),
            Answer::Text { .. }
        ));
        let error = read(&[html], Some("text/html; charset=utf-8"), Expect::Json)
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the Lumenore backend sent a response that is not valid JSON: it sent text/html"
        );
        // Text that starts like JSON but is not stays text on the stream.
        assert!(matches!(
            read(&[b"[INFO] 2 rows"], None, Expect::Stream).await.unwrap(),
            Answer::Text { .. }
        ));
    }

    #[tokio::test]
    async fn empty_answers() {
        assert_eq!(
            read(&[b"  \n"], None, Expect::Json).await.unwrap(),
            json_answer(Value::Null)
        );
        assert_eq!(
            read(&[], None, Expect::Stream).await.unwrap(),
            Answer::Text {
                text: String::new(),
                truncated: false
            }
        );
    }

    #[tokio::test]
    async fn a_body_over_the_cap_fails_and_a_large_one_is_parsed_while_read() {
        let error = read_answer(
            Chunks::new(
                futures::stream::iter(vec![Ok(Bytes::from(vec![b' '; 2048]))]),
                1024,
                None,
            ),
            None,
            Expect::Json,
            LIMITS,
        )
        .await
        .unwrap_err();
        assert!(matches!(error.error, BackendError::TooLarge(1024)));

        // 2 MB of rows in 64 KiB chunks: parsed while it arrives, cut to the row limit.
        let rows: Vec<Value> = (0..60_000).map(|i| json!({"region": "North", "v": i})).collect();
        let body = serde_json::to_vec(&rows).unwrap();
        let parts: Vec<Result<Bytes, AttemptError>> = body
            .chunks(64 * 1024)
            .map(|part| Ok(Bytes::copy_from_slice(part)))
            .collect();
        let answer = read_answer(
            Chunks::new(futures::stream::iter(parts), 1 << 30, None),
            None,
            Expect::Json,
            BodyLimits {
                max_body_bytes: 1 << 30,
                result: ResultLimits {
                    max_rows: 100,
                    max_bytes: 1 << 20,
                },
            },
        )
        .await
        .unwrap();
        match answer {
            Answer::Json { data, truncated } => {
                assert!(truncated);
                assert_eq!(data.as_array().unwrap().len(), 100);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn json_that_stops_in_the_middle_is_a_broken_connection() {
        for body in [&b"{\"rows\": [1, 2,"[..], b"[{\"a\": \"unfinished"] {
            for expect in [Expect::Json, Expect::Stream] {
                let error = read_answer(chunks(&[body]), None, expect, LIMITS)
                    .await
                    .unwrap_err();
                assert!(matches!(error.error, BackendError::ConnectionLost), "{error:?}");
                assert!(error.retryable);
            }
        }
    }

    #[tokio::test]
    async fn a_reset_mid_body_is_a_broken_connection_not_invalid_json() {
        for size in [100usize, 600 * 1024] {
            let mut parts: Vec<Result<Bytes, AttemptError>> = vec![Ok(Bytes::from(
                format!("[{}", "1,".repeat(size / 2)).into_bytes(),
            ))];
            parts.push(Err(AttemptError::retryable(BackendError::ConnectionLost)));
            let error = read_answer(
                Chunks::new(futures::stream::iter(parts), 1 << 30, None),
                None,
                Expect::Json,
                LIMITS,
            )
            .await
            .unwrap_err();
            assert!(
                matches!(error.error, BackendError::ConnectionLost),
                "{size}: {error:?}"
            );
            assert!(error.retryable);
        }
    }
}
