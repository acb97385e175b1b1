//! DNS-rebinding protection for the operational routes (`/`, `/healthz`, `/readyz`, `/metrics`); `/mcp` is
//! checked by the MCP SDK with the same list.
//!
//! A rebinding page always sends its own host name, so a Host that is an IP literal cannot come from one:
//! it is accepted here, which keeps kubelet probes and Prometheus scrapes (they use the pod IP) working
//! without listing pod IPs. Names must be in `--allowed-hosts`.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// The allowed host names (lower case), each with or without a port.
#[derive(Clone, Debug)]
pub struct AllowedHosts(Arc<[String]>);

impl AllowedHosts {
    pub fn new(hosts: &[String]) -> Self {
        AllowedHosts(
            hosts
                .iter()
                .map(|host| host.trim().to_ascii_lowercase())
                .filter(|host| !host.is_empty())
                .collect(),
        )
    }

    /// Whether `authority` (a Host header value) may reach the operational routes.
    pub fn permits(&self, authority: &str) -> bool {
        let authority = authority.trim().to_ascii_lowercase();
        let (host, _port) = split_port(&authority);
        if host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
        {
            return true;
        }
        self.0.iter().any(|allowed| {
            let (allowed_host, allowed_port) = split_port(allowed);
            match allowed_port {
                // An entry with a port matches that port only; without one, any port.
                Some(_) => *allowed == authority,
                None => {
                    allowed_host.trim_start_matches('[').trim_end_matches(']')
                        == host.trim_start_matches('[').trim_end_matches(']')
                }
            }
        })
    }
}

/// `host[:port]` → (host, port). IPv6 literals keep their brackets; a bare IPv6 address has no port.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.split_once("]:") {
            Some((host, port)) => (&authority[..host.len() + 1], Some(port)),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

/// Middleware: 403 for a Host that is neither an IP literal nor allowed (or missing).
pub async fn check(State(hosts): State<AllowedHosts>, request: Request, next: Next) -> Response {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    match authority {
        Some(authority) if hosts.permits(&authority) => next.run(request).await,
        _ => (
            StatusCode::FORBIDDEN,
            "Forbidden: Host header is not allowed (see --allowed-hosts)",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_listed_and_ip_literals_pass() {
        let hosts = AllowedHosts::new(&["localhost".into(), "svc.ns:8080".into(), "::1".into()]);
        assert!(hosts.permits("localhost"));
        assert!(hosts.permits("LOCALHOST:9000"));
        assert!(hosts.permits("svc.ns:8080"));
        assert!(!hosts.permits("svc.ns:9090"));
        assert!(!hosts.permits("svc.ns"));
        assert!(hosts.permits("10.1.2.3:8080"));
        assert!(hosts.permits("127.0.0.1"));
        assert!(hosts.permits("[::1]:8080"));
        assert!(hosts.permits("[fd00::7]:8080"));
        assert!(!hosts.permits("attacker.example"));
        assert!(!hosts.permits("attacker.example:8080"));
        assert!(!hosts.permits("localhost.attacker.example"));
        assert!(!hosts.permits(""));
    }
}
