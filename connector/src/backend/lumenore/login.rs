//! The token the backend credentials ([`super::credentials`]) give.
//!
//! - One login in flight at a time, shared by every caller that needs a token (a spawned task behind a
//!   shared future): its success and its failure reach all of them. The state lock is never held across
//!   the login, so a hanging login costs every waiter one login timeout, not one each in turn.
//! - A login refused by the backend (bad credentials, no cookie, another 4xx) is remembered for `backoff`:
//!   callers in that time get the same failure at once instead of a login each. (A backend that cannot be
//!   reached is not remembered: the next call tries again, so recovery is not delayed.)
//! - A token refused before the backend ever accepted it is replaced once. If that new token is refused
//!   unused too, no further login is made until `backoff` has passed since the last one: a backend
//!   answering 401 to everything costs one login per `backoff`, not one per call. A token that worked and
//!   then expired is always replaced at once.
//! - `LUMENORE_API_KEY` is sent as the whole `Authorization` value (as the original server sent it).

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable};
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use url::Url;

use super::{
    credentials::Credentials,
    failure::{self, AttemptError, Redactions, Timeouts},
};
use crate::{
    backend::BackendError,
    metrics::{LoginLabels, Metrics},
};

pub const LOGIN_PATH: &str = "api/secure/client/user-login";
const TOKEN_COOKIE: &str = "access_token";

/// The token a login answer sets in its `access_token` cookie (the first non-empty one). Parsed here
/// rather than with reqwest's `cookies` feature, whose layer parses the URL of every backend request
/// (about 7,000 instructions a call) for a cookie jar the connector does not keep.
fn token_cookie(headers: &reqwest::header::HeaderMap) -> Option<SecretString> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        // UTF-8, as reqwest's `cookies()` read them (`to_str` would refuse any byte beyond visible ASCII).
        .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
        .filter_map(|value| cookie::Cookie::parse(value).ok())
        .find(|cookie| cookie.name() == TOKEN_COOKIE && !cookie.value().is_empty())
        .map(|cookie| SecretString::from(cookie.value().to_owned()))
}

/// A usable `Authorization` value, and which login gave it (0 for a static key).
#[derive(Clone, Debug)]
pub struct Issued {
    pub authorization: SecretString,
    pub generation: u64,
}

type PendingLogin = Shared<BoxFuture<'static, Result<Issued, BackendError>>>;

#[derive(Default)]
struct State {
    token: Option<Issued>,
    generation: u64,
    in_flight: Option<PendingLogin>,
    /// When the last login ended, and its failure if the backend refused it.
    last_login: Option<Instant>,
    last_failure: Option<BackendError>,
    /// The newest login whose token the backend accepted at least once.
    accepted_generation: u64,
    /// Logins in a row whose token was refused before it was ever accepted.
    useless_logins: u32,
}

/// Whether a login failure says the backend refuses these credentials (remembered), rather than that it
/// could not be reached or failed (tried again at the next call).
fn is_refusal(error: &BackendError) -> bool {
    match error {
        BackendError::CredentialsRejected(_) | BackendError::LoginWithoutToken => true,
        BackendError::Status(code, _) => (400..500).contains(code),
        _ => false,
    }
}

/// How to log in: everything the spawned login task needs.
#[derive(Clone)]
pub struct LoginRequest {
    pub http: reqwest::Client,
    pub url: Url,
    pub timeouts: Timeouts,
    pub retry: ExponentialBuilder,
    pub metrics: Metrics,
}

pub struct Tokens {
    credentials: Credentials,
    request: LoginRequest,
    backoff: Duration,
    state: Arc<Mutex<State>>,
}

/// Why a re-login was not attempted: the token just issued was refused.
#[derive(Debug)]
pub struct RecentlyRejected(pub Duration);

impl Tokens {
    pub fn new(credentials: Credentials, request: LoginRequest, backoff: Duration) -> Self {
        Self {
            credentials,
            request,
            backoff,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The lock guards plain data and is never held across an await: a poisoned lock still holds a
        // consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The backend accepted this token (it answered something other than 401).
    pub fn accepted(&self, issued: &Issued) {
        let mut state = self.state();
        if issued.generation > state.accepted_generation {
            state.accepted_generation = issued.generation;
        }
        state.useless_logins = 0;
    }

    /// Whether a token is held now (no request made).
    pub fn holds_token(&self) -> bool {
        matches!(self.credentials, Credentials::StaticToken(_)) || self.state().token.is_some()
    }

    /// The token to use: the one held, the login in flight, or a new login.
    pub async fn current(&self) -> Result<Issued, BackendError> {
        let pending = match &self.credentials {
            Credentials::Missing => return Err(BackendError::NotConfigured),
            Credentials::StaticToken(key) => {
                return Ok(Issued {
                    authorization: key.clone(),
                    generation: 0,
                });
            }
            Credentials::ClientCredentials { .. } => {
                let mut state = self.state();
                if let Some(token) = &state.token {
                    return Ok(token.clone());
                }
                self.join_or_start(&mut state)?
            }
        };
        pending.await
    }

    /// Replaces a token the backend refused. Another call may have replaced it already (then that token is
    /// used); see the module notes for when a refused token is not replaced before the backoff is over.
    pub async fn renew(&self, refused: &Issued) -> Result<Result<Issued, RecentlyRejected>, BackendError> {
        if !self.credentials.can_log_in() {
            return Err(BackendError::CredentialsRejected(None));
        }
        let pending = {
            let mut state = self.state();
            match &state.token {
                Some(token) if token.generation != refused.generation => return Ok(Ok(token.clone())),
                _ => {}
            }
            if state.in_flight.is_none() {
                let never_accepted = state.accepted_generation < refused.generation;
                if never_accepted {
                    let recent = state
                        .last_login
                        .is_some_and(|ended| ended.elapsed() < self.backoff);
                    if state.useless_logins >= 1 && recent {
                        return Ok(Err(RecentlyRejected(self.backoff)));
                    }
                    state.useless_logins += 1;
                }
                if state
                    .token
                    .as_ref()
                    .is_some_and(|token| token.generation == refused.generation)
                {
                    state.token = None;
                }
            }
            self.join_or_start(&mut state)?
        };
        pending.await.map(Ok)
    }

    fn join_or_start(&self, state: &mut State) -> Result<PendingLogin, BackendError> {
        if let Some(pending) = &state.in_flight {
            return Ok(pending.clone());
        }
        if let (Some(ended), Some(failure)) = (state.last_login, &state.last_failure)
            && ended.elapsed() < self.backoff
        {
            return Err(failure.clone());
        }
        let Credentials::ClientCredentials { client_id, secret } = &self.credentials else {
            return Err(BackendError::NotConfigured);
        };
        let request = self.request.clone();
        let (client_id, secret) = (client_id.clone(), secret.clone());
        let shared_state = self.state.clone();
        // A task of its own: the login finishes (and its token is kept) even if every caller went away.
        // otel: the login span belongs to the call that started the login (none when tracing is off).
        let trace = crate::otel::current();
        let task = tokio::spawn(async move {
            let result = crate::otel::within(trace, request.login(&client_id, &secret)).await;
            let mut state = shared_state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.in_flight = None;
            state.last_login = Some(Instant::now());
            match result {
                Ok(token) => {
                    state.generation += 1;
                    let issued = Issued {
                        authorization: SecretString::from(format!("Bearer {}", token.expose_secret())),
                        generation: state.generation,
                    };
                    state.token = Some(issued.clone());
                    state.last_failure = None;
                    Ok(issued)
                }
                Err(error) => {
                    state.last_failure = is_refusal(&error).then(|| error.clone());
                    Err(error)
                }
            }
        });
        let pending = async move { task.await.unwrap_or(Err(BackendError::Unreachable)) }
            .boxed()
            .shared();
        state.in_flight = Some(pending.clone());
        Ok(pending)
    }
}

impl LoginRequest {
    /// `POST user-login` with `{"data": {"clientId", "secret"}}`; the token is the `access_token` cookie.
    /// Connection errors and 502/503/504 are retried.
    async fn login(
        &self,
        client_id: &SecretString,
        secret: &SecretString,
    ) -> Result<SecretString, BackendError> {
        let body = json!({"data": {"clientId": client_id.expose_secret(), "secret": secret.expose_secret()}});
        let redactions = Redactions::new()
            .with(client_id.expose_secret())
            .with(secret.expose_secret());
        let attempt = || async {
            let started = Instant::now();
            let response = crate::otel::inject(self.http.post(self.url.clone())) // otel: traceparent
                .header(reqwest::header::ACCEPT, "application/json")
                .json(&body)
                .send()
                .await
                .map_err(|error| failure::classify_transport(&error, self.timeouts, started))?;
            let status = response.status();
            let token = token_cookie(response.headers());
            if status.is_success() {
                return token.ok_or(AttemptError::fatal(BackendError::LoginWithoutToken));
            }
            let detail = super::error_detail(response, &redactions).await;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(AttemptError::fatal(BackendError::CredentialsRejected(detail)));
            }
            Err(failure::status_error(status, detail))
        };
        // otel: a CLIENT span around the login and its retries.
        let result = crate::otel::backend_call("POST", &self.url, LOGIN_PATH, async {
            attempt
                .retry(self.retry)
                .when(|error: &AttemptError| error.retryable)
                .await
                .map_err(|failure| failure.error)
        })
        .await;
        let outcome = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .backend_logins
            .get_or_create(&LoginLabels { outcome })
            .inc();
        result
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue, SET_COOKIE};
    use secrecy::ExposeSecret;

    use super::token_cookie;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(SET_COOKIE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_first_non_empty_access_token_cookie_is_the_token() {
        let found = token_cookie(&headers(&[
            "session=abc; Path=/",
            "access_token=; Path=/",
            "access_token=tok-1; Path=/; HttpOnly; Secure; SameSite=Strict",
            "access_token=tok-2",
        ]));
        assert_eq!(
            found.map(|t| t.expose_secret().to_owned()).as_deref(),
            Some("tok-1")
        );
    }

    #[test]
    fn a_cookie_header_with_utf8_is_read() {
        let mut headers = HeaderMap::new();
        headers.append(
            SET_COOKIE,
            HeaderValue::from_bytes("access_token=tok-3; Path=/café".as_bytes()).unwrap(),
        );
        assert_eq!(
            token_cookie(&headers)
                .map(|t| t.expose_secret().to_owned())
                .as_deref(),
            Some("tok-3")
        );
    }

    #[test]
    fn no_or_malformed_cookies_give_no_token() {
        assert!(token_cookie(&headers(&[])).is_none());
        assert!(token_cookie(&headers(&["access_token", "=tok", "other=x"])).is_none());
    }
}
