//! OAuth 2.1 resource server: validates JWT access tokens issued for this connector.
//!
//! Checks, in order: the token is a JWT; its `alg` is on the allow-list (RSA, RSA-PSS, ECDSA, EdDSA — never
//! `none` or an HMAC algorithm, which would let anyone holding the public key sign); the key named by `kid`
//! is in the issuer's JWKS (fetched and cached, refetched on an unknown `kid` at most a few times a minute)
//! and fits the algorithm; the signature verifies; `iss` is the configured issuer; `aud` names this
//! connector; `exp` and `nbf` hold with 60 s of leeway; `sub` is present. Keys embedded in the token
//! (`jwk`, `jku`, `x5u` headers) are never used.
//!
//! The JWKS URL is configured, or discovered from the issuer's metadata
//! (`/.well-known/openid-configuration`, then RFC 8414 `/.well-known/oauth-authorization-server`), whose
//! `issuer` must equal the configured one.

use std::{
    num::NonZeroU32,
    str::FromStr,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, Jwk, PublicKeyUse},
};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{AuthFailure, Caller, CallerKind, printable_id, scopes};
use crate::metrics::{Metrics, OutcomeLabels};

/// Accepted signing algorithms: asymmetric only.
pub const ALLOWED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECONDS: u64 = 60;
/// Cached keys older than this are refetched (when the refresh budget allows).
const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Resource-server settings, from the configuration.
#[derive(Clone, Debug)]
pub struct OAuthSettings {
    /// Expected `iss`, compared as an exact string.
    pub issuer: String,
    /// Expected `aud` (one of the token's audiences must equal it).
    pub audience: String,
    /// JWKS URL; discovered from the issuer when `None`.
    pub jwks_url: Option<Url>,
    /// Refetches of the JWKS allowed in a burst, then one per `refresh_period`.
    pub refresh_burst: NonZeroU32,
    pub refresh_period: Duration,
}

impl OAuthSettings {
    pub fn new(issuer: String, audience: String, jwks_url: Option<Url>) -> Self {
        OAuthSettings {
            issuer,
            audience,
            jwks_url,
            refresh_burst: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            refresh_period: Duration::from_secs(10),
        }
    }
}

struct VerifyingKey {
    kid: Option<String>,
    /// The `alg` the JWK pins, if any.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

struct KeySet {
    keys: Vec<VerifyingKey>,
    fetched: Instant,
    generation: u64,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    scope: Option<ScopeClaim>,
    #[serde(default)]
    scp: Option<ScopeClaim>,
}

/// `scope` is a space-separated string (RFC 8693 / RFC 9068); some issuers send `scp` as a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

impl ScopeClaim {
    fn scopes(&self) -> Vec<&str> {
        match self {
            ScopeClaim::Text(text) => text.split_whitespace().collect(),
            ScopeClaim::List(list) => list.iter().map(String::as_str).collect(),
        }
    }
}

pub struct OAuthValidator {
    settings: OAuthSettings,
    http: reqwest::Client,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Serialises refetches, so a burst of requests with a new `kid` makes one fetch.
    refresh: tokio::sync::Mutex<Option<Url>>,
    refresh_budget: DefaultDirectRateLimiter,
    metrics: Metrics,
}

#[derive(Debug)]
enum FetchError {
    /// The refresh budget is spent: an unknown `kid` flood must not hammer the issuer.
    Throttled,
    /// Logged where it happened.
    Failed,
}

impl OAuthValidator {
    pub fn new(settings: OAuthSettings, metrics: Metrics) -> Result<OAuthValidator, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("lumenore-connector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("cannot build the HTTP client for the token issuer: {error}"))?;
        let quota = Quota::with_period(settings.refresh_period)
            .ok_or("the JWKS refresh period must be positive")?
            .allow_burst(settings.refresh_burst);
        Ok(OAuthValidator {
            refresh: tokio::sync::Mutex::new(settings.jwks_url.clone()),
            settings,
            http,
            keys: RwLock::new(None),
            refresh_budget: RateLimiter::direct(quota),
            metrics,
        })
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    fn cached(&self) -> Option<Arc<KeySet>> {
        match self.keys.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Fetches the keys now (at start, so the first caller does not wait). Failure is not fatal: keys are
    /// fetched again on the first token.
    pub async fn prefetch(&self) {
        if let Err(error) = self.refresh_keys(0).await {
            tracing::warn!(error = ?error, "could not fetch the token issuer's keys at start; will retry on the first token");
        }
    }

    /// Validates a bearer token and returns the caller it names.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthFailure> {
        let header = decode_header(token).map_err(|_| AuthFailure::MalformedToken)?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(AuthFailure::DisallowedAlgorithm);
        }
        let key = self.key_for(header.kid.as_deref(), header.alg).await?;

        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[self.settings.issuer.as_str()]);
        validation.set_audience(&[self.settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Claims>(token, &key, &validation).map_err(|error| map_error(error.kind()))?;
        let sub = data
            .claims
            .sub
            .filter(|sub| !sub.is_empty())
            .ok_or(AuthFailure::MissingClaim)?;
        let mut granted: Vec<&str> = Vec::new();
        for claim in [&data.claims.scope, &data.claims.scp].into_iter().flatten() {
            granted.extend(claim.scopes());
        }
        Ok(Caller {
            id: printable_id(&sub),
            tools: scopes::tools_of_scopes(granted),
            kind: CallerKind::OAuth,
        })
    }

    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, AuthFailure> {
        let mut keys = self.cached();
        let stale = keys
            .as_ref()
            .is_none_or(|set| set.fetched.elapsed() > JWKS_MAX_AGE);
        if stale {
            let generation = keys.as_ref().map_or(0, |set| set.generation);
            match self.refresh_keys(generation).await {
                Ok(fresh) => keys = Some(fresh),
                // Old keys still serve while the issuer is unreachable.
                Err(error) if keys.is_some() => {
                    tracing::warn!(error = ?error, "could not refresh the token issuer's keys; using the cached ones");
                }
                Err(_) => return Err(AuthFailure::IssuerUnavailable),
            }
        }
        let Some(set) = keys else {
            return Err(AuthFailure::IssuerUnavailable);
        };
        match select(&set, kid, alg) {
            Selected::Key(key) => return Ok(key),
            Selected::Mismatch => return Err(AuthFailure::DisallowedAlgorithm),
            Selected::Missing => {}
        }
        // An unknown key id: the issuer may have rotated its keys. Refetch, within the budget.
        match self.refresh_keys(set.generation).await {
            Ok(fresh) => match select(&fresh, kid, alg) {
                Selected::Key(key) => Ok(key),
                Selected::Mismatch => Err(AuthFailure::DisallowedAlgorithm),
                Selected::Missing => Err(AuthFailure::UnknownKeyId),
            },
            Err(_) => Err(AuthFailure::UnknownKeyId),
        }
    }

    /// Refetches the JWKS unless another request already did since `seen_generation` was read.
    async fn refresh_keys(&self, seen_generation: u64) -> Result<Arc<KeySet>, FetchError> {
        let mut jwks_url = self.refresh.lock().await;
        if let Some(current) = self.cached()
            && current.generation > seen_generation
        {
            return Ok(current);
        }
        if self.refresh_budget.check().is_err() {
            self.count("throttled");
            return Err(FetchError::Throttled);
        }
        let result = async {
            let url = match jwks_url.clone() {
                Some(url) => url,
                None => {
                    let url = self.discover_jwks_url().await?;
                    *jwks_url = Some(url.clone());
                    url
                }
            };
            self.fetch_keys(&url).await
        }
        .await;
        match result {
            Ok(keys) => {
                self.count("success");
                let set = Arc::new(KeySet {
                    keys,
                    fetched: Instant::now(),
                    generation: seen_generation.max(self.cached().map_or(0, |s| s.generation)) + 1,
                });
                match self.keys.write() {
                    Ok(mut guard) => *guard = Some(set.clone()),
                    Err(poisoned) => *poisoned.into_inner() = Some(set.clone()),
                }
                tracing::info!(keys = set.keys.len(), "token issuer's keys fetched");
                Ok(set)
            }
            Err(error) => {
                self.count("error");
                tracing::warn!(%error, "fetching the token issuer's keys failed");
                Err(FetchError::Failed)
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .jwks_fetches
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    async fn get_json(&self, url: &Url) -> Result<Value, String> {
        let response = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|error| format!("{} unreachable ({})", url, error_class(&error)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{url} answered HTTP {}", status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(format!("{url} answered more than {MAX_DOCUMENT_BYTES} bytes"));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|error| format!("{url} body unreadable ({})", error_class(&error)))?;
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{url} answered more than {MAX_DOCUMENT_BYTES} bytes"));
        }
        serde_json::from_slice(&bytes).map_err(|_| format!("{url} did not answer JSON"))
    }

    /// The JWKS URL from the issuer's metadata: OpenID Connect discovery, then RFC 8414.
    async fn discover_jwks_url(&self) -> Result<Url, String> {
        let mut errors = Vec::new();
        for url in metadata_urls(&self.settings.issuer)? {
            match self.get_json(&url).await {
                Ok(document) => {
                    let issuer = document.get("issuer").and_then(Value::as_str);
                    if issuer != Some(self.settings.issuer.as_str()) {
                        errors.push(format!("{url} names another issuer"));
                        continue;
                    }
                    let Some(jwks) = document.get("jwks_uri").and_then(Value::as_str) else {
                        errors.push(format!("{url} has no jwks_uri"));
                        continue;
                    };
                    return Url::parse(jwks).map_err(|_| format!("{url} has an invalid jwks_uri"));
                }
                Err(error) => errors.push(error),
            }
        }
        Err(format!("issuer discovery failed: {}", errors.join("; ")))
    }

    async fn fetch_keys(&self, url: &Url) -> Result<Vec<VerifyingKey>, String> {
        let document = self.get_json(url).await?;
        let Some(list) = document.get("keys").and_then(Value::as_array) else {
            return Err(format!("{url} is not a JWKS (no keys list)"));
        };
        let keys: Vec<VerifyingKey> = list.iter().filter_map(verifying_key).collect();
        if keys.is_empty() {
            return Err(format!("{url} holds no usable signing key"));
        }
        Ok(keys)
    }
}

/// Turns one JWK into a verifying key; skips encryption keys, symmetric keys and unsupported algorithms.
fn verifying_key(value: &Value) -> Option<VerifyingKey> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    if matches!(jwk.common.public_key_use, Some(ref usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    if matches!(
        jwk.algorithm,
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
    ) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        Some(alg) => {
            let alg = Algorithm::from_str(&alg.to_string()).ok()?;
            if !ALLOWED_ALGORITHMS.contains(&alg) {
                return None;
            }
            Some(alg)
        }
        None => None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(VerifyingKey {
        kid: jwk.common.key_id,
        alg,
        key,
    })
}

enum Selected {
    Key(DecodingKey),
    /// The key exists but does not fit the token's algorithm.
    Mismatch,
    Missing,
}

fn select(set: &KeySet, kid: Option<&str>, alg: Algorithm) -> Selected {
    let candidate = match kid {
        Some(kid) => set.keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
        // Without a kid, only an issuer with a single key is unambiguous.
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    };
    match candidate {
        None => Selected::Missing,
        Some(key) if key.key.family() != alg.family() => Selected::Mismatch,
        Some(key) if key.alg.is_some_and(|pinned| pinned != alg) => Selected::Mismatch,
        Some(key) => Selected::Key(key.key.clone()),
    }
}

fn map_error(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthFailure::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => AuthFailure::DisallowedAlgorithm,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::MissingRequiredClaim(_) => AuthFailure::MissingClaim,
        _ => AuthFailure::MalformedToken,
    }
}

fn error_class(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_decode() || error.is_body() {
        "bad body"
    } else {
        "request failed"
    }
}

/// Where an issuer publishes its metadata: OpenID Connect (`{issuer}/.well-known/openid-configuration`)
/// and RFC 8414 (`{origin}/.well-known/oauth-authorization-server{path}`).
pub fn metadata_urls(issuer: &str) -> Result<Vec<Url>, String> {
    let parsed = Url::parse(issuer).map_err(|_| "the OAuth issuer is not a URL".to_string())?;
    let trimmed = issuer.trim_end_matches('/');
    let oidc = Url::parse(&format!("{trimmed}/.well-known/openid-configuration"))
        .map_err(|_| "the OAuth issuer is not a URL".to_string())?;
    let path = parsed.path().trim_end_matches('/');
    let mut rfc8414 = parsed.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    rfc8414.set_query(None);
    Ok(vec![oidc, rfc8414])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_follow_oidc_and_rfc8414() {
        let urls = metadata_urls("https://login.example.com").unwrap();
        assert_eq!(
            urls[0].as_str(),
            "https://login.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            urls[1].as_str(),
            "https://login.example.com/.well-known/oauth-authorization-server"
        );
        let urls = metadata_urls("https://login.example.com/realms/acme/").unwrap();
        assert_eq!(
            urls[0].as_str(),
            "https://login.example.com/realms/acme/.well-known/openid-configuration"
        );
        assert_eq!(
            urls[1].as_str(),
            "https://login.example.com/.well-known/oauth-authorization-server/realms/acme"
        );
    }

    #[test]
    fn hmac_and_none_are_not_allowed() {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            assert!(!ALLOWED_ALGORITHMS.contains(&alg));
        }
        for alg in ALLOWED_ALGORITHMS {
            assert_ne!(alg.family(), jsonwebtoken::AlgorithmFamily::Hmac);
        }
    }

    #[test]
    fn symmetric_and_encryption_keys_are_never_used() {
        let oct = serde_json::json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"});
        assert!(verifying_key(&oct).is_none());
        let enc = serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "enc", "kid": "e",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        });
        assert!(verifying_key(&enc).is_none());
        let sig = serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "kid": "e", "alg": "ES256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        });
        let key = verifying_key(&sig).expect("an EC signing key");
        assert_eq!(key.alg, Some(Algorithm::ES256));
        let hs = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "e", "alg": "HS256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        });
        assert!(verifying_key(&hs).is_none());
    }
}
