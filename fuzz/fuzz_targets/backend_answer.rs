//! The backend answer readers (`backend::lumenore::body` and `bounded`): one fuzz input is a body, how it
//! arrives and the limits it is read within.
//!
//! Layout: byte 0 the mode (bit 0: the NLQ stream rather than a JSON document; bits 1-3: the Content-Type;
//! bit 4: the connection breaks after the body; bit 5: the body starts with more whitespace than is parsed
//! in place, so it is parsed while it arrives; bit 6: a small byte cap; bit 7: the direct parse reads
//! through `std::io::Read`), byte 1 the chunking (see `lumenore_fuzz::chunks`), byte 2 `max_rows` (1-16),
//! byte 3 `max_bytes` (16-4,096), then the body.
//!
//! Invariants: no panic; every array kept has at most `max_rows` items; what is kept counts about
//! `max_bytes` (text exactly at most `max_bytes`); errors are a broken connection (retryable), a malformed
//! answer or a body over the cap (only when it is over the cap); without cuts the JSON kept is exactly what
//! serde_json reads, and JSON serde_json reads is never refused; progress never goes back nor past the cap.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lumenore_connector::{
    backend::BackendError,
    fuzzing::{
        Answer, BodyLimits, Delivery, Expect, IN_PLACE_BYTES, ResultLimits, parse_bounded, read_answer,
    },
};
use lumenore_fuzz::{Input, chunks, counted_bytes, depth, json_documents, longest_array, longest_key};
use serde_json::Value;

const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some("application/json"),
    Some("application/x-ndjson"),
    Some("text/event-stream"),
    Some("text/plain; charset=utf-8"),
    Some("text/html; charset=utf-8"),
    Some(" Text/Event-Stream; charset=utf-8"),
    Some("application/json; charset=\"\u{0}<script>\""),
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.byte();
    let chunking = input.byte();
    let max_rows = usize::from(input.byte() % 16) + 1;
    let max_bytes = 16 + usize::from(input.byte()) * 16;
    let body = input.rest();

    let result = ResultLimits { max_rows, max_bytes };
    check_bounded(body, result, mode & 0x80 != 0);

    let expect = if mode & 1 == 0 {
        Expect::Json
    } else {
        Expect::Stream
    };
    let content_type = CONTENT_TYPES[usize::from((mode >> 1) & 7)];
    let reset = mode & 0x10 != 0;
    let padding = if mode & 0x20 != 0 {
        vec![b' '; IN_PLACE_BYTES + 1]
    } else {
        Vec::new()
    };
    let total = padding.len() + body.len();
    let max_body_bytes = if mode & 0x40 != 0 {
        // Small enough that the cap is often hit, by the body or by the padding.
        64 + usize::from(chunking) * 4
    } else {
        IN_PLACE_BYTES * 4
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    if !padding.is_empty() {
        parts.push(&padding);
    }
    parts.extend(chunks(body, chunking));
    let read = read_answer(Delivery {
        chunks: parts,
        reset_at_end: reset,
        content_type,
        expect,
        limits: BodyLimits {
            max_body_bytes,
            result,
        },
    });

    // Progress: non-decreasing, never past what was sent nor past the cap.
    for pair in read.progress.windows(2) {
        assert!(pair[0] <= pair[1], "progress went back: {:?}", read.progress);
    }
    if let Some(&last) = read.progress.last() {
        assert!(
            last as usize <= total.min(max_body_bytes),
            "progress {last} of {total}"
        );
    }

    match read.result {
        Err(failure) => {
            match failure.error {
                BackendError::TooLarge(cap) => {
                    assert_eq!(cap, max_body_bytes);
                    assert!(total > max_body_bytes, "too large at {total} of {cap}");
                    assert!(!failure.retryable);
                }
                BackendError::ConnectionLost => assert!(failure.retryable),
                BackendError::Malformed(ref detail) => {
                    assert!(!failure.retryable);
                    if let Some(detail) = detail {
                        assert!(detail.len() < 200 && !detail.contains('<'), "{detail:?}");
                    }
                }
                ref other => panic!("unexpected error: {other:?}"),
            }
            if !reset && total <= max_body_bytes && expect == Expect::Json {
                // JSON serde_json reads is never refused.
                assert!(
                    json_documents(body).is_err(),
                    "refused valid JSON: {:?}",
                    failure.error
                );
            }
        }
        Ok(Answer::Text { text, truncated }) => {
            assert_eq!(expect, Expect::Stream, "text where JSON was expected");
            assert!(!reset, "text from a broken connection");
            assert!(text.len() <= max_bytes, "{} bytes of text kept", text.len());
            if body.iter().all(u8::is_ascii_whitespace) {
                // A blank answer passes nothing on.
                assert!(text.is_empty() && !truncated, "{text:?} of a blank answer");
            } else if !truncated {
                let mut whole = padding;
                whole.extend_from_slice(body);
                assert_eq!(text, String::from_utf8_lossy(&whole), "text changed but not cut");
            }
        }
        Ok(Answer::Json { data, truncated }) => {
            check_kept(&data, result);
            if reset {
                // Only an event stream that said [DONE] before the break ends well.
                assert!(data.is_array(), "an answer from a broken connection: {data}");
            }
            if expect == Expect::Json && !truncated && !reset {
                // The padding is JSON whitespace: the documents are those of the body.
                if body.iter().all(u8::is_ascii_whitespace) {
                    assert_eq!(data, Value::Null);
                } else {
                    let reference = json_documents(body).expect("accepted JSON serde_json refuses");
                    assert_eq!(data, reference, "JSON changed but not cut");
                }
            }
        }
    }
});

/// `bounded` on its own: the same limits, compared with serde_json.
fn check_bounded(body: &[u8], limits: ResultLimits, as_reader: bool) {
    let reference = json_documents(body);
    match parse_bounded(body, limits, as_reader) {
        Ok((value, truncated)) => {
            check_kept(&value, limits);
            if !truncated {
                match &reference {
                    Ok(reference) => assert_eq!(&value, reference, "JSON changed but not cut"),
                    Err(error) => panic!("accepted what serde_json refuses ({error}) without a cut"),
                }
            }
        }
        Err(error) => assert!(reference.is_err(), "refused JSON serde_json reads: {error}"),
    }
}

/// What is kept of a JSON answer: no array over `max_rows`, and about `max_bytes` as the limits count
/// them. A value may start while a little room is left and finish over it: a number (12), a key (its
/// length + 4) and the brackets and commas of the containers open at that moment.
fn check_kept(value: &Value, limits: ResultLimits) {
    let longest = longest_array(value);
    assert!(
        longest <= limits.max_rows,
        "an array of {longest} items kept with max_rows {}",
        limits.max_rows
    );
    let counted = counted_bytes(value);
    let slack = 16 + longest_key(value) + 4 * (depth(value) + 1);
    assert!(
        counted <= limits.max_bytes + slack,
        "{counted} bytes kept with max_bytes {} (slack {slack})",
        limits.max_bytes
    );
}
