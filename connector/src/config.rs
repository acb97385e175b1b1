//! Configuration: command-line flags, environment variables (the original server's names are kept) and an
//! optional `.env` file. The backend credentials are not settings: they are read from the environment only
//! (never flags, which `ps` shows) by the backend that uses them, which holds them in `secrecy` types
//! (`backend::lumenore::credentials`).

use std::{net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use url::Url;

use crate::{
    auth::{
        http::AuthSettings,
        limits::{LimitSettings, StoreSettings},
        oauth::OAuthSettings,
    },
    budget::MemoryLimitSetting,
    http::HttpSettings,
};

/// Log settings live with the logging; re-exported where the flags are.
pub use crate::telemetry::LogFormat;

/// Environment variable names are the fleet's contract (`lumenore-contract`): the operator sets the same
/// constants on connector pods.
pub use lumenore_contract::env;

/// Environment variables that carry secrets. They have no flag on purpose. Only their names live here: the
/// backend reads them and holds the values (`backend::lumenore::Credentials`).
pub const ENV_CLIENT_ID: &str = env::CLIENT_ID;
pub const ENV_SECRET: &str = env::SECRET;
pub const ENV_API_KEY: &str = env::API_KEY;

const SECRETS_HELP: &str = "\
Credentials for the Lumenore backend (environment or .env only, never flags):
  LUMENORE_CLIENT_ID   client id for the client-credentials login
  LUMENORE_SECRET      client secret for the client-credentials login
  LUMENORE_API_KEY     a static key used instead of the login, sent as the whole Authorization value
The rate-limit store's password (--rate-limit-store), the same way:
  LUMENORE_RATE_LIMIT_STORE_PASSWORD

Caller authentication (see docs/auth.md): --auth-mode none is only allowed on a loopback listen address
unless --allow-unauthenticated is set. Make an API key and its hash with `lumenore-connector hash-key`.

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
    #[arg(long, env = env::LISTEN, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where answers come from: the tenant's Lumenore server, or the embedded engine over local datasets.
    #[arg(long, env = env::BACKEND, value_enum, default_value_t = BackendKind::Lumenore)]
    pub backend: BackendKind,

    /// Embedded backend only: a catalog YAML file, or a directory holding catalog.yaml. Without it the
    /// bundled demo catalog (schema ids 35403, 35404, 35405) is served.
    #[arg(long, env = env::CATALOG)]
    pub catalog: Option<PathBuf>,

    /// Base URL of the tenant's Lumenore server.
    #[arg(long, env = env::SERVER_URL, default_value = "https://preview.lumenore.com")]
    pub server_url: Url,

    /// Hosts (or host:port) accepted in the Host header of /mcp requests, comma separated. This is the
    /// DNS-rebinding protection: add the names clients use to reach this server.
    #[arg(
        long,
        env = env::ALLOWED_HOSTS,
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1"
    )]
    pub allowed_hosts: Vec<String>,

    /// Browser origins accepted in the Origin header of /mcp requests, comma separated (scheme://host:port,
    /// ":*" for any port). The default accepts pages served from this machine only, like the default hosts.
    /// An empty value ("") refuses every request that carries an Origin header.
    #[arg(
        long,
        env = env::ALLOWED_ORIGINS,
        value_delimiter = ',',
        default_value = "http://localhost:*,http://127.0.0.1:*,http://[::1]:*"
    )]
    pub allowed_origins: Vec<String>,

    // --- Lumenore backend client. The original server's CONNECT_TIMEOUT, REQUEST_TIMEOUT and TOTAL_TIMEOUT
    // are accepted too (in seconds, or with a unit) when ours are not set: see `Config::from_args`. ---
    /// Time allowed to open a connection to the backend (also read from CONNECT_TIMEOUT).
    #[arg(long, env = env::CONNECT_TIMEOUT, value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,

    /// Time the backend may stay silent: waiting for its answer to start, and between two parts of a
    /// streamed answer (also read from REQUEST_TIMEOUT, as the original server used it).
    #[arg(long, env = env::REQUEST_TIMEOUT, value_parser = parse_duration, default_value = "60s")]
    pub request_timeout: Duration,

    /// Time allowed for a whole backend request, streamed body included (also read from TOTAL_TIMEOUT).
    #[arg(long, env = env::TOTAL_TIMEOUT, value_parser = parse_duration, default_value = "300s")]
    pub total_timeout: Duration,

    /// Retries after a connection error or a 502/503/504 from the backend (exponential backoff, jittered).
    #[arg(long, env = env::MAX_RETRIES, default_value_t = 2)]
    pub max_retries: usize,

    /// After a failed login, or a token refused right after its login: how long the connector answers
    /// with that failure instead of logging in again (0s logs in again at once).
    #[arg(long, env = env::LOGIN_BACKOFF, value_parser = parse_duration, default_value = "10s")]
    pub login_backoff: Duration,

    /// What /readyz checks on the backend every --readiness-interval: full (a login when no token is held,
    /// then an authenticated get-domain call) or login (only that a token is held or can be had: no data
    /// request, a login only when no token is held).
    #[arg(long, env = env::READINESS_CHECK, value_enum, default_value_t = ReadinessCheck::Full)]
    pub readiness_check: ReadinessCheck,

    /// Idle connections to the backend kept open for reuse.
    #[arg(long, env = env::BACKEND_POOL_MAX_IDLE, default_value_t = 16)]
    pub backend_pool_max_idle: usize,

    /// How long an idle backend connection is kept before it is closed.
    #[arg(long, env = env::BACKEND_POOL_IDLE_TIMEOUT, value_parser = parse_duration, default_value = "30s")]
    pub backend_pool_idle_timeout: Duration,

    /// A bad value of the original server's timeout variables, reported by `validate`.
    #[arg(skip)]
    pub original_names_error: Option<String>,
    // --- end of the Lumenore backend client ---
    /// Largest number of items kept in any array of a tool result; longer arrays are cut and the result
    /// says "truncated": true.
    #[arg(long, env = env::MAX_RESULT_ROWS, default_value_t = 1000)]
    pub max_result_rows: usize,

    /// Largest size in bytes of a tool result's JSON; larger results are cut and say "truncated": true.
    #[arg(long, env = env::MAX_RESULT_BYTES, default_value_t = 1024 * 1024)]
    pub max_result_bytes: usize,

    // --- HTTP server: request bodies, timeouts, connection limits (see `crate::http`) ---
    /// Largest accepted MCP request body in bytes; larger bodies get HTTP 413 (a larger declared
    /// Content-Length at once, before any of the body is read). The default holds the largest tool call
    /// (a 5,000-character question, every character escaped) with room for the envelope.
    #[arg(long, env = env::MAX_REQUEST_BYTES, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,

    /// Time a client has to send a request head: from the connection's opening for its first request, and
    /// from the first byte of each later one. Slow or silent clients are disconnected.
    #[arg(long, env = env::HEADER_READ_TIMEOUT, value_parser = parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// Time a client has to send an MCP request body once its head was read; a slower one gets HTTP 408.
    #[arg(long, env = env::BODY_READ_TIMEOUT, value_parser = parse_duration, default_value = "30s")]
    pub body_read_timeout: Duration,

    /// Time a kept-alive connection may wait for its next request before it is closed. Keep it above the
    /// idle timeout of a load balancer in front (60 s on most).
    #[arg(long, env = env::IDLE_TIMEOUT, value_parser = parse_duration, default_value = "75s")]
    pub idle_timeout: Duration,

    /// Time an answer may wait for the client to accept any of its bytes (an HTTP/2 flow-control window
    /// kept at zero, or a socket the client does not read); then the connection is closed (HTTP/2 with
    /// GOAWAY). Also the time an HTTP/2 client has to answer a keep-alive PING.
    #[arg(long, env = env::SEND_TIMEOUT, value_parser = parse_duration, default_value = "20s")]
    pub send_timeout: Duration,

    /// Interval of HTTP/2 keep-alive PINGs on each connection (0s: none).
    #[arg(long, env = env::HTTP2_KEEP_ALIVE_INTERVAL, value_parser = parse_duration, default_value = "30s")]
    pub http2_keep_alive_interval: Duration,

    /// HTTP connections open at once. Near the cap the connection idle longest is closed to make room;
    /// over it a new one is answered 503 and closed. Kept below the open-files limit (raised to its hard
    /// limit at start): a larger value is lowered, with a warning.
    #[arg(long, env = env::MAX_CONNECTIONS, default_value_t = 2048)]
    pub max_connections: usize,

    /// MCP requests with a body being received or served at once (after authentication); one more is
    /// answered 503 with Retry-After. Each holds its body and parsed message until its call is done, so
    /// with the body limit this bounds the memory requests can hold.
    #[arg(long, env = env::MAX_CONCURRENT_BODY_READS, default_value_t = 64)]
    pub max_concurrent_body_reads: usize,

    /// HTTP connections open at once from one client address (an IPv6 client by its /64 network); one
    /// more closes that client's own longest-idle connection to make room, or is answered 503 like one over
    /// --max-connections. 0: a quarter of --max-connections (as lowered at start), at least 8; at most
    /// --max-connections. Behind a proxy or ingress every client arrives from the proxy's address: raise it
    /// to --max-connections there.
    #[arg(long, env = env::MAX_CONNECTIONS_PER_PEER, default_value_t = 0)]
    pub max_connections_per_peer: usize,

    /// Of --max-concurrent-body-reads, how many one caller may hold (the API key id or token subject; with
    /// --auth-mode none, the client address, so behind a proxy every caller is one); one more is answered
    /// 503 with Retry-After. 0: a quarter of --max-concurrent-body-reads, at least 2.
    #[arg(long, env = env::MAX_BODY_READS_PER_CALLER, default_value_t = 0)]
    pub max_body_reads_per_caller: usize,

    /// Of --max-concurrent-body-reads, how many one connection may hold (HTTP/2 streams); one more is
    /// answered 503 with Retry-After. 0: a quarter of --max-concurrent-body-reads, at least 2.
    #[arg(long, env = env::MAX_BODY_READS_PER_CONNECTION, default_value_t = 0)]
    pub max_body_reads_per_connection: usize,

    /// Slowest MCP request body accepted, in bytes per second: 5 s after a body began, and from then on, a
    /// body that has received fewer bytes than this rate times the seconds since it began is answered 408.
    /// 0: off (--body-read-timeout alone bounds a body).
    #[arg(long, env = env::MIN_BODY_RATE, default_value_t = 1024)]
    pub min_body_rate: u64,
    // --- end of the HTTP server block ---
    /// Largest backend response body read, in bytes; larger responses are a tool error.
    #[arg(long, env = env::MAX_BACKEND_RESPONSE_BYTES, default_value_t = 32 * 1024 * 1024)]
    pub max_backend_response_bytes: usize,

    /// How often /readyz re-checks the backend credentials while ready (half that while not ready).
    #[arg(long, env = env::READINESS_INTERVAL, value_parser = parse_duration, default_value = "15s")]
    pub readiness_interval: Duration,

    /// On SIGTERM/SIGINT: time given to in-flight calls to finish before the process exits.
    #[arg(long, env = env::SHUTDOWN_GRACE, value_parser = parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,

    /// Log format on standard error.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How MCP callers authenticate: none (anyone who reaches the port), api-keys (hashed keys in
    /// --api-keys-file) or oauth (JWT access tokens from --oauth-issuer).
    #[arg(long, env = env::AUTH_MODE, value_enum, default_value_t = AuthMode::None)]
    pub auth_mode: AuthMode,

    /// With --auth-mode none, serve on a non-loopback address anyway (a warning is logged at start).
    #[arg(long, env = env::ALLOW_UNAUTHENTICATED)]
    pub allow_unauthenticated: bool,

    /// --auth-mode api-keys: the keys file (YAML or JSON: id, sha256 hash and tools of each key). It is
    /// re-read when it changes; an invalid new version keeps the last good keys.
    #[arg(long, env = env::API_KEYS_FILE)]
    pub api_keys_file: Option<PathBuf>,

    /// --auth-mode api-keys: how often the keys file is checked for changes.
    #[arg(long, env = env::API_KEYS_RELOAD_INTERVAL, value_parser = parse_duration, default_value = "2s")]
    pub api_keys_reload_interval: Duration,

    /// --auth-mode oauth: the token issuer, compared exactly with the tokens' `iss` claim.
    #[arg(long, env = env::OAUTH_ISSUER)]
    pub oauth_issuer: Option<String>,

    /// --auth-mode oauth: the audience the tokens' `aud` claim must name. Default: --public-url.
    #[arg(long, env = env::OAUTH_AUDIENCE)]
    pub oauth_audience: Option<String>,

    /// --auth-mode oauth: the issuer's JWKS URL. Default: discovered from the issuer's
    /// /.well-known/openid-configuration or /.well-known/oauth-authorization-server metadata.
    #[arg(long, env = env::OAUTH_JWKS_URL)]
    pub oauth_jwks_url: Option<Url>,

    /// This connector's public MCP URL, e.g. https://mcp.example.com/mcp: the OAuth audience by default,
    /// and the `resource` of the protected-resource metadata. Required with --auth-mode oauth.
    #[arg(long, env = env::PUBLIC_URL)]
    pub public_url: Option<String>,

    /// Tool calls and `resources/read` requests per minute allowed to one caller (API key id or token
    /// subject); unset is unlimited.
    #[arg(long, env = env::RATE_LIMIT_CALLER_PER_MINUTE)]
    pub rate_limit_caller_per_minute: Option<NonZeroU32>,

    /// Tool calls and `resources/read` requests per minute allowed to this pod as a whole (one pod serves
    /// one tenant); unset is unlimited.
    #[arg(long, env = env::RATE_LIMIT_TENANT_PER_MINUTE)]
    pub rate_limit_tenant_per_minute: Option<NonZeroU32>,

    /// Pods that share the rate limits above (the tenant's replicas): each pod's own buckets hold the limits
    /// divided by this, rounded up. With a store they are the fallback when the store fails.
    #[arg(long, env = env::RATE_LIMIT_SHARES, default_value = "1")]
    pub rate_limit_shares: NonZeroU32,

    /// A file holding the number of pods that share the rate limits (the operator's ConfigMap, which
    /// follows the tenant's ready replicas), re-read every 2 s without a restart. While it is missing or
    /// unreadable the last good value (at first --rate-limit-shares) stays in force.
    #[arg(long, env = env::RATE_LIMIT_SHARES_FILE)]
    pub rate_limit_shares_file: Option<PathBuf>,

    /// A Redis server that keeps the rate limits for every replica of the tenant: `redis://host:port[/db]`,
    /// or `rediss://` for TLS. One atomic script per tool call; the pod's own buckets are then only the
    /// fallback. No password in the URL: it is read from LUMENORE_RATE_LIMIT_STORE_PASSWORD only.
    // A String, checked by `store_settings`: clap would print a value it cannot parse, and a URL may
    // carry a password by mistake.
    #[arg(long, env = env::RATE_LIMIT_STORE)]
    pub rate_limit_store: Option<String>,

    /// The store's ACL user name (Redis 6+); unset uses the default user.
    #[arg(long, env = env::RATE_LIMIT_STORE_USERNAME)]
    pub rate_limit_store_username: Option<String>,

    /// PEM file of the certificate authorities that sign a `rediss://` store's certificate, instead of the
    /// system roots.
    #[arg(long, env = env::RATE_LIMIT_STORE_CA_FILE)]
    pub rate_limit_store_ca_file: Option<PathBuf>,

    /// The longest a tool call waits for the store's answer; past it the store counts as failed for that
    /// call (see --rate-limit-store-failure).
    #[arg(long, env = env::RATE_LIMIT_STORE_TIMEOUT, value_parser = parse_duration, default_value = "50ms")]
    pub rate_limit_store_timeout: Duration,

    /// What a tool call gets when the store fails or is slow: `open` admits it by this pod's own buckets
    /// (the limits divided by --rate-limit-shares), `closed` answers 503 with Retry-After.
    #[arg(long, env = env::RATE_LIMIT_STORE_FAILURE, value_enum, default_value = "open")]
    pub rate_limit_store_failure: StoreFailure,

    /// The tenant whose limits these are: the store's keys are scoped by it, so tenants sharing one store
    /// never share a bucket. The operator sets `<namespace>/<name>`.
    #[arg(long, env = env::RATE_LIMIT_STORE_SCOPE, default_value = "default")]
    pub rate_limit_store_scope: String,

    /// Tool calls and `resources/read` requests running at once in this pod; one more is answered 429 at
    /// once. Each call holds at most
    /// about --max-result-bytes of parsed answer, so this bounds the memory answers can take.
    #[arg(long, env = env::MAX_CONCURRENT_BACKEND_CALLS, default_value = "64")]
    pub max_concurrent_backend_calls: Option<NonZeroU32>,

    /// The memory limit the caps must fit in: `auto` (the cgroup's, v2 or v1), `none`, or a size (`256Mi`,
    /// bytes as the Downward API gives `limits.memory`). At start the worst case of the caps (baseline +
    /// connections × per-connection buffers + body reads × what a request holds) is printed and checked:
    /// --max-connections and --max-concurrent-body-reads left at their defaults are lowered to fit, and
    /// explicit values that do not fit stop the connector with the figures (see docs/hardening.md).
    #[arg(long, env = env::MEMORY_LIMIT, default_value = "auto")]
    pub memory_limit: MemoryLimitSetting,

    /// Which caps were set explicitly (flag or environment) rather than left at their defaults: only
    /// defaults are derived from the memory limit.
    #[arg(skip)]
    pub explicit: ExplicitCaps,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Caps set explicitly, kept as they are by the memory budget (`crate::budget`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExplicitCaps {
    pub max_connections: bool,
    pub max_concurrent_body_reads: bool,
}

/// Largest accepted request body by default: the largest tool call, a question of
/// [`MAX_QUERY_CHARS`](crate::tools::validate::MAX_QUERY_CHARS) characters each written as the 12-byte
/// JSON escape of a surrogate pair (`\ud83d\ude00`), plus 4 KiB for the envelope and `_meta`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = crate::tools::validate::MAX_QUERY_CHARS * 12 + 4096;

/// Commands other than serving.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Make a new random API key and print it with its entry for the keys file (or, with --stdin, print
    /// the hash of a key read from standard input).
    HashKey {
        /// The key's id in the entry printed (caller id in audit events and rate limits).
        #[arg(long, default_value = "new-key")]
        id: String,
        /// Hash the key given on standard input instead of making one.
        #[arg(long)]
        stdin: bool,
    },
}

pub use crate::auth::limits::StoreFailure;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No caller authentication.
    None,
    /// API keys from a file of hashes.
    ApiKeys,
    /// OAuth 2.1 JWT access tokens.
    Oauth,
}

/// The refusal of `--backend embedded` by a connector built without its `embedded` feature.
pub const EMBEDDED_NOT_BUILT: &str = "--backend (LUMENORE_BACKEND) embedded: this connector was built without \
the embedded analytics engine (cargo feature `embedded`, on by default); use --backend lumenore, or a build \
with the feature";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// Forward to the tenant's Lumenore server with client credentials or a static token.
    Lumenore,
    /// Answer from the embedded analytics engine over local datasets (no credentials needed).
    Embedded,
}

/// What the readiness check asks of the Lumenore backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadinessCheck {
    /// A login when no token is held, then an authenticated get-domain call.
    Full,
    /// Only that a token is held or can be had by logging in.
    Login,
}

/// Token issuers are reached over https; plain http only on loopback (local tests and development).
fn require_https(option: &str, url: &Url) -> Result<(), String> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{option} must be an https URL (http only for loopback addresses)"
        )),
    }
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|error| format!("{error} (examples: 500ms, 10s, 2m)"))
}

/// The original server's timeout variables: seconds (`60`, `2.5`), or a duration with a unit (`60s`).
fn parse_seconds_or_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    match value.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Duration::from_secs_f64(seconds)),
        Ok(_) => Err("must be a number of seconds of at least 0".into()),
        Err(_) => parse_duration(value),
    }
}

/// The original server's timeout variables and the options they stand for.
pub const ORIGINAL_TIMEOUT_NAMES: [(&str, &str); 3] = [
    ("connect_timeout", env::ORIGINAL_CONNECT_TIMEOUT),
    ("request_timeout", env::ORIGINAL_REQUEST_TIMEOUT),
    ("total_timeout", env::ORIGINAL_TOTAL_TIMEOUT),
];

impl Config {
    /// Parses flags and environment. `.env` must already be loaded (see `main`).
    pub fn from_args() -> Self {
        match Self::parse_with_env(std::env::args_os(), |name| std::env::var(name).ok()) {
            Ok(config) => config,
            Err(error) => error.exit(),
        }
    }

    /// Parses `args` (and the process environment, through clap), then applies the original server's
    /// timeout variables read with `lookup` to the options that were left at their defaults.
    pub fn parse_with_env<I, T>(args: I, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
        let matches = Config::command().try_get_matches_from(args)?;
        let mut config = Config::from_arg_matches(&matches)?;
        let explicit = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        config.explicit = ExplicitCaps {
            max_connections: explicit("max_connections"),
            max_concurrent_body_reads: explicit("max_concurrent_body_reads"),
        };
        for (id, name) in ORIGINAL_TIMEOUT_NAMES {
            if matches.value_source(id) != Some(ValueSource::DefaultValue) {
                continue;
            }
            let Some(value) = lookup(name).filter(|value| !value.trim().is_empty()) else {
                continue;
            };
            match parse_seconds_or_duration(&value) {
                Ok(duration) => match id {
                    "connect_timeout" => config.connect_timeout = duration,
                    "request_timeout" => config.request_timeout = duration,
                    _ => config.total_timeout = duration,
                },
                Err(rule) => {
                    config
                        .original_names_error
                        .get_or_insert(format!("{name}: {rule}"));
                }
            }
        }
        Ok(config)
    }

    /// Checks the rules flags alone cannot express, naming the option and the rule.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(error) = &self.original_names_error {
            return Err(error.clone());
        }
        if self.backend == BackendKind::Embedded && !cfg!(feature = "embedded") {
            return Err(EMBEDDED_NOT_BUILT.into());
        }
        for (option, value) in [
            (
                "--connect-timeout (LUMENORE_CONNECT_TIMEOUT)",
                self.connect_timeout,
            ),
            (
                "--request-timeout (LUMENORE_REQUEST_TIMEOUT)",
                self.request_timeout,
            ),
            ("--total-timeout (LUMENORE_TOTAL_TIMEOUT)", self.total_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{option} must be positive"));
            }
        }
        if self.max_result_rows == 0 {
            return Err("--max-result-rows (LUMENORE_MAX_RESULT_ROWS) must be at least 1".into());
        }
        if self.max_result_bytes < 1024 {
            return Err("--max-result-bytes (LUMENORE_MAX_RESULT_BYTES) must be at least 1024".into());
        }
        if !matches!(self.server_url.scheme(), "https" | "http") {
            return Err("--server-url (SERVER_URL) must be an http or https URL".into());
        }
        for (option, value) in [
            (
                "--header-read-timeout (LUMENORE_HEADER_READ_TIMEOUT)",
                self.header_read_timeout,
            ),
            (
                "--body-read-timeout (LUMENORE_BODY_READ_TIMEOUT)",
                self.body_read_timeout,
            ),
            ("--idle-timeout (LUMENORE_IDLE_TIMEOUT)", self.idle_timeout),
            ("--send-timeout (LUMENORE_SEND_TIMEOUT)", self.send_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{option} must be positive"));
            }
        }
        if self.max_connections == 0 {
            return Err("--max-connections (LUMENORE_MAX_CONNECTIONS) must be at least 1".into());
        }
        if self.max_concurrent_body_reads == 0 {
            return Err(
                "--max-concurrent-body-reads (LUMENORE_MAX_CONCURRENT_BODY_READS) must be at least 1".into(),
            );
        }
        if self.allowed_hosts.iter().any(|host| host.trim().is_empty()) {
            return Err("--allowed-hosts (LUMENORE_ALLOWED_HOSTS) must not contain empty entries".into());
        }
        self.store_settings()?;
        self.auth_settings().map(|_| ())
    }

    /// The HTTP server's limits and timeouts.
    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            idle_timeout: self.idle_timeout,
            send_timeout: self.send_timeout,
            http2_keep_alive_interval: self.http2_keep_alive_interval,
            max_connections: self.max_connections,
            max_concurrent_body_reads: self.max_concurrent_body_reads,
            max_connections_per_peer: self.max_connections_per_peer,
            max_body_reads_per_caller: self.max_body_reads_per_caller,
            max_body_reads_per_connection: self.max_body_reads_per_connection,
            min_body_rate: self.min_body_rate,
            max_request_bytes: self.max_request_bytes,
        }
    }

    /// The rate limits and concurrency cap.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            caller_per_minute: self.rate_limit_caller_per_minute,
            tenant_per_minute: self.rate_limit_tenant_per_minute,
            max_concurrent_backend_calls: self.max_concurrent_backend_calls,
            shares: self.rate_limit_shares,
            shares_file: self.rate_limit_shares_file.clone(),
        }
    }

    /// The rate-limit store, when one is named: checked (scheme, no password in the URL, a scope), with
    /// its password from the environment.
    pub fn store_settings(&self) -> Result<Option<StoreSettings>, String> {
        let Some(text) = &self.rate_limit_store else {
            return Ok(None);
        };
        // The error names the rule, never the value (it may hold a password).
        let url = Url::parse(text.trim()).map_err(|error| {
            format!(
                "--rate-limit-store ({}) is not a URL ({error}): expected redis://host:port[/db] or rediss://…",
                env::RATE_LIMIT_STORE
            )
        })?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(format!(
                "--rate-limit-store ({}) must be a redis:// or rediss:// URL, not {}://",
                env::RATE_LIMIT_STORE,
                url.scheme()
            ));
        }
        if url.password().is_some() || !url.username().is_empty() {
            return Err(format!(
                "--rate-limit-store ({}) must not carry a user or password: set {} and {} instead",
                env::RATE_LIMIT_STORE,
                env::RATE_LIMIT_STORE_USERNAME,
                env::RATE_LIMIT_STORE_PASSWORD
            ));
        }
        let db_path = url.path().trim_start_matches('/');
        if url.query().is_some()
            || url.fragment().is_some()
            || !(db_path.is_empty() || db_path.len() <= 2 && db_path.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "--rate-limit-store ({}) must be redis://host:port[/db] or rediss://…, with no query or fragment",
                env::RATE_LIMIT_STORE
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "--rate-limit-store ({}) must name a host",
                env::RATE_LIMIT_STORE
            ));
        }
        if self.rate_limit_store_ca_file.is_some() && url.scheme() != "rediss" {
            return Err(format!(
                "--rate-limit-store-ca-file ({}) needs a rediss:// store",
                env::RATE_LIMIT_STORE_CA_FILE
            ));
        }
        if self.rate_limit_store_timeout.is_zero() {
            return Err(format!(
                "--rate-limit-store-timeout ({}) must be positive",
                env::RATE_LIMIT_STORE_TIMEOUT
            ));
        }
        let scope = self.rate_limit_store_scope.trim();
        if scope.is_empty()
            || scope.len() > 253
            || scope.chars().any(|c| c.is_control() || c == '{' || c == '}')
        {
            return Err(format!(
                "--rate-limit-store-scope ({}) must be 1 to 253 printable characters without braces",
                env::RATE_LIMIT_STORE_SCOPE
            ));
        }
        let password = std::env::var(env::RATE_LIMIT_STORE_PASSWORD)
            .ok()
            .filter(|value| !value.is_empty())
            .map(secrecy::SecretString::from);
        Ok(Some(StoreSettings {
            url,
            username: self
                .rate_limit_store_username
                .clone()
                .filter(|name| !name.is_empty()),
            password,
            ca_file: self.rate_limit_store_ca_file.clone(),
            timeout: self.rate_limit_store_timeout,
            failure: self.rate_limit_store_failure,
            scope: scope.to_string(),
        }))
    }

    /// The caller authentication settings, checked: mode none only on loopback (or with the explicit
    /// flag), the keys file for api-keys, issuer and public URL for oauth.
    pub fn auth_settings(&self) -> Result<AuthSettings, String> {
        match self.auth_mode {
            AuthMode::None => {
                if !self.listen.ip().is_loopback() && !self.allow_unauthenticated {
                    return Err(format!(
                        "--auth-mode none (LUMENORE_AUTH_MODE) would serve any caller on {}, which is not a \
                         loopback address: choose --auth-mode api-keys or oauth, listen on 127.0.0.1, or set \
                         --allow-unauthenticated (LUMENORE_ALLOW_UNAUTHENTICATED=true)",
                        self.listen
                    ));
                }
                Ok(AuthSettings::None)
            }
            AuthMode::ApiKeys => {
                let file = self
                    .api_keys_file
                    .clone()
                    .ok_or("--auth-mode api-keys needs --api-keys-file (LUMENORE_API_KEYS_FILE)")?;
                if self.api_keys_reload_interval.is_zero() {
                    return Err(
                        "--api-keys-reload-interval (LUMENORE_API_KEYS_RELOAD_INTERVAL) must be positive"
                            .into(),
                    );
                }
                Ok(AuthSettings::ApiKeys {
                    file,
                    reload_interval: self.api_keys_reload_interval,
                })
            }
            AuthMode::Oauth => {
                let issuer = self
                    .oauth_issuer
                    .clone()
                    .filter(|issuer| !issuer.trim().is_empty())
                    .ok_or("--auth-mode oauth needs --oauth-issuer (LUMENORE_OAUTH_ISSUER)")?;
                let issuer_url = Url::parse(&issuer)
                    .map_err(|_| "--oauth-issuer (LUMENORE_OAUTH_ISSUER) must be a URL".to_string())?;
                require_https("--oauth-issuer (LUMENORE_OAUTH_ISSUER)", &issuer_url)?;
                if let Some(jwks) = &self.oauth_jwks_url {
                    require_https("--oauth-jwks-url (LUMENORE_OAUTH_JWKS_URL)", jwks)?;
                }
                let public = self
                    .public_url
                    .clone()
                    .map(|url| url.trim().to_string())
                    .filter(|url| !url.is_empty())
                    .ok_or(
                        "--auth-mode oauth needs --public-url (LUMENORE_PUBLIC_URL), the URL callers use to reach /mcp",
                    )?;
                let public_url = Url::parse(&public)
                    .ok()
                    .filter(|url| matches!(url.scheme(), "https" | "http"))
                    .ok_or("--public-url (LUMENORE_PUBLIC_URL) must be an http or https URL")?;
                // The audience is compared as an exact string, so the default is the URL as written.
                let audience = self
                    .oauth_audience
                    .clone()
                    .filter(|audience| !audience.trim().is_empty())
                    .unwrap_or(public);
                Ok(AuthSettings::OAuth {
                    settings: Box::new(OAuthSettings::new(issuer, audience, self.oauth_jwks_url.clone())),
                    public_url: Box::new(public_url),
                })
            }
        }
    }

    /// A configuration for tests and benchmarks: defaults, as if no flag or variable were set.
    pub fn defaults() -> Self {
        Config::parse_from(["lumenore-connector"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::env;

    #[test]
    fn the_embedded_backend_is_accepted_exactly_when_built_in() {
        let mut config = Config::defaults();
        config.backend = BackendKind::Embedded;
        if cfg!(feature = "embedded") {
            config.validate().unwrap();
        } else {
            assert_eq!(config.validate(), Err(EMBEDDED_NOT_BUILT.to_string()));
        }
    }

    #[test]
    fn the_command_line_reads_exactly_the_contracts_settings() {
        // The operator sets only names the contract accepts; this holds the contract to what clap reads.
        use clap::CommandFactory;
        let read: std::collections::BTreeSet<String> = Config::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        let contract: std::collections::BTreeSet<String> = lumenore_contract::env::SETTINGS
            .iter()
            .map(|name| name.to_string())
            .collect();
        assert_eq!(read, contract);
        for credential in lumenore_contract::env::CREDENTIALS {
            assert!(!read.contains(credential), "{credential} must have no flag");
        }
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = Config::defaults();
        config.validate().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.server_url.as_str(), "https://preview.lumenore.com/");
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.request_timeout, Duration::from_secs(60));
        let http = config.http_settings();
        assert_eq!(http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(http.body_read_timeout, Duration::from_secs(30));
        assert_eq!(http.idle_timeout, Duration::from_secs(75));
        assert_eq!(http.max_connections, 2048);
        assert_eq!(http.max_concurrent_body_reads, 64);
    }

    #[test]
    fn validation_names_the_option() {
        let mut config = Config::defaults();
        config.max_result_rows = 0;
        assert!(config.validate().unwrap_err().contains("--max-result-rows"));
        let error = parse(&["--idle-timeout", "0s"]).validate().unwrap_err();
        assert!(error.contains("--idle-timeout"), "{error}");
        let error = parse(&["--max-connections", "0"]).validate().unwrap_err();
        assert!(error.contains("--max-connections"), "{error}");
    }

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["lumenore-connector"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn a_rate_limit_store_is_checked_and_its_password_is_no_flag() {
        assert!(parse(&[]).store_settings().unwrap().is_none());
        for good in [
            "redis://10.0.0.7",
            "rediss://redis.platform.svc:6380/",
            "redis://[::1]:6379/15",
        ] {
            assert!(
                parse(&["--rate-limit-store", good]).store_settings().is_ok(),
                "{good}"
            );
        }
        let store = parse(&["--rate-limit-store", "redis://redis.platform.svc:6379/2"])
            .store_settings()
            .unwrap()
            .unwrap();
        assert_eq!(store.failure, StoreFailure::Open);
        assert_eq!(store.timeout, Duration::from_millis(50));
        assert_eq!(store.scope, "default");
        for (args, named) in [
            (
                vec!["--rate-limit-store", "http://redis:6379"],
                "redis:// or rediss://",
            ),
            (
                vec!["--rate-limit-store", "redis://:hunter2@redis:6379"],
                "must not carry a user or password",
            ),
            (
                vec!["--rate-limit-store", "redis://admin@redis:6379"],
                "must not carry a user or password",
            ),
            (
                vec![
                    "--rate-limit-store",
                    "redis://redis:6379",
                    "--rate-limit-store-ca-file",
                    "/ca.pem",
                ],
                "needs a rediss:// store",
            ),
            (
                vec![
                    "--rate-limit-store",
                    "redis://redis:6379",
                    "--rate-limit-store-timeout",
                    "0s",
                ],
                "must be positive",
            ),
            (
                vec![
                    "--rate-limit-store",
                    "redis://redis:6379",
                    "--rate-limit-store-scope",
                    "a{b}",
                ],
                "without braces",
            ),
        ] {
            let error = parse(&args).validate().unwrap_err();
            assert!(error.contains(named), "{args:?}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
        assert!(
            Config::try_parse_from(["lumenore-connector", "--rate-limit-store-failure", "sometimes"])
                .is_err()
        );
        assert!(Config::try_parse_from(["lumenore-connector", "--rate-limit-store-password", "x"]).is_err());
    }

    #[test]
    fn mode_none_is_refused_off_loopback_without_the_flag() {
        let error = parse(&["--listen", "0.0.0.0:8080"]).validate().unwrap_err();
        assert!(error.contains("--allow-unauthenticated"), "{error}");
        assert!(error.contains("0.0.0.0:8080"), "{error}");
        assert!(parse(&["--listen", "[::]:8080"]).validate().is_err());
        assert!(parse(&["--listen", "10.1.2.3:8080"]).validate().is_err());
        // With the flag, or on loopback, it starts.
        parse(&["--listen", "0.0.0.0:8080", "--allow-unauthenticated"])
            .validate()
            .unwrap();
        parse(&["--listen", "127.0.0.1:9000"]).validate().unwrap();
        parse(&["--listen", "[::1]:9000"]).validate().unwrap();
        // Another mode needs no flag off loopback.
        parse(&[
            "--listen",
            "0.0.0.0:8080",
            "--auth-mode",
            "api-keys",
            "--api-keys-file",
            "/k",
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn auth_modes_name_what_they_miss() {
        let error = parse(&["--auth-mode", "api-keys"]).validate().unwrap_err();
        assert!(error.contains("--api-keys-file"), "{error}");
        let error = parse(&[
            "--auth-mode",
            "oauth",
            "--public-url",
            "https://mcp.example.com/mcp",
        ])
        .validate()
        .unwrap_err();
        assert!(error.contains("--oauth-issuer"), "{error}");
        let error = parse(&[
            "--auth-mode",
            "oauth",
            "--oauth-issuer",
            "https://login.example.com",
        ])
        .validate()
        .unwrap_err();
        assert!(error.contains("--public-url"), "{error}");
        let error = parse(&[
            "--auth-mode",
            "oauth",
            "--oauth-issuer",
            "http://login.example.com",
            "--public-url",
            "https://mcp.example.com/mcp",
        ])
        .validate()
        .unwrap_err();
        assert!(error.contains("https"), "{error}");
    }

    #[test]
    fn oauth_audience_defaults_to_the_public_url_as_written() {
        let config = parse(&[
            "--auth-mode",
            "oauth",
            "--oauth-issuer",
            "https://login.example.com",
            "--public-url",
            "https://mcp.example.com",
        ]);
        match config.auth_settings().unwrap() {
            AuthSettings::OAuth { settings, .. } => {
                assert_eq!(settings.audience, "https://mcp.example.com");
                assert_eq!(settings.issuer, "https://login.example.com");
                assert!(settings.jwks_url.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn original_timeout_names_are_accepted_and_ours_win() {
        let original = env(&[
            ("REQUEST_TIMEOUT", "2"),
            ("TOTAL_TIMEOUT", "300"),
            ("CONNECT_TIMEOUT", "2.5"),
        ]);
        let config = Config::parse_with_env(["lumenore-connector"], &original).unwrap();
        config.validate().unwrap();
        assert_eq!(config.request_timeout, Duration::from_secs(2));
        assert_eq!(config.total_timeout, Duration::from_secs(300));
        assert_eq!(config.connect_timeout, Duration::from_millis(2500));
        // Our flag (or LUMENORE_* variable) wins over the original name.
        let config =
            Config::parse_with_env(["lumenore-connector", "--request-timeout", "7s"], &original).unwrap();
        assert_eq!(config.request_timeout, Duration::from_secs(7));
        // Units are accepted too; a bad value names the variable.
        let config = Config::parse_with_env(["lumenore-connector"], env(&[("TOTAL_TIMEOUT", "5m")])).unwrap();
        assert_eq!(config.total_timeout, Duration::from_secs(300));
        let config =
            Config::parse_with_env(["lumenore-connector"], env(&[("REQUEST_TIMEOUT", "soon")])).unwrap();
        assert!(config.validate().unwrap_err().starts_with("REQUEST_TIMEOUT:"));
        let config =
            Config::parse_with_env(["lumenore-connector"], env(&[("REQUEST_TIMEOUT", "-1")])).unwrap();
        assert!(config.validate().unwrap_err().starts_with("REQUEST_TIMEOUT:"));
        let config =
            Config::parse_with_env(["lumenore-connector"], env(&[("REQUEST_TIMEOUT", "0")])).unwrap();
        assert!(config.validate().unwrap_err().contains("--request-timeout"));
    }

    #[test]
    fn backend_client_defaults() {
        let config = Config::defaults();
        assert_eq!(config.total_timeout, Duration::from_secs(300));
        assert_eq!(config.login_backoff, Duration::from_secs(10));
        assert_eq!(config.readiness_check, ReadinessCheck::Full);
        assert_eq!(config.backend_pool_max_idle, 16);
        assert_eq!(config.backend_pool_idle_timeout, Duration::from_secs(30));
        assert_eq!(
            parse(&["--readiness-check", "login"]).readiness_check,
            ReadinessCheck::Login
        );
    }

    #[test]
    fn rate_limits_are_unset_by_default_and_zero_is_refused() {
        // The concurrency cap has a safe default; the rates are unlimited unless set.
        let defaults = Config::defaults().limit_settings();
        assert_eq!(
            defaults.max_concurrent_backend_calls.map(NonZeroU32::get),
            Some(64)
        );
        assert_eq!(
            LimitSettings {
                max_concurrent_backend_calls: None,
                ..defaults
            },
            LimitSettings::default()
        );
        assert!(
            Config::try_parse_from(["lumenore-connector", "--rate-limit-caller-per-minute", "0"]).is_err()
        );
        let config = parse(&[
            "--rate-limit-caller-per-minute",
            "60",
            "--rate-limit-tenant-per-minute",
            "600",
            "--max-concurrent-backend-calls",
            "8",
        ]);
        let limits = config.limit_settings();
        assert_eq!(limits.caller_per_minute.map(NonZeroU32::get), Some(60));
        assert_eq!(limits.tenant_per_minute.map(NonZeroU32::get), Some(600));
        assert_eq!(limits.max_concurrent_backend_calls.map(NonZeroU32::get), Some(8));
    }

    #[test]
    fn environment_names_match_the_operator_contract() {
        use clap::CommandFactory;
        let command = Config::command();
        let env_of = |id: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .and_then(|arg| arg.get_env())
                .and_then(|env| env.to_str())
                .map(str::to_owned)
        };
        for (id, env) in [
            ("auth_mode", "LUMENORE_AUTH_MODE"),
            ("allow_unauthenticated", "LUMENORE_ALLOW_UNAUTHENTICATED"),
            ("api_keys_file", "LUMENORE_API_KEYS_FILE"),
            ("oauth_issuer", "LUMENORE_OAUTH_ISSUER"),
            ("oauth_audience", "LUMENORE_OAUTH_AUDIENCE"),
            ("oauth_jwks_url", "LUMENORE_OAUTH_JWKS_URL"),
            ("public_url", "LUMENORE_PUBLIC_URL"),
            (
                "rate_limit_caller_per_minute",
                "LUMENORE_RATE_LIMIT_CALLER_PER_MINUTE",
            ),
            (
                "rate_limit_tenant_per_minute",
                "LUMENORE_RATE_LIMIT_TENANT_PER_MINUTE",
            ),
            (
                "max_concurrent_backend_calls",
                "LUMENORE_MAX_CONCURRENT_BACKEND_CALLS",
            ),
        ] {
            assert_eq!(env_of(id).as_deref(), Some(env), "{id}");
        }
        // The operator writes these values.
        assert_eq!(AuthMode::from_str("api-keys", false), Ok(AuthMode::ApiKeys));
        assert_eq!(AuthMode::from_str("oauth", false), Ok(AuthMode::Oauth));
        assert_eq!(AuthMode::from_str("none", false), Ok(AuthMode::None));
    }

    #[test]
    fn hash_key_is_a_subcommand() {
        let config = parse(&["hash-key", "--id", "alice"]);
        assert_eq!(
            config.command,
            Some(Command::HashKey {
                id: "alice".into(),
                stdin: false
            })
        );
        assert_eq!(Config::defaults().command, None);
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }
}
