//! Pure validation of a `LumenoreConnector`: the CEL rules re-checked in Rust (objects stored before a
//! rule existed, or created with validation off), and the operator's region guard.

use crate::crd::{AuthMode, Backend, Cloud, LumenoreConnector, OTLP_ENDPOINT_PATTERN, Otlp};

/// What this operator's cluster is; `None` fields are not checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// Cloud of this cluster (`--cluster-cloud`).
    pub cloud: Option<Cloud>,
    /// Region of this cluster (`--cluster-region`).
    pub region: Option<String>,
}

/// Why a CR is not deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The spec breaks a rule; the message names the field and the rule.
    InvalidSpec(String),
    /// The CR belongs to another cloud or region than this cluster.
    RegionMismatch(String),
    /// The stored object does not deserialize into the current types.
    InvalidObject(String),
}

impl Rejection {
    /// Condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::InvalidSpec(_) => "InvalidSpec",
            Rejection::RegionMismatch(_) => "RegionMismatch",
            Rejection::InvalidObject(_) => "InvalidObject",
        }
    }
    /// Human-readable message.
    pub fn message(&self) -> &str {
        match self {
            Rejection::InvalidSpec(m) | Rejection::RegionMismatch(m) | Rejection::InvalidObject(m) => m,
        }
    }
}

/// Is `s` a DNS label (RFC 1123)?
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Is `s` a DNS-1035 label (at most 63 characters, starts with a letter)? Service names must be.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// Is `s` a valid label value (at most 63 characters of `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`)?
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

fn is_https_url(s: &str) -> bool {
    s.strip_prefix("https://")
        .map(|rest| {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.contains(char::is_whitespace)
        })
        .unwrap_or(false)
}

/// Validate `lc` for a cluster with identity `cluster`. `Ok` carries the Accepted condition message.
pub fn validate(lc: &LumenoreConnector, cluster: &ClusterIdentity) -> Result<String, Rejection> {
    let spec = &lc.spec;
    let invalid = |m: String| Err(Rejection::InvalidSpec(m));
    let name = lc.metadata.name.as_deref().unwrap_or("");
    if !is_dns1035_label(name) {
        return invalid(format!(
            "metadata.name {name:?} is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters): it names the connector's Service; recreate the connector under a valid name"
        ));
    }
    if !is_dns_label(&spec.tenant) {
        return invalid(format!(
            "spec.tenant {:?} is not a DNS label (lowercase letters, digits and '-', at most 63 characters)",
            spec.tenant
        ));
    }
    if spec.region.name.is_empty() || !is_label_value(&spec.region.name) {
        return invalid(format!(
            "spec.region.name {:?} is not a label value (letters, digits, '-', '_' and '.', starting and ending with a letter or digit, at most 63 characters)",
            spec.region.name
        ));
    }
    if spec.backend == Backend::Lumenore && !is_https_url(&spec.server_url) {
        return invalid("spec.serverUrl must be an https URL".into());
    }
    match &spec.credentials {
        None if spec.backend == Backend::Lumenore => {
            return invalid("spec.credentials is required when spec.backend is lumenore".into());
        }
        Some(c) => {
            let client = c.client_id_key.is_some() && c.client_secret_key.is_some();
            let partial = c.client_id_key.is_some() != c.client_secret_key.is_some();
            let token = c.api_token_key.is_some();
            if partial || client == token {
                return invalid(
                    "spec.credentials must set either clientIdKey and clientSecretKey, or apiTokenKey (exactly one form)"
                        .into(),
                );
            }
            if c.secret_name.is_empty() {
                return invalid("spec.credentials.secretName must not be empty".into());
            }
        }
        None => {}
    }
    if spec.replicas.is_some_and(|r| r < 0) {
        return invalid("spec.replicas must not be negative".into());
    }
    match spec.auth.mode {
        AuthMode::ApiKeys if spec.auth.api_keys.is_none() => {
            return invalid("spec.auth.apiKeys is required when spec.auth.mode is apiKeys".into());
        }
        AuthMode::Oauth => match &spec.auth.oauth {
            None => return invalid("spec.auth.oauth is required when spec.auth.mode is oauth".into()),
            Some(o) if !is_https_url(&o.issuer) => {
                return invalid("spec.auth.oauth.issuer must be an https URL".into());
            }
            Some(o) if o.audience.is_empty() => {
                return invalid("spec.auth.oauth.audience must not be empty".into());
            }
            _ => {}
        },
        _ => {}
    }

    if let Some(otlp) = spec.telemetry.as_ref().and_then(|t| t.otlp.as_ref())
        && let Err(m) = validate_otlp(otlp)
    {
        return invalid(m);
    }
    if let Some(store) = spec.rate_limits.as_ref().and_then(|r| r.store.as_ref())
        && let Err(m) = validate_store(store)
    {
        return invalid(m);
    }

    if let Some(cloud) = cluster.cloud
        && cloud != spec.region.cloud
    {
        return Err(Rejection::RegionMismatch(format!(
            "this operator runs in cloud {}, the connector is for cloud {}: not deployed here, so the tenant's data stays in its region",
            cloud.as_str(),
            spec.region.cloud.as_str()
        )));
    }
    if let Some(region) = &cluster.region
        && region != &spec.region.name
    {
        return Err(Rejection::RegionMismatch(format!(
            "this operator runs in region {region}, the connector is for region {}: not deployed here, so the tenant's data stays in its region",
            spec.region.name
        )));
    }

    let mut msg = String::from("spec is valid and the region matches this cluster");
    if spec.auth.mode == AuthMode::None {
        msg.push_str(
            "; auth.mode is none: any caller that can reach the pods is served (LUMENORE_ALLOW_UNAUTHENTICATED=true)",
        );
    }
    Ok(msg)
}

/// The rules of `spec.telemetry.otlp` (the CRD's CEL and schema rules, re-checked for objects stored
/// before they existed). The endpoint's value is not echoed: it is the user's.
fn validate_otlp(otlp: &Otlp) -> Result<(), String> {
    static ENDPOINT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let endpoint = ENDPOINT.get_or_init(|| regex::Regex::new(OTLP_ENDPOINT_PATTERN).expect("valid pattern"));
    if otlp.endpoint.len() > 2048 || !endpoint.is_match(&otlp.endpoint) {
        return Err("spec.telemetry.otlp.endpoint must be an http or https URL with a host and an explicit port (1-65535), e.g. http://otel-collector.observability.svc:4318".into());
    }
    if let Some(h) = &otlp.headers_secret_ref
        && (h.name.is_empty() || h.key.is_empty())
    {
        return Err("spec.telemetry.otlp.headersSecretRef needs a Secret name and a key".into());
    }
    if let Some(name) = &otlp.service_name {
        let ok = (1..=255).contains(&name.len())
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if !ok {
            return Err("spec.telemetry.otlp.serviceName must be 1-255 letters, digits, '.', '_' and '-', starting with a letter or digit".into());
        }
    }
    if let Some(r) = otlp.sampling_ratio
        && !(0.0..=1.0).contains(&r)
    {
        return Err("spec.telemetry.otlp.samplingRatio must be between 0 and 1".into());
    }
    Ok(())
}

/// The rate-limit store, as the connector will check it (`Config::store_settings`): a resource the API
/// server admitted (schema, CEL) but the connector would refuse is refused here, instead of pods that
/// crash at start.
pub fn validate_store(store: &crate::crd::RateLimitStore) -> Result<(), String> {
    let rule = "spec.rateLimits.store.redis.url must be redis://host[:port][/db] or rediss://…, without a user, password, query or fragment";
    let url = url::Url::parse(&store.redis.url).map_err(|_| rule.to_string())?;
    let db = url.path().trim_start_matches('/');
    let db_ok = db.is_empty() || db.len() <= 2 && db.bytes().all(|b| b.is_ascii_digit());
    if !matches!(url.scheme(), "redis" | "rediss")
        || url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || !db_ok
    {
        return Err(rule.into());
    }
    if let Some(timeout) = &store.timeout {
        let positive = timeout
            .trim_end_matches("ms")
            .trim_end_matches('s')
            .parse::<u64>()
            .is_ok_and(|n| n > 0);
        if !positive {
            return Err(format!(
                "spec.rateLimits.store.timeout {timeout:?} must be a positive duration in ms or s (e.g. 50ms)"
            ));
        }
    }
    Ok(())
}
