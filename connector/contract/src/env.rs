//! The environment variables the connector reads, by name. The connector's clap definitions name these
//! constants (`#[arg(env = env::LISTEN)]`) and a connector test checks that [`SETTINGS`] is exactly the set
//! its command line reads; the operator's builders set only these constants, and an operator test checks
//! that every variable it sets on a connector pod is [`accepted`]. A renamed variable so breaks a build or a
//! test here, not a tenant's pods.

/// Defines a constant per name and the list of them all from one list, so neither can miss one.
macro_rules! names {
    ($(#[$doc:meta])* $list:ident { $($name:ident = $value:literal,)* }) => {
        $(pub const $name: &str = $value;)*
        $(#[$doc])*
        pub const $list: &[&str] = &[$($name),*];
    };
}

names! {
    /// Every setting the connector's command line reads from the environment (each also a `--flag`).
    SETTINGS {
        LISTEN = "LUMENORE_LISTEN",
        BACKEND = "LUMENORE_BACKEND",
        CATALOG = "LUMENORE_CATALOG",
        SERVER_URL = "SERVER_URL",
        ALLOWED_HOSTS = "LUMENORE_ALLOWED_HOSTS",
        ALLOWED_ORIGINS = "LUMENORE_ALLOWED_ORIGINS",
        CONNECT_TIMEOUT = "LUMENORE_CONNECT_TIMEOUT",
        REQUEST_TIMEOUT = "LUMENORE_REQUEST_TIMEOUT",
        TOTAL_TIMEOUT = "LUMENORE_TOTAL_TIMEOUT",
        MAX_RETRIES = "LUMENORE_MAX_RETRIES",
        LOGIN_BACKOFF = "LUMENORE_LOGIN_BACKOFF",
        READINESS_CHECK = "LUMENORE_READINESS_CHECK",
        BACKEND_POOL_MAX_IDLE = "LUMENORE_BACKEND_POOL_MAX_IDLE",
        BACKEND_POOL_IDLE_TIMEOUT = "LUMENORE_BACKEND_POOL_IDLE_TIMEOUT",
        MAX_RESULT_ROWS = "LUMENORE_MAX_RESULT_ROWS",
        MAX_RESULT_BYTES = "LUMENORE_MAX_RESULT_BYTES",
        MAX_REQUEST_BYTES = "LUMENORE_MAX_REQUEST_BYTES",
        HEADER_READ_TIMEOUT = "LUMENORE_HEADER_READ_TIMEOUT",
        BODY_READ_TIMEOUT = "LUMENORE_BODY_READ_TIMEOUT",
        IDLE_TIMEOUT = "LUMENORE_IDLE_TIMEOUT",
        SEND_TIMEOUT = "LUMENORE_SEND_TIMEOUT",
        HTTP2_KEEP_ALIVE_INTERVAL = "LUMENORE_HTTP2_KEEP_ALIVE_INTERVAL",
        MAX_CONNECTIONS = "LUMENORE_MAX_CONNECTIONS",
        MAX_CONCURRENT_BODY_READS = "LUMENORE_MAX_CONCURRENT_BODY_READS",
        MAX_CONNECTIONS_PER_PEER = "LUMENORE_MAX_CONNECTIONS_PER_PEER",
        MAX_BODY_READS_PER_CALLER = "LUMENORE_MAX_BODY_READS_PER_CALLER",
        MAX_BODY_READS_PER_CONNECTION = "LUMENORE_MAX_BODY_READS_PER_CONNECTION",
        MIN_BODY_RATE = "LUMENORE_MIN_BODY_RATE",
        MAX_BACKEND_RESPONSE_BYTES = "LUMENORE_MAX_BACKEND_RESPONSE_BYTES",
        READINESS_INTERVAL = "LUMENORE_READINESS_INTERVAL",
        SHUTDOWN_GRACE = "LUMENORE_SHUTDOWN_GRACE",
        LOG_FORMAT = "LUMENORE_LOG_FORMAT",
        AUTH_MODE = "LUMENORE_AUTH_MODE",
        ALLOW_UNAUTHENTICATED = "LUMENORE_ALLOW_UNAUTHENTICATED",
        API_KEYS_FILE = "LUMENORE_API_KEYS_FILE",
        API_KEYS_RELOAD_INTERVAL = "LUMENORE_API_KEYS_RELOAD_INTERVAL",
        OAUTH_ISSUER = "LUMENORE_OAUTH_ISSUER",
        OAUTH_AUDIENCE = "LUMENORE_OAUTH_AUDIENCE",
        OAUTH_JWKS_URL = "LUMENORE_OAUTH_JWKS_URL",
        PUBLIC_URL = "LUMENORE_PUBLIC_URL",
        RATE_LIMIT_CALLER_PER_MINUTE = "LUMENORE_RATE_LIMIT_CALLER_PER_MINUTE",
        RATE_LIMIT_TENANT_PER_MINUTE = "LUMENORE_RATE_LIMIT_TENANT_PER_MINUTE",
        RATE_LIMIT_SHARES = "LUMENORE_RATE_LIMIT_SHARES",
        RATE_LIMIT_SHARES_FILE = "LUMENORE_RATE_LIMIT_SHARES_FILE",
        RATE_LIMIT_STORE = "LUMENORE_RATE_LIMIT_STORE",
        RATE_LIMIT_STORE_USERNAME = "LUMENORE_RATE_LIMIT_STORE_USERNAME",
        RATE_LIMIT_STORE_CA_FILE = "LUMENORE_RATE_LIMIT_STORE_CA_FILE",
        RATE_LIMIT_STORE_TIMEOUT = "LUMENORE_RATE_LIMIT_STORE_TIMEOUT",
        RATE_LIMIT_STORE_FAILURE = "LUMENORE_RATE_LIMIT_STORE_FAILURE",
        RATE_LIMIT_STORE_SCOPE = "LUMENORE_RATE_LIMIT_STORE_SCOPE",
        MAX_CONCURRENT_BACKEND_CALLS = "LUMENORE_MAX_CONCURRENT_BACKEND_CALLS",
        MEMORY_LIMIT = "LUMENORE_MEMORY_LIMIT",
    }
}

/// The credentials: the backend's, and the rate-limit store's password. They have no flag on purpose (flags
/// show in `ps`): the connector reads them from the environment (or `.env`) only, and holds them in
/// `secrecy` types.
pub const CLIENT_ID: &str = "LUMENORE_CLIENT_ID";
pub const SECRET: &str = "LUMENORE_SECRET";
pub const API_KEY: &str = "LUMENORE_API_KEY";
pub const RATE_LIMIT_STORE_PASSWORD: &str = "LUMENORE_RATE_LIMIT_STORE_PASSWORD";
pub const CREDENTIALS: [&str; 4] = [CLIENT_ID, SECRET, API_KEY, RATE_LIMIT_STORE_PASSWORD];

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
    names! {
        /// All of them.
        ALL {
            SDK_DISABLED = "OTEL_SDK_DISABLED",
            TRACES_EXPORTER = "OTEL_TRACES_EXPORTER",
            EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT",
            EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL",
            EXPORTER_OTLP_TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            SERVICE_NAME = "OTEL_SERVICE_NAME",
            // Read by the SDK's OTLP exporter and tracer provider, which the connector does not override.
            EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS",
            TRACES_SAMPLER = "OTEL_TRACES_SAMPLER",
            TRACES_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG",
        }
    }
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
