//! Canary values for the privacy tests: texts that must never show up in a log line, a metric or an
//! exported span. Each is unique enough that finding it anywhere is a leak.

pub const CLIENT_ID: &str = "canary-client-id-5e1f";
pub const SECRET: &str = "canary-secret-93ab";
pub const TOKEN: &str = "canary-token-77c2";
pub const QUERY: &str = "canary question about revenue qz7x";
/// A fragment of [`QUERY`] that nothing else can contain (not hex: no random id holds it).
pub const QUERY_FRAGMENT: &str = "qz7x";
pub const SCHEMA_ID: i64 = 918_273_645;
pub const RESULT: &str = "canary-result-0b9d";

/// Every canary, as text.
pub fn canaries() -> Vec<String> {
    vec![
        CLIENT_ID.into(),
        SECRET.into(),
        TOKEN.into(),
        QUERY.into(),
        QUERY_FRAGMENT.into(),
        SCHEMA_ID.to_string(),
        RESULT.into(),
    ]
}
