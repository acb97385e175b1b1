//! The credentials the connector presents to the Lumenore backend, and how they are held.
//!
//! - Read from the environment only (after `.env` was loaded), never from flags, which `ps` shows. The
//!   variable names are part of the configuration surface and stay in [`crate::config`] with the other names.
//! - Held in `secrecy` types from the moment they are read; exposed only where the login body and the
//!   `Authorization` header are built ([`super::login`]), and removed from any backend message passed on.
//! - `Debug` shows which kind of credentials is configured, never a value.

use std::fmt;

use secrecy::SecretString;

use crate::config::{ENV_API_KEY, ENV_CLIENT_ID, ENV_SECRET};

/// How the connector authenticates to the Lumenore backend.
#[derive(Clone)]
pub enum Credentials {
    /// Client-credentials login; the access token comes back as a cookie.
    ClientCredentials {
        client_id: SecretString,
        secret: SecretString,
    },
    /// A static key (LUMENORE_API_KEY), sent as the whole `Authorization` value; no login.
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
    /// values count as unset, and a client id without a secret (or the reverse) is no credentials.
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

    /// Which kind is configured, safe to log.
    pub fn describe(&self) -> &'static str {
        match self {
            Credentials::ClientCredentials { .. } => "client credentials",
            Credentials::StaticToken(_) => "static token",
            Credentials::Missing => "none",
        }
    }

    /// Whether a refused token can be replaced by logging in again (only with a client id and secret).
    pub fn can_log_in(&self) -> bool {
        matches!(self, Credentials::ClientCredentials { .. })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({})", self.describe())
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::test_support::env;

    #[test]
    fn static_token_wins_over_client_credentials() {
        let creds = Credentials::from_lookup(env(&[
            (ENV_API_KEY, "tok"),
            (ENV_CLIENT_ID, "id"),
            (ENV_SECRET, "s"),
        ]));
        assert!(matches!(creds, Credentials::StaticToken(ref t) if t.expose_secret() == "tok"));
        assert!(!creds.can_log_in());
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
        let creds = Credentials::from_lookup(env(&[(ENV_CLIENT_ID, "id"), (ENV_SECRET, "s")]));
        assert!(
            matches!(&creds, Credentials::ClientCredentials { client_id, secret }
                if client_id.expose_secret() == "id" && secret.expose_secret() == "s")
        );
        assert!(creds.can_log_in());
    }

    #[test]
    fn debug_never_prints_secrets() {
        let kinds = [
            Credentials::ClientCredentials {
                client_id: SecretString::from("canary-client-id"),
                secret: SecretString::from("canary-secret"),
            },
            Credentials::StaticToken(SecretString::from("canary-key")),
        ];
        for creds in kinds {
            let shown = format!("{creds:?} {creds:#?}");
            assert!(!shown.contains("canary"), "{shown}");
            assert!(shown.contains(creds.describe()), "{shown}");
        }
    }
}
