//! Configuration: command-line flags, environment variables (the original server's names are kept) and an
//! optional `.env` file. Secrets are read from the environment only (never flags, which `ps` shows) and held
//! in `secrecy` types so `Debug` never prints them.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
use secrecy::SecretString;
use url::Url;

/// Environment variables that carry secrets. They have no flag on purpose.
pub const ENV_CLIENT_ID: &str = "LUMENORE_CLIENT_ID";
pub const ENV_SECRET: &str = "LUMENORE_SECRET";
pub const ENV_API_KEY: &str = "LUMENORE_API_KEY";

const SECRETS_HELP: &str = "\
Credentials for the Lumenore backend (environment or .env only, never flags):
  LUMENORE_CLIENT_ID   client id for the client-credentials login
  LUMENORE_SECRET      client secret for the client-credentials login
  LUMENORE_API_KEY     a static bearer token used instead of the login

Logging: RUST_LOG (default \"info\"). Whatever RUST_LOG says, the MCP SDK and HTTP libraries are capped
so that queries, results and tokens never reach a log line.";

#[derive(Parser, Debug, Clone)]
#[command(
    name = "lumenore-connector",
    version,
    about = "Stateless MCP server (Streamable HTTP) that serves the Lumenore analytics tools",
    after_help = SECRETS_HELP
)]
pub struct Config {
    /// Address and port to listen on. MCP is served at /mcp; /healthz, /readyz, /metrics and / beside it.
    #[arg(long, env = "LUMENORE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where answers come from: the tenant's Lumenore server, or the embedded engine over local datasets.
    #[arg(long, env = "LUMENORE_BACKEND", value_enum, default_value_t = BackendKind::Lumenore)]
    pub backend: BackendKind,

    /// Embedded backend only: a catalog YAML file, or a directory holding catalog.yaml. Without it the
    /// bundled demo catalog (schema ids 35403, 35404, 35405) is served.
    #[arg(long, env = "LUMENORE_CATALOG")]
    pub catalog: Option<PathBuf>,

    /// Base URL of the tenant's Lumenore server.
    #[arg(long, env = "SERVER_URL", default_value = "https://preview.lumenore.com")]
    pub server_url: Url,

    /// Hosts (or host:port) accepted in the Host header of /mcp requests, comma separated. This is the
    /// DNS-rebinding protection: add the names clients use to reach this server.
    #[arg(
        long,
        env = "LUMENORE_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub allowed_hosts: Vec<String>,

    /// Browser origins accepted in the Origin header of /mcp requests, comma separated (scheme://host:port,
    /// ":*" for any port). Empty: requests carrying an Origin header are refused.
    #[arg(long, env = "LUMENORE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Time allowed to open a connection to the backend.
    #[arg(long, env = "LUMENORE_CONNECT_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,

    /// Time allowed for one backend request, body included.
    #[arg(long, env = "LUMENORE_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub request_timeout: Duration,

    /// Retries after a connection error or a 502/503/504 from the backend (exponential backoff, jittered).
    #[arg(long, env = "LUMENORE_MAX_RETRIES", default_value_t = 2)]
    pub max_retries: usize,

    /// Largest number of items kept in any array of a tool result; longer arrays are cut and the result
    /// says "truncated": true.
    #[arg(long, env = "LUMENORE_MAX_RESULT_ROWS", default_value_t = 1000)]
    pub max_result_rows: usize,

    /// Largest size in bytes of a tool result's JSON; larger results are cut and say "truncated": true.
    #[arg(long, env = "LUMENORE_MAX_RESULT_BYTES", default_value_t = 1024 * 1024)]
    pub max_result_bytes: usize,

    /// Largest accepted MCP request body in bytes; larger bodies get HTTP 413.
    #[arg(long, env = "LUMENORE_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Largest backend response body read, in bytes; larger responses are a tool error.
    #[arg(long, env = "LUMENORE_MAX_BACKEND_RESPONSE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_backend_response_bytes: usize,

    /// How often /readyz re-checks the backend credentials while ready (half that while not ready).
    #[arg(long, env = "LUMENORE_READINESS_INTERVAL", value_parser = parse_duration, default_value = "15s")]
    pub readiness_interval: Duration,

    /// On SIGTERM/SIGINT: time given to in-flight calls to finish before the process exits.
    #[arg(long, env = "LUMENORE_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,

    /// Log format on standard error.
    #[arg(long, env = "LUMENORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Forward to the tenant's Lumenore server with client credentials or a static token.
    Lumenore,
    /// Answer from the embedded analytics engine over local datasets (no credentials needed).
    Embedded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How the connector authenticates to the Lumenore backend.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Client-credentials login; the access token comes back as a cookie.
    ClientCredentials {
        client_id: SecretString,
        secret: SecretString,
    },
    /// A static bearer token (LUMENORE_API_KEY); no login.
    StaticToken(SecretString),
    /// Nothing configured: every backend call fails with a clear message and /readyz says why.
    Missing,
}

impl Credentials {
    /// Reads the credentials from the process environment (after `.env` was loaded).
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The pure part of [`Credentials::from_env`]: a static token wins over a client id and secret, blank
    /// values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        if let Some(token) = get(ENV_API_KEY) {
            return Credentials::StaticToken(SecretString::from(token));
        }
        match (get(ENV_CLIENT_ID), get(ENV_SECRET)) {
            (Some(client_id), Some(secret)) => Credentials::ClientCredentials {
                client_id: SecretString::from(client_id),
                secret: SecretString::from(secret),
            },
            _ => Credentials::Missing,
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Credentials::ClientCredentials { .. } => "client credentials",
            Credentials::StaticToken(_) => "static token",
            Credentials::Missing => "none",
        }
    }
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|error| format!("{error} (examples: 500ms, 10s, 2m)"))
}

impl Config {
    /// Parses flags and environment. `.env` must already be loaded (see `main`).
    pub fn from_args() -> Self {
        Config::parse()
    }

    /// Checks the rules flags alone cannot express, naming the option and the rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_result_rows == 0 {
            return Err("--max-result-rows (LUMENORE_MAX_RESULT_ROWS) must be at least 1".into());
        }
        if self.max_result_bytes < 1024 {
            return Err("--max-result-bytes (LUMENORE_MAX_RESULT_BYTES) must be at least 1024".into());
        }
        if !matches!(self.server_url.scheme(), "https" | "http") {
            return Err("--server-url (SERVER_URL) must be an http or https URL".into());
        }
        if self.allowed_hosts.iter().any(|host| host.trim().is_empty()) {
            return Err("--allowed-hosts (LUMENORE_ALLOWED_HOSTS) must not contain empty entries".into());
        }
        Ok(())
    }

    /// A configuration for tests and benchmarks: defaults, as if no flag or variable were set.
    pub fn defaults() -> Self {
        Config::parse_from(["lumenore-connector"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn static_token_wins_over_client_credentials() {
        let creds = Credentials::from_lookup(env(&[
            (ENV_API_KEY, "tok"),
            (ENV_CLIENT_ID, "id"),
            (ENV_SECRET, "s"),
        ]));
        assert!(matches!(creds, Credentials::StaticToken(ref t) if t.expose_secret() == "tok"));
    }

    #[test]
    fn client_credentials_need_both_values() {
        assert!(matches!(
            Credentials::from_lookup(env(&[(ENV_CLIENT_ID, "id")])),
            Credentials::Missing
        ));
        assert!(matches!(
            Credentials::from_lookup(env(&[(ENV_CLIENT_ID, "id"), (ENV_SECRET, "  ")])),
            Credentials::Missing
        ));
        assert!(matches!(
            Credentials::from_lookup(env(&[(ENV_CLIENT_ID, "id"), (ENV_SECRET, "s")])),
            Credentials::ClientCredentials { .. }
        ));
    }

    #[test]
    fn debug_never_prints_secrets() {
        let creds = Credentials::ClientCredentials {
            client_id: SecretString::from("canary-client-id"),
            secret: SecretString::from("canary-secret"),
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("canary"), "{shown}");
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = Config::defaults();
        config.validate().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.server_url.as_str(), "https://preview.lumenore.com/");
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.request_timeout, Duration::from_secs(60));
    }

    #[test]
    fn validation_names_the_option() {
        let mut config = Config::defaults();
        config.max_result_rows = 0;
        assert!(config.validate().unwrap_err().contains("--max-result-rows"));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
