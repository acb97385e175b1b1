//! Caller authentication, per-tool authorization, rate limits and the audit events of requests refused at
//! the door.
//!
//! Three modes, chosen by `LUMENORE_AUTH_MODE` (see `docs/auth.md`):
//! - `none`: every caller is the anonymous caller and may call every tool. Refused at start on a
//!   non-loopback listen address unless `LUMENORE_ALLOW_UNAUTHENTICATED=true`.
//! - `api-keys`: `Authorization: Bearer <key>` (or `X-API-Key: <key>`) checked against SHA-256 hashes in a
//!   keys file that is re-read when it changes ([`api_keys`]).
//! - `oauth`: an OAuth 2.1 resource server validating JWT access tokens against the issuer's JWKS
//!   ([`oauth`]); scopes map to tools ([`scopes`]).
//!
//! The HTTP layer ([`http`]) puts the authenticated [`Caller`] into the request extensions, where the MCP
//! handler finds it (rmcp hands the request's `http::request::Parts` to the handler) to filter `tools/list`
//! and to name the caller in audit events. The caller's credential is removed from the request before the
//! MCP SDK sees it, and the backend client never reads request headers: it cannot reach the backend.

pub mod api_keys;
pub mod http;
pub mod limits;
pub mod oauth;
pub mod scopes;

use std::{fmt, sync::Arc};

use crate::tools::ToolName;

/// A set of tools, as a bit set over [`ToolName::ALL`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ToolSet(u16);

impl ToolSet {
    pub const EMPTY: ToolSet = ToolSet(0);
    pub const ALL: ToolSet = ToolSet((1 << ToolName::ALL.len()) - 1);

    fn bit(tool: ToolName) -> u16 {
        let index = ToolName::ALL
            .iter()
            .position(|candidate| *candidate == tool)
            .unwrap_or(0);
        1 << index
    }

    pub fn of(tools: impl IntoIterator<Item = ToolName>) -> ToolSet {
        tools.into_iter().fold(ToolSet::EMPTY, |set, tool| set.with(tool))
    }

    #[must_use]
    pub fn with(self, tool: ToolName) -> ToolSet {
        ToolSet(self.0 | Self::bit(tool))
    }

    #[must_use]
    pub fn union(self, other: ToolSet) -> ToolSet {
        ToolSet(self.0 | other.0)
    }

    pub fn contains(self, tool: ToolName) -> bool {
        self.0 & Self::bit(tool) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = ToolName> {
        ToolName::ALL.into_iter().filter(move |tool| self.contains(*tool))
    }
}

impl fmt::Debug for ToolSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(ToolName::as_str)).finish()
    }
}

/// How a caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerKind {
    /// Mode `none`: nobody is asked.
    Anonymous,
    /// An API key from the keys file; the caller id is the key's id.
    ApiKey,
    /// An OAuth access token; the caller id is the token's `sub`.
    OAuth,
}

/// The authenticated caller of one request, put into the request extensions by the HTTP layer. Holds the
/// caller's id (never its credential) and the tools it may call.
#[derive(Clone, Debug)]
pub struct Caller {
    pub id: Arc<str>,
    pub tools: ToolSet,
    pub kind: CallerKind,
}

impl Caller {
    pub const ANONYMOUS_ID: &'static str = "anonymous";

    pub fn anonymous() -> Self {
        Caller {
            id: Arc::from(Self::ANONYMOUS_ID),
            tools: ToolSet::ALL,
            kind: CallerKind::Anonymous,
        }
    }

    pub fn may_call(&self, tool: ToolName) -> bool {
        self.tools.contains(tool)
    }
}

/// A caller id fit for a log line: control characters replaced, at most 128 characters. Token subjects
/// are the issuer's text, so they are cleaned before they reach the audit log.
pub fn printable_id(raw: &str) -> Arc<str> {
    let cleaned: String = raw
        .chars()
        .take(128)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    Arc::from(cleaned)
}

/// Why a request was not authenticated. Each has a fixed metric label and a fixed text for the caller;
/// none carries the credential or anything taken from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` (or `X-API-Key`) header.
    MissingCredential,
    /// An API key that matches no entry of the keys file.
    UnknownKey,
    /// An API key whose entry says `revoked: true`.
    RevokedKey,
    /// Not a JWT, or claims of the wrong shape.
    MalformedToken,
    /// The header names an algorithm outside the allow-list (or one that does not fit the key).
    DisallowedAlgorithm,
    /// The signature does not verify with the issuer's key.
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// `aud` does not name this connector.
    WrongAudience,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `exp`, `iss`, `aud` or `sub` is missing.
    MissingClaim,
    /// The token's key id is not in the issuer's JWKS, even after a refresh.
    UnknownKeyId,
    /// The issuer's keys could not be fetched (and none are cached): HTTP 503, not 401.
    IssuerUnavailable,
}

impl AuthFailure {
    /// Metric label value and audit reason.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::MissingCredential => "missing_credential",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::RevokedKey => "revoked_key",
            AuthFailure::MalformedToken => "malformed_token",
            AuthFailure::DisallowedAlgorithm => "disallowed_algorithm",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::MissingClaim => "missing_claim",
            AuthFailure::UnknownKeyId => "unknown_key_id",
            AuthFailure::IssuerUnavailable => "issuer_unavailable",
        }
    }

    /// The text returned to the caller (`error_description` and the JSON-RPC error message).
    pub fn description(self) -> &'static str {
        match self {
            AuthFailure::MissingCredential => {
                "authentication required: send Authorization: Bearer <credential>"
            }
            AuthFailure::UnknownKey => "the API key is not valid",
            AuthFailure::RevokedKey => "the API key was revoked",
            AuthFailure::MalformedToken => "the access token is malformed",
            AuthFailure::DisallowedAlgorithm => "the access token's signing algorithm is not accepted",
            AuthFailure::BadSignature => "the access token's signature is not valid",
            AuthFailure::Expired => "the access token has expired",
            AuthFailure::NotYetValid => "the access token is not valid yet",
            AuthFailure::WrongAudience => "the access token was not issued for this resource",
            AuthFailure::WrongIssuer => "the access token was not issued by the expected issuer",
            AuthFailure::MissingClaim => "the access token lacks a required claim (exp, iss, aud, sub)",
            AuthFailure::UnknownKeyId => "the access token was signed with an unknown key",
            AuthFailure::IssuerUnavailable => "the token issuer's keys cannot be fetched right now",
        }
    }

    /// Whether a credential was presented (RFC 6750: `error="invalid_token"` only then).
    pub fn credential_presented(self) -> bool {
        self != AuthFailure::MissingCredential
    }
}

/// All reasons, for tests and documentation.
pub const AUTH_FAILURE_REASONS: [AuthFailure; 13] = [
    AuthFailure::MissingCredential,
    AuthFailure::UnknownKey,
    AuthFailure::RevokedKey,
    AuthFailure::MalformedToken,
    AuthFailure::DisallowedAlgorithm,
    AuthFailure::BadSignature,
    AuthFailure::Expired,
    AuthFailure::NotYetValid,
    AuthFailure::WrongAudience,
    AuthFailure::WrongIssuer,
    AuthFailure::MissingClaim,
    AuthFailure::UnknownKeyId,
    AuthFailure::IssuerUnavailable,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_set_holds_exactly_what_was_put_in() {
        let set = ToolSet::of([ToolName::GetDatasetMetadata, ToolName::NlqToData]);
        assert!(set.contains(ToolName::GetDatasetMetadata));
        assert!(set.contains(ToolName::NlqToData));
        assert!(!set.contains(ToolName::GetMetadataInfo));
        assert_eq!(set.iter().count(), 2);
        assert_eq!(ToolSet::ALL.iter().count(), 9);
        assert!(ToolSet::EMPTY.is_empty());
        for tool in ToolName::ALL {
            assert!(ToolSet::ALL.contains(tool));
            assert!(!ToolSet::EMPTY.contains(tool));
            assert_eq!(ToolSet::of([tool]).iter().collect::<Vec<_>>(), vec![tool]);
        }
    }

    #[test]
    fn printable_id_strips_control_characters_and_bounds_length() {
        assert_eq!(&*printable_id("alice\nINFO forged"), "alice?INFO forged");
        assert_eq!(printable_id(&"x".repeat(500)).len(), 128);
    }

    #[test]
    fn reasons_are_distinct_labels() {
        let mut labels: Vec<_> = AUTH_FAILURE_REASONS.iter().map(|r| r.reason()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), AUTH_FAILURE_REASONS.len());
    }
}
