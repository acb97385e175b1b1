//! Prometheus metrics. Label values come from fixed sets (tool names, outcomes, error classes), never from
//! user input, so no query, schema id or result can appear in a label.

use std::sync::Arc;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    success,
    validation_error,
    error,
    cancelled,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::success => "success",
            Outcome::validation_error => "validation_error",
            Outcome::error => "error",
            Outcome::cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: &'static str,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolOnly {
    pub tool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TermLabels {
    pub term: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapLabels {
    pub cap: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: &'static str,
}

/// The one store kind the connector speaks to.
pub const REDIS_STORE: StoreLabels = StoreLabels { store: "redis" };

/// All metrics of the connector, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub tool_calls: Family<ToolLabels, Counter>,
    pub tool_latency: Family<ToolOnly, Histogram>,
    pub backend_errors: Family<ClassLabels, Counter>,
    pub backend_logins: Family<LoginLabels, Counter>,
    pub in_flight: Gauge,
    pub ready: Gauge,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub rate_limited: Family<LimitLabels, Counter>,
    pub rate_limit_store_up: Family<StoreLabels, Gauge>,
    pub rate_limit_shares: Gauge,
    pub rate_limit_store_failures: Family<ReasonLabels, Counter>,
    pub api_key_reloads: Family<OutcomeLabels, Counter>,
    pub jwks_fetches: Family<OutcomeLabels, Counter>,
    pub connections_open: Gauge,
    pub connections_closed: Family<ReasonLabels, Counter>,
    pub requests_refused: Family<ReasonLabels, Counter>,
    pub memory_budget: Family<TermLabels, Gauge>,
    pub caps: Family<CapLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("lumenore_connector");
        registry.register(
            "http2_peer_warnings",
            "Warnings of the HTTP/2 server library about what a peer did (stream reset floods and the \
             like), counted instead of logged",
            crate::telemetry::HTTP2_PEER_WARNINGS.clone(),
        );
        let tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "MCP tool calls by tool and outcome",
            tool_calls.clone(),
        );
        // Every tool and outcome from the start at 0: Prometheus' increase() cannot see a series'
        // first value, so a counter created at its first call would hide the first error of a new
        // pod (a fleet-rollout analysis compares exactly such new pods with old ones).
        for tool in lumenore_contract::ToolName::ALL {
            for outcome in [
                Outcome::success,
                Outcome::validation_error,
                Outcome::error,
                Outcome::cancelled,
            ] {
                tool_calls
                    .get_or_create(&ToolLabels {
                        tool: tool.as_str(),
                        outcome,
                    })
                    .inc_by(0);
            }
        }
        let tool_latency = Family::<ToolOnly, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
        });
        registry.register(
            "tool_call_duration_seconds",
            "Time from tool call to answer, by tool",
            tool_latency.clone(),
        );
        let backend_errors = Family::<ClassLabels, Counter>::default();
        registry.register(
            "backend_errors",
            "Backend failures by class (unauthorized, timeout, unreachable, http_4xx, http_5xx, malformed, too_large, engine)",
            backend_errors.clone(),
        );
        let backend_logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "backend_logins",
            "Client-credential logins to the Lumenore backend by outcome",
            backend_logins.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "tool_calls_in_flight",
            "Tool calls being answered now",
            in_flight.clone(),
        );
        let ready = Gauge::default();
        registry.register("ready", "1 when the backend is usable, else 0", ready.clone());
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "MCP requests refused for want of a valid credential or scope, by reason (missing_credential, unknown_key, revoked_key, malformed_token, disallowed_algorithm, bad_signature, expired, not_yet_valid, wrong_audience, wrong_issuer, missing_claim, unknown_key_id, issuer_unavailable, insufficient_scope)",
            auth_failures.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Tool calls refused over a limit, by limit (caller, tenant, concurrency: HTTP 429; store_unavailable: HTTP 503, the rate-limit store failed and its failure policy is closed)",
            rate_limited.clone(),
        );
        let rate_limit_store_up = Family::<StoreLabels, Gauge>::default();
        registry.register(
            "rate_limit_store_up",
            "1 when the last call to the rate-limit store answered, 0 when it failed; no series without a store",
            rate_limit_store_up.clone(),
        );
        let rate_limit_shares = Gauge::default();
        registry.register(
            "rate_limit_shares",
            "Pods the rate limits are shared by: this pod's own buckets hold each limit divided by this, rounded up",
            rate_limit_shares.clone(),
        );
        let rate_limit_store_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rate_limit_store_failures",
            "Tool calls for which the rate-limit store gave no verdict, by reason (timeout, error; paused: not asked, within 500 ms of a failure); each then follows the failure policy",
            rate_limit_store_failures.clone(),
        );
        let api_key_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "api_key_reloads",
            "Changes of the API keys file, by outcome (success, error)",
            api_key_reloads.clone(),
        );
        let jwks_fetches = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "Fetches of the token issuer's JWKS, by outcome (success, error, throttled)",
            jwks_fetches.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections open now",
            connections_open.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_connections_closed",
            "HTTP connections closed or refused by the server, by reason (silent, header, idle: a timeout ran out; send_stalled: an answer waited longer than the send timeout for the client to take it; evicted: idle longest when the cap was near; over_cap: refused with 503 at the connection cap)",
            connections_closed.clone(),
        );
        let requests_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_requests_refused",
            "MCP requests refused by the body guard, by reason (content_type, too_large, busy: every body permit is held by a request being read or served, body_timeout, body_error, invalid_json_rpc)",
            requests_refused.clone(),
        );
        let memory_budget = Family::<TermLabels, Gauge>::default();
        registry.register(
            "memory_budget_bytes",
            "The memory budget decided at start, by term (limit, usable: the limit less headroom, baseline: resident after the backend loaded, per_connection, connections: their worst case, per_request, requests: their worst case, worst_case: baseline + connections + requests)",
            memory_budget.clone(),
        );
        let caps = Family::<CapLabels, Gauge>::default();
        registry.register(
            "caps",
            "Caps in force after the memory budget and the open-files limit (max_connections, max_concurrent_body_reads)",
            caps.clone(),
        );
        Self {
            registry: Arc::new(registry),
            tool_calls,
            tool_latency,
            backend_errors,
            backend_logins,
            in_flight,
            ready,
            auth_failures,
            rate_limited,
            rate_limit_store_up,
            rate_limit_shares,
            rate_limit_store_failures,
            api_key_reloads,
            jwks_fetches,
            connections_open,
            connections_closed,
            requests_refused,
            memory_budget,
            caps,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_and_outcome_starts_at_zero() {
        let text = Metrics::new().encode();
        let zeros = text
            .lines()
            .filter(|l| l.starts_with("lumenore_connector_tool_calls_total{") && l.ends_with(" 0"))
            .count();
        assert_eq!(zeros, 9 * 4, "{text}");
        assert!(
            text.contains(r#"lumenore_connector_tool_calls_total{tool="get_pareto_data",outcome="error"} 0"#)
        );
    }

    #[test]
    fn encodes_counters_with_fixed_labels() {
        let metrics = Metrics::new();
        metrics
            .tool_calls
            .get_or_create(&ToolLabels {
                tool: "nlq_to_data",
                outcome: Outcome::success,
            })
            .inc();
        metrics
            .backend_errors
            .get_or_create(&ClassLabels { class: "timeout" })
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains(r#"lumenore_connector_tool_calls_total{tool="nlq_to_data",outcome="success"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"lumenore_connector_backend_errors_total{class="timeout"} 1"#));
    }
}
