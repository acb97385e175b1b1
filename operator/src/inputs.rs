//! Reading the inputs of a reconcile: the Secrets a CR references, read directly with a GET (never
//! cached by the operator), their named keys checked, and a hash of the used values computed. The
//! values never leave this module and are never logged.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use crate::crd::LumenoreConnector;

/// A problem with a referenced Secret; it makes the connector not Ready until fixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretProblem {
    /// The Secret does not exist.
    NotFound { secret: String },
    /// The Secret exists but lacks a key (or the key is empty).
    KeyMissing { secret: String, key: String },
}

impl SecretProblem {
    /// Condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            SecretProblem::NotFound { .. } => "SecretNotFound",
            SecretProblem::KeyMissing { .. } => "SecretKeyMissing",
        }
    }
    /// Human-readable message (names only, never values).
    pub fn message(&self) -> String {
        match self {
            SecretProblem::NotFound { secret } => format!("Secret {secret} not found"),
            SecretProblem::KeyMissing { secret, key } => {
                format!("Secret {secret} has no key {key} (or it is empty)")
            }
        }
    }
}

/// What the reconcile learned from the Secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    /// sha256 of the credential values in use, when the CR has credentials.
    pub credentials_hash: Option<String>,
    /// The first problem found, if any.
    pub problem: Option<SecretProblem>,
}

/// Hash of the values of `keys` (in the given order) of a Secret's data. Each key name and value is
/// length-prefixed, so different splits of the same bytes hash differently.
pub fn hash_values<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (k, v) in pairs {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    hex::encode(h.finalize())
}

/// Check that `secret` has non-empty `keys`; on success return the hash of their values.
pub fn check_keys(secret_name: &str, secret: &Secret, keys: &[&str]) -> Result<String, SecretProblem> {
    let empty = Default::default();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let mut pairs = Vec::with_capacity(keys.len());
    for key in keys {
        match data.get(*key) {
            Some(v) if !v.0.is_empty() => pairs.push((*key, v.0.as_slice())),
            _ => {
                return Err(SecretProblem::KeyMissing {
                    secret: secret_name.to_string(),
                    key: key.to_string(),
                });
            }
        }
    }
    Ok(hash_values(pairs))
}

async fn get_secret(api: &Api<Secret>, name: &str) -> Result<Option<Secret>, kube::Error> {
    api.get_opt(name).await
}

/// Read the Secrets `lc` references. API errors other than "not found" are returned as errors (the
/// reconcile is retried with backoff); a missing Secret or key is reported in [`Inputs::problem`].
pub async fn read_inputs(client: &Client, lc: &LumenoreConnector) -> Result<Inputs, kube::Error> {
    let ns = lc.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = Inputs::default();

    if let Some(creds) = &lc.spec.credentials {
        let keys: Vec<&str> = creds.keys().into_iter().map(|(_, k)| k).collect();
        match get_secret(&api, &creds.secret_name).await? {
            None => {
                out.problem = Some(SecretProblem::NotFound {
                    secret: creds.secret_name.clone(),
                });
                return Ok(out);
            }
            Some(secret) => match check_keys(&creds.secret_name, &secret, &keys) {
                Ok(h) => out.credentials_hash = Some(h),
                Err(p) => {
                    out.problem = Some(p);
                    return Ok(out);
                }
            },
        }
    }

    // The OTLP headers reach the connector as an environment variable, read at start: their hash
    // joins the credentials hash, so a rotation rolls the pods. (Unset: the hash is unchanged.)
    if let Some(h) = lc
        .spec
        .telemetry
        .as_ref()
        .and_then(|t| t.otlp.as_ref())
        .and_then(|o| o.headers_secret_ref.as_ref())
    {
        match get_secret(&api, &h.name).await? {
            None => {
                out.problem = Some(SecretProblem::NotFound {
                    secret: h.name.clone(),
                });
                return Ok(out);
            }
            Some(secret) => match check_keys(&h.name, &secret, &[h.key.as_str()]) {
                Ok(headers) => {
                    let previous = out.credentials_hash.take().unwrap_or_default();
                    out.credentials_hash = Some(hash_values([
                        ("credentials", previous.as_bytes()),
                        ("otlp-headers", headers.as_bytes()),
                    ]));
                }
                Err(p) => {
                    out.problem = Some(p);
                    return Ok(out);
                }
            },
        }
    }

    if lc.spec.auth.mode == crate::crd::AuthMode::ApiKeys
        && let Some(keys) = &lc.spec.auth.api_keys
    {
        // Only presence is checked: the keys file is mounted as a volume and reloaded in place by the
        // connector, so its content must not roll the pods.
        match get_secret(&api, &keys.secret_name).await? {
            None => {
                out.problem = Some(SecretProblem::NotFound {
                    secret: keys.secret_name.clone(),
                })
            }
            Some(secret) => {
                if let Err(p) = check_keys(&keys.secret_name, &secret, &[keys.key.as_str()]) {
                    out.problem = Some(p);
                }
            }
        }
    }
    Ok(out)
}

/// Names of the Secrets `lc` references (for mapping Secret events to CRs).
pub fn referenced_secrets(lc: &LumenoreConnector) -> impl Iterator<Item = &str> {
    let creds = lc.spec.credentials.as_ref().map(|c| c.secret_name.as_str());
    let keys = lc.spec.auth.api_keys.as_ref().map(|k| k.secret_name.as_str());
    let headers = lc
        .spec
        .telemetry
        .as_ref()
        .and_then(|t| t.otlp.as_ref())
        .and_then(|o| o.headers_secret_ref.as_ref())
        .map(|h| h.name.as_str());
    creds.into_iter().chain(keys).chain(headers)
}
