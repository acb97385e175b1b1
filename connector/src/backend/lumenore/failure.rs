//! How one HTTP attempt failed, whether it is worth retrying, and what the backend said about it.
//!
//! The backend's own message (from a 4xx/5xx body) is returned to the caller, as the original server did,
//! but bounded and with the caller's question, the schema id and the credentials removed: a backend that
//! echoes the question must not make the connector echo it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::super::BackendError;

/// Longest backend message passed on, in characters.
pub const MAX_DETAIL_CHARS: usize = 300;
/// Most of an error body that is read to find the message.
pub const MAX_ERROR_BODY_BYTES: usize = 16 * 1024;

/// A failure of one HTTP attempt, with whether it is worth retrying.
#[derive(Debug)]
pub struct AttemptError {
    pub error: BackendError,
    pub retryable: bool,
}

impl AttemptError {
    pub fn fatal(error: BackendError) -> Self {
        Self {
            error,
            retryable: false,
        }
    }

    pub fn retryable(error: BackendError) -> Self {
        Self {
            error,
            retryable: true,
        }
    }
}

/// The time limits of one request, to say which one was hit.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Allowed between reads: waiting for the headers, and between parts of the body.
    pub read: Duration,
    pub total: Duration,
}

/// Classifies a reqwest error without keeping its text (it may hold the URL, which has the schema id).
pub fn classify_transport(error: &reqwest::Error, timeouts: Timeouts, started: Instant) -> AttemptError {
    if error.is_timeout() {
        // reqwest says "timed out" for all three limits; the time spent tells which one it was.
        let elapsed = started.elapsed();
        let failure = if elapsed + Duration::from_millis(50) >= timeouts.total {
            BackendError::Timeout(timeouts.total)
        } else if error.is_connect() {
            BackendError::Unreachable
        } else {
            BackendError::Stalled(timeouts.read)
        };
        AttemptError::fatal(failure)
    } else if error.is_connect() {
        // Refused: the backend is restarting or a proxy dropped us. The endpoints only read, so sending
        // the same request again is safe.
        AttemptError::retryable(BackendError::Unreachable)
    } else if error.is_body() || error.is_decode() || error.is_request() {
        // A reset before or in the middle of the answer: the connection broke, the answer was fine.
        AttemptError::retryable(BackendError::ConnectionLost)
    } else {
        AttemptError::fatal(BackendError::Unreachable)
    }
}

/// The error for a non-success status, carrying the backend's message.
pub fn status_error(status: StatusCode, detail: Option<String>) -> AttemptError {
    let error = BackendError::Status(status.as_u16(), detail);
    if matches!(status.as_u16(), 502..=504) {
        AttemptError::retryable(error)
    } else {
        AttemptError::fatal(error)
    }
}

/// Words that must never be passed on from a backend message: the caller's question, the schema id, the
/// credentials and the token in use.
#[derive(Clone, Debug, Default)]
pub struct Redactions {
    words: Vec<String>,
}

impl Redactions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a word to remove (blank ones are ignored).
    pub fn with(mut self, word: impl Into<String>) -> Self {
        let word = word.into();
        if !word.trim().is_empty() {
            self.words.push(word);
        }
        self
    }

    /// Removes every word, longest first, case-insensitively (a backend may change the case).
    fn apply(&self, text: &str) -> String {
        let mut words: Vec<&String> = self.words.iter().collect();
        words.sort_by_key(|word| std::cmp::Reverse(word.len()));
        let mut text = text.to_owned();
        for word in words {
            text = replace_ignoring_case(&text, word.trim(), "[redacted]");
        }
        text
    }
}

/// Replaces whole-word occurrences of `word` (a match inside a longer word is left: a one-letter token
/// must not eat every letter of a message).
fn replace_ignoring_case(text: &str, word: &str, with: &str) -> String {
    let lower_text = text.to_lowercase();
    let lower_word = word.to_lowercase();
    // Lower-casing may change lengths outside ASCII; then matches are looked for case-sensitively.
    let (haystack, needle) =
        if lower_word.is_empty() || lower_text.len() != text.len() || lower_word.len() != word.len() {
            (text.to_owned(), word.to_owned())
        } else {
            (lower_text, lower_word)
        };
    if needle.is_empty() {
        return text.to_owned();
    }
    let is_word_char = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in haystack.match_indices(&needle) {
        let end = at + needle.len();
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        let starts_word = !is_word_char(needle.chars().next()) || !is_word_char(before);
        let ends_word = !is_word_char(needle.chars().next_back()) || !is_word_char(after);
        if at < rest || !starts_word || !ends_word {
            continue;
        }
        out.push_str(&text[rest..at]);
        out.push_str(with);
        rest = end;
    }
    out.push_str(&text[rest..]);
    out
}

/// The backend's message in an error body: a `message` (or `error`, `detail`, …) field of a JSON body, or
/// the text of a plain or HTML body; whitespace collapsed, redacted, and cut to [`MAX_DETAIL_CHARS`].
pub fn backend_message(body: &[u8], redactions: &Redactions) -> Option<String> {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(value) => message_field(&value)?,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            if text.trim_start().starts_with('<') {
                strip_tags(&text)
            } else {
                text.into_owned()
            }
        }
    };
    let collapsed = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let redacted = redactions.apply(&collapsed);
    if redacted.is_empty() {
        return None;
    }
    let mut chars = redacted.chars();
    let mut bounded: String = chars.by_ref().take(MAX_DETAIL_CHARS).collect();
    if chars.next().is_some() {
        bounded.push('…');
    }
    Some(bounded)
}

fn message_field(value: &Value) -> Option<String> {
    const FIELDS: [&str; 7] = [
        "message",
        "error_description",
        "error",
        "detail",
        "errorMessage",
        "msg",
        "title",
    ];
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Object(map) => FIELDS.iter().find_map(|field| match map.get(*field) {
            Some(Value::String(text)) if !text.trim().is_empty() => Some(text.clone()),
            Some(nested @ Value::Object(_)) => message_field(nested),
            _ => None,
        }),
        _ => None,
    }
}

/// The text of an HTML page without its tags, scripts and styles (an error page from a gateway).
fn strip_tags(html: &str) -> String {
    let mut text = String::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        text.push(' ');
        let tag = &rest[open..];
        let lower = tag.get(..8).unwrap_or(tag).to_ascii_lowercase();
        let close = if lower.starts_with("<script") || lower.starts_with("<style") {
            let end = if lower.starts_with("<script") {
                "</script>"
            } else {
                "</style>"
            };
            tag.to_ascii_lowercase().find(end).map(|at| at + end.len())
        } else {
            tag.find('>').map(|at| at + 1)
        };
        match close {
            Some(close) => rest = &tag[close..],
            None => {
                rest = "";
            }
        }
    }
    text.push_str(rest);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_messages_are_found() {
        let none = Redactions::new();
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"status": "error", "message": "Internal failure in ai-engine"}"#,
                "Internal failure in ai-engine",
            ),
            (
                br#"{"error": "invalid client credentials"}"#,
                "invalid client credentials",
            ),
            (
                br#"{"error": {"code": 7, "message": "quota exceeded"}}"#,
                "quota exceeded",
            ),
            (
                b"<html><body><h1>Service\n Unavailable</h1></body></html>",
                "Service Unavailable",
            ),
            (b"plain   text\r\nfailure", "plain text failure"),
        ];
        for (body, expected) in cases {
            assert_eq!(backend_message(body, &none).as_deref(), Some(expected));
        }
        assert_eq!(backend_message(b"", &none), None);
        assert_eq!(backend_message(br#"{"status": 500}"#, &none), None);
    }

    #[test]
    fn messages_are_bounded() {
        let body = format!(r#"{{"message": "{}"}}"#, "x".repeat(5000));
        let message = backend_message(body.as_bytes(), &Redactions::new()).unwrap();
        assert_eq!(message.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(message.ends_with('…'));
    }

    #[test]
    fn the_question_schema_id_and_credentials_are_never_echoed() {
        let redactions = Redactions::new()
            .with("Top 5 sales regions last month")
            .with("35403")
            .with("tok-secret");
        let body = br#"{"message": "could not answer 'top 5 SALES regions last month' on schema 35403 with tok-secret"}"#;
        let message = backend_message(body, &redactions).unwrap();
        assert!(!message.to_lowercase().contains("sales regions"), "{message}");
        assert!(
            !message.contains("35403") && !message.contains("tok-secret"),
            "{message}"
        );
        assert!(message.contains("could not answer"), "{message}");
        // Whole words only: a short token does not eat the letters of other words.
        let message = backend_message(
            br#"{"message": "Unauthorized: token T expired"}"#,
            &Redactions::new().with("T"),
        );
        assert_eq!(message.as_deref(), Some("Unauthorized: token [redacted] expired"));
    }

    #[test]
    fn scripts_and_styles_are_not_text() {
        let html = "<html><style>body{}</style><script>var a='<b>';</script><p>Gateway login page</p></html>";
        assert_eq!(
            backend_message(html.as_bytes(), &Redactions::new()).as_deref(),
            Some("Gateway login page")
        );
    }
}
