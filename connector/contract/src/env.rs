//! The environment variables the connector reads, by name. The connector's clap definitions name these
//! constants (`#[arg(env = env::LISTEN)]`) and a connector test checks that [`SETTINGS`] is exactly the set
//! its command line reads; the operator's builders set only these constants, and an operator test checks
//! that every variable it sets on a connector pod is [`accepted`]. A renamed variable so breaks a build or a
//! test here, not a tenant's pods.

pub const LISTEN: &str = "LUMENORE_LISTEN";
pub const BACKEND: &str = "LUMENORE_BACKEND";
pub const CATALOG: &str = "LUMENORE_CATALOG";
pub const SERVER_URL: &str = "SERVER_URL";
pub const ALLOWED_HOSTS: &str = "LUMENORE_ALLOWED_HOSTS";
pub const ALLOWED_ORIGINS: &str = "LUMENORE_ALLOWED_ORIGINS";
pub const CONNECT_TIMEOUT: &str = "LUMENORE_CONNECT_TIMEOUT";
pub const REQUEST_TIMEOUT: &str = "LUMENORE_REQUEST_TIMEOUT";
pub const TOTAL_TIMEOUT: &str = "LUMENORE_TOTAL_TIMEOUT";
pub const MAX_RETRIES: &str = "LUMENORE_MAX_RETRIES";
pub const LOGIN_BACKOFF: &str = "LUMENORE_LOGIN_BACKOFF";
pub const READINESS_CHECK: &str = "LUMENORE_READINESS_CHECK";
pub const BACKEND_POOL_MAX_IDLE: &str = "LUMENORE_BACKEND_POOL_MAX_IDLE";
pub const BACKEND_POOL_IDLE_TIMEOUT: &str = "LUMENORE_BACKEND_POOL_IDLE_TIMEOUT";
pub const MAX_RESULT_ROWS: &str = "LUMENORE_MAX_RESULT_ROWS";
pub const MAX_RESULT_BYTES: &str = "LUMENORE_MAX_RESULT_BYTES";
pub const MAX_REQUEST_BYTES: &str = "LUMENORE_MAX_REQUEST_BYTES";
pub const HEADER_READ_TIMEOUT: &str = "LUMENORE_HEADER_READ_TIMEOUT";
pub const BODY_READ_TIMEOUT: &str = "LUMENORE_BODY_READ_TIMEOUT";
pub const IDLE_TIMEOUT: &str = "LUMENORE_IDLE_TIMEOUT";
pub const SEND_TIMEOUT: &str = "LUMENORE_SEND_TIMEOUT";
pub const HTTP2_KEEP_ALIVE_INTERVAL: &str = "LUMENORE_HTTP2_KEEP_ALIVE_INTERVAL";
pub const MAX_CONNECTIONS: &str = "LUMENORE_MAX_CONNECTIONS";
pub const MAX_CONCURRENT_BODY_READS: &str = "LUMENORE_MAX_CONCURRENT_BODY_READS";
pub const MAX_CONNECTIONS_PER_PEER: &str = "LUMENORE_MAX_CONNECTIONS_PER_PEER";
pub const MAX_BODY_READS_PER_CALLER: &str = "LUMENORE_MAX_BODY_READS_PER_CALLER";
pub const MAX_BODY_READS_PER_CONNECTION: &str = "LUMENORE_MAX_BODY_READS_PER_CONNECTION";
pub const MIN_BODY_RATE: &str = "LUMENORE_MIN_BODY_RATE";
pub const MAX_BACKEND_RESPONSE_BYTES: &str = "LUMENORE_MAX_BACKEND_RESPONSE_BYTES";
pub const READINESS_INTERVAL: &str = "LUMENORE_READINESS_INTERVAL";
pub const SHUTDOWN_GRACE: &str = "LUMENORE_SHUTDOWN_GRACE";
pub const LOG_FORMAT: &str = "LUMENORE_LOG_FORMAT";
pub const AUTH_MODE: &str = "LUMENORE_AUTH_MODE";
pub const ALLOW_UNAUTHENTICATED: &str = "LUMENORE_ALLOW_UNAUTHENTICATED";
pub const API_KEYS_FILE: &str = "LUMENORE_API_KEYS_FILE";
pub const API_KEYS_RELOAD_INTERVAL: &str = "LUMENORE_API_KEYS_RELOAD_INTERVAL";
pub const OAUTH_ISSUER: &str = "LUMENORE_OAUTH_ISSUER";
pub const OAUTH_AUDIENCE: &str = "LUMENORE_OAUTH_AUDIENCE";
pub const OAUTH_JWKS_URL: &str = "LUMENORE_OAUTH_JWKS_URL";
pub const PUBLIC_URL: &str = "LUMENORE_PUBLIC_URL";
pub const RATE_LIMIT_CALLER_PER_MINUTE: &str = "LUMENORE_RATE_LIMIT_CALLER_PER_MINUTE";
pub const RATE_LIMIT_TENANT_PER_MINUTE: &str = "LUMENORE_RATE_LIMIT_TENANT_PER_MINUTE";
pub const MAX_CONCURRENT_BACKEND_CALLS: &str = "LUMENORE_MAX_CONCURRENT_BACKEND_CALLS";
pub const MEMORY_LIMIT: &str = "LUMENORE_MEMORY_LIMIT";

/// Every setting the connector's command line reads from the environment (each also a `--flag`).
pub const SETTINGS: [&str; 44] = [
    LISTEN,
    BACKEND,
    CATALOG,
    SERVER_URL,
    ALLOWED_HOSTS,
    ALLOWED_ORIGINS,
    CONNECT_TIMEOUT,
    REQUEST_TIMEOUT,
    TOTAL_TIMEOUT,
    MAX_RETRIES,
    LOGIN_BACKOFF,
    READINESS_CHECK,
    BACKEND_POOL_MAX_IDLE,
    BACKEND_POOL_IDLE_TIMEOUT,
    MAX_RESULT_ROWS,
    MAX_RESULT_BYTES,
    MAX_REQUEST_BYTES,
    HEADER_READ_TIMEOUT,
    BODY_READ_TIMEOUT,
    IDLE_TIMEOUT,
    SEND_TIMEOUT,
    HTTP2_KEEP_ALIVE_INTERVAL,
    MAX_CONNECTIONS,
    MAX_CONCURRENT_BODY_READS,
    MAX_CONNECTIONS_PER_PEER,
    MAX_BODY_READS_PER_CALLER,
    MAX_BODY_READS_PER_CONNECTION,
    MIN_BODY_RATE,
    MAX_BACKEND_RESPONSE_BYTES,
    READINESS_INTERVAL,
    SHUTDOWN_GRACE,
    LOG_FORMAT,
    AUTH_MODE,
    ALLOW_UNAUTHENTICATED,
    API_KEYS_FILE,
    API_KEYS_RELOAD_INTERVAL,
    OAUTH_ISSUER,
    OAUTH_AUDIENCE,
    OAUTH_JWKS_URL,
    PUBLIC_URL,
    RATE_LIMIT_CALLER_PER_MINUTE,
    RATE_LIMIT_TENANT_PER_MINUTE,
    MAX_CONCURRENT_BACKEND_CALLS,
    MEMORY_LIMIT,
];

/// The backend credentials. They have no flag on purpose (flags show in `ps`): the connector's Lumenore
/// backend reads them from the environment (or `.env`) only, and holds them in `secrecy` types.
pub const CLIENT_ID: &str = "LUMENORE_CLIENT_ID";
pub const SECRET: &str = "LUMENORE_SECRET";
pub const API_KEY: &str = "LUMENORE_API_KEY";
pub const CREDENTIALS: [&str; 3] = [CLIENT_ID, SECRET, API_KEY];

/// The original Python server's timeout variables (seconds, or a duration), honoured when the matching
/// `LUMENORE_*_TIMEOUT` setting is left at its default.
pub const ORIGINAL_CONNECT_TIMEOUT: &str = "CONNECT_TIMEOUT";
pub const ORIGINAL_REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
pub const ORIGINAL_TOTAL_TIMEOUT: &str = "TOTAL_TIMEOUT";
pub const ORIGINAL_TIMEOUTS: [&str; 3] = [
    ORIGINAL_CONNECT_TIMEOUT,
    ORIGINAL_REQUEST_TIMEOUT,
    ORIGINAL_TOTAL_TIMEOUT,
];

/// The OpenTelemetry variables the connector honours: the first three are read by its `otel` module, the
/// rest by the OpenTelemetry SDK it configures without overriding them.
pub mod otel {
    pub const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
    pub const TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
    pub const EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    pub const EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
    pub const EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
    pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    /// Read by the SDK's OTLP exporter.
    pub const EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
    /// Read by the SDK's tracer provider.
    pub const TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
    pub const TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

    pub const ALL: [&str; 10] = [
        SDK_DISABLED,
        TRACES_EXPORTER,
        EXPORTER_OTLP_ENDPOINT,
        EXPORTER_OTLP_TRACES_ENDPOINT,
        EXPORTER_OTLP_PROTOCOL,
        EXPORTER_OTLP_TRACES_PROTOCOL,
        SERVICE_NAME,
        EXPORTER_OTLP_HEADERS,
        TRACES_SAMPLER,
        TRACES_SAMPLER_ARG,
    ];
}

/// Whether the connector reads `name`: a setting, a credential, an original timeout or an OpenTelemetry
/// variable it honours.
pub fn accepted(name: &str) -> bool {
    SETTINGS.contains(&name)
        || CREDENTIALS.contains(&name)
        || ORIGINAL_TIMEOUTS.contains(&name)
        || otel::ALL.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_name_is_listed_twice() {
        let mut all: Vec<&str> = SETTINGS.to_vec();
        all.extend(CREDENTIALS);
        all.extend(ORIGINAL_TIMEOUTS);
        all.extend(otel::ALL);
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
    }

    #[test]
    fn secrets_are_not_settings() {
        // Settings get a --flag, which `ps` shows: a credential must never be one.
        for credential in CREDENTIALS {
            assert!(!SETTINGS.contains(&credential));
            assert!(accepted(credential));
        }
        assert!(!accepted("LUMENORE_LISTEN_ADDR"));
    }
}
