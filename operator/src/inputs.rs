//! Reading the inputs of a reconcile: the Secrets a CR references, read directly with a GET (never
//! cached by the operator), their named keys checked, and a hash of the used values computed. The
//! values never leave this module and are never logged. Also the in-cluster Services among the URLs
//! the connector calls, for the ports its NetworkPolicy must allow (see [`resolve_egress`]).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ListParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use crate::builders::{self, EgressPorts, ServiceEgress};
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
    /// The egress endpoints that name an in-cluster Service, with the pods' ports behind them (for
    /// [`builders::BuildInputs::egress_services`]). Not read when there is a problem.
    pub egress_services: Vec<ServiceEgress>,
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

    // Values the connector reads once, at start: the OTLP headers (an environment variable), the
    // rate-limit store's password (one too) and its CA bundle (a file it loads once). Their hashes join the
    // credentials hash, so a rotation rolls the pods. (Unset: the hash is unchanged.)
    let otlp_headers = lc
        .spec
        .telemetry
        .as_ref()
        .and_then(|t| t.otlp.as_ref())
        .and_then(|o| o.headers_secret_ref.as_ref());
    let redis = lc
        .spec
        .rate_limits
        .as_ref()
        .and_then(|r| r.store.as_ref())
        .map(|s| &s.redis);
    let read_at_start = [
        ("otlp-headers", otlp_headers),
        (
            "rate-limit-store-password",
            redis.and_then(|r| r.password_secret_ref.as_ref()),
        ),
        (
            "rate-limit-store-ca",
            redis.and_then(|r| r.ca_secret_ref.as_ref()),
        ),
    ];
    for (label, reference) in read_at_start {
        let Some(reference) = reference else { continue };
        match get_secret(&api, &reference.name).await? {
            None => {
                out.problem = Some(SecretProblem::NotFound {
                    secret: reference.name.clone(),
                });
                return Ok(out);
            }
            Some(secret) => match check_keys(&reference.name, &secret, &[reference.key.as_str()]) {
                Ok(value) => {
                    let previous = out.credentials_hash.take().unwrap_or_default();
                    out.credentials_hash = Some(hash_values([
                        ("credentials", previous.as_bytes()),
                        (label, value.as_bytes()),
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
    if out.problem.is_none() {
        out.egress_services = resolve_egress(client, lc).await?;
    }
    Ok(out)
}

/// A host that may name a Service: `name` in `namespace`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceHost {
    pub name: String,
    pub namespace: String,
    /// `<svc>.<ns>.svc` or `<svc>.<ns>.svc.<cluster domain>`: a Service by its form, so a failure to
    /// read it is reported. `<svc>.<ns>` and a bare `<svc>` (the CR's namespace) are Services only
    /// when one answers the GET: `api.example` may be a public name.
    pub explicit: bool,
}

fn is_label(s: &str, first: fn(char) -> bool) -> bool {
    s.len() <= 63
        && s.starts_with(first)
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The Service `host` may name, seen from a pod in `namespace` (DNS search path `<ns>.svc.<domain>`,
/// `svc.<domain>`). Service names are DNS-1035 labels (a letter first), namespaces DNS-1123 labels;
/// so IP addresses and names of more labels without `.svc` as the third are not Services.
pub fn service_host(host: &str, namespace: &str) -> Option<ServiceHost> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let (name, ns, explicit) = match labels.as_slice() {
        [name] => (*name, namespace, false),
        [name, ns] => (*name, *ns, false),
        [name, ns, "svc", ..] => (*name, *ns, true),
        _ => return None,
    };
    (is_label(name, |c| c.is_ascii_lowercase()) && is_label(ns, |c| c.is_ascii_alphanumeric())).then(|| {
        ServiceHost {
            name: name.to_string(),
            namespace: ns.to_string(),
            explicit,
        }
    })
}

fn forbidden_or_missing(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) if s.code == 403 || s.code == 404 => Some(s.code),
        _ => None,
    }
}

/// For each egress endpoint (see [`builders::egress_endpoints`]) whose host names an in-cluster
/// Service, the pods' ports behind its URL's port: the matching ServicePort's `targetPort` when a
/// number (the port itself when unset); a named `targetPort` (and any port of a Service without a
/// selector, whose EndpointSlices someone else writes) from the Service's EndpointSlices, whose
/// ports are named after the Service's ports and carry the pods' numbers (discovery.k8s.io/v1
/// EndpointPort: `name` "corresponds to the Service.ports[].name", `port` "must be set to the
/// service's target port"). Headless and ExternalName Services are not translated: the URL's port
/// stays. Nothing is read when the CR has no NetworkPolicy. A 404 or 403 on a two-label or bare name
/// means "not a Service"; on a `.svc` name, and anything else left unresolved, the URL's port is
/// kept and the reason reported. Other API errors are returned (the reconcile is retried).
pub async fn resolve_egress(
    client: &Client,
    lc: &LumenoreConnector,
) -> Result<Vec<ServiceEgress>, kube::Error> {
    if !lc.spec.network.network_policy {
        return Ok(Vec::new());
    }
    let cr_ns = lc.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Vec::new();
    for (host, port) in builders::egress_endpoints(lc) {
        let Some(sh) = service_host(&host, cr_ns) else {
            continue;
        };
        let services: Api<Service> = Api::namespaced(client.clone(), &sh.namespace);
        let ports = match services.get(&sh.name).await {
            Ok(svc) => target_ports(client, &sh, &svc, port).await?,
            Err(e) => match forbidden_or_missing(&e) {
                None => return Err(e),
                Some(_) if !sh.explicit => None,
                Some(404) => Some(EgressPorts::Unresolved("no such Service".into())),
                Some(_) => Some(EgressPorts::Unresolved(format!(
                    "the operator may not get Services in namespace {}",
                    sh.namespace
                ))),
            },
        };
        if let Some(ports) = ports {
            out.push(ServiceEgress { host, port, ports });
        }
    }
    Ok(out)
}

/// The pods' ports behind port `port` of `svc`; `None` when the Service does not translate it.
async fn target_ports(
    client: &Client,
    sh: &ServiceHost,
    svc: &Service,
    port: u16,
) -> Result<Option<EgressPorts>, kube::Error> {
    let Some(spec) = &svc.spec else {
        return Ok(None);
    };
    if spec.type_.as_deref() == Some("ExternalName") || spec.cluster_ip.as_deref() == Some("None") {
        // No virtual IP: the connector connects to the URL's port itself.
        return Ok(None);
    }
    let tcp = |p: &ServicePort| p.protocol.as_deref().unwrap_or("TCP") == "TCP";
    let Some(sp) = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port) && tcp(p))
    else {
        return Ok(Some(EgressPorts::Unresolved(format!(
            "the Service has no TCP port {port}"
        ))));
    };
    let selector = spec.selector.as_ref().is_some_and(|s| !s.is_empty());
    match &sp.target_port {
        None if selector => return Ok(Some(EgressPorts::Target(vec![sp.port]))),
        Some(IntOrString::Int(n)) if selector => return Ok(Some(EgressPorts::Target(vec![*n]))),
        _ => {}
    }
    let what = match &sp.target_port {
        Some(IntOrString::String(name)) => format!("named targetPort {name}"),
        _ => "a Service without a selector".to_string(),
    };
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &sh.namespace);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={}", sh.name));
    let list = match slices.list(&lp).await {
        Ok(list) => list,
        Err(e) if forbidden_or_missing(&e).is_some() => {
            return Ok(Some(EgressPorts::Unresolved(format!(
                "{what}: the operator may not list EndpointSlices in namespace {}",
                sh.namespace
            ))));
        }
        Err(e) => return Err(e),
    };
    let port_name = sp.name.as_deref().unwrap_or("");
    let found: BTreeSet<i32> = list
        .items
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter(|p| p.name.as_deref().unwrap_or("") == port_name)
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| p.port)
        .collect();
    Ok(Some(if found.is_empty() {
        EgressPorts::Unresolved(format!("{what}: no EndpointSlice port yet"))
    } else {
        EgressPorts::Target(found.into_iter().collect())
    }))
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
    let store = lc
        .spec
        .rate_limits
        .as_ref()
        .and_then(|r| r.store.as_ref())
        .into_iter()
        .flat_map(|s| {
            [
                s.redis.password_secret_ref.as_ref(),
                s.redis.ca_secret_ref.as_ref(),
            ]
        })
        .flatten()
        .map(|r| r.name.as_str());
    creds.into_iter().chain(keys).chain(headers).chain(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, namespace: &str, explicit: bool) -> Option<ServiceHost> {
        Some(ServiceHost {
            name: name.into(),
            namespace: namespace.into(),
            explicit,
        })
    }

    #[test]
    fn hosts_that_may_name_a_service() {
        let t = |h| service_host(h, "tenants");
        assert_eq!(t("otel.observability.svc"), sh("otel", "observability", true));
        assert_eq!(
            t("otel.observability.svc.cluster.local"),
            sh("otel", "observability", true)
        );
        assert_eq!(
            t("otel.observability.svc.corp.internal."),
            sh("otel", "observability", true)
        );
        assert_eq!(t("otel.observability"), sh("otel", "observability", false));
        assert_eq!(t("otel"), sh("otel", "tenants", false));
        // Public names of three labels or more, IP addresses, pod DNS names, invalid labels: never.
        for host in [
            "api.example.com",
            "10.0.0.7",
            "[fd00::7]",
            "10-0-0-7.observability.pod.cluster.local",
            "7otel.observability",
            "otel-.observability",
            "otel.-ns",
            "otel..svc",
        ] {
            assert_eq!(t(host), None, "{host}");
        }
    }
}
