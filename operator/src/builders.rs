//! Pure functions building the child objects of a `LumenoreConnector`.
//!
//! Nothing here talks to the API server: each function takes the CR plus the inputs read for it and
//! returns the object to server-side apply. Fields the operator must not own (Deployment replicas when
//! `spec.replicas` is unset, the `kubectl.kubernetes.io/restartedAt` annotation, labels added by other
//! tools) are simply never set, so server-side apply leaves them with their owners.

use std::collections::BTreeMap;

use lumenore_contract::env as cenv;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServiceAccount,
    ServicePort, ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{AuthMode, Backend, LumenoreConnector, RateLimitStore};

/// Port of every connector endpoint (`/mcp`, `/healthz`, `/readyz`, `/metrics`).
pub const CONNECTOR_PORT: i32 = 8080;
/// Pod-template annotation carrying the sha256 of the credential values in use.
pub const CREDENTIALS_HASH_ANNOTATION: &str = "lumenore.io/credentials-hash";
/// Node label pinning pods to the tenant's region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Node label the pods are spread over.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Directory where the API keys Secret is mounted.
pub const API_KEYS_DIR: &str = "/etc/lumenore/api-keys";
/// Non-root user and group of the connector container.
pub const RUN_AS: i64 = 65532;

/// Everything the builders need besides the CR itself.
#[derive(Clone, Debug, Default)]
pub struct BuildInputs {
    /// Image used when the CR sets none.
    pub default_image: String,
    /// sha256 (hex) of the credential key values, when the CR uses credentials.
    pub credentials_hash: Option<String>,
    /// Namespace whose pods (Prometheus) may reach the connector's port to scrape `/metrics`.
    pub monitoring_namespace: Option<String>,
    /// The egress endpoints whose host names an in-cluster Service, with the pods' ports behind the
    /// URL's (Service) port, as [`crate::inputs::read_inputs`] read them. Endpoints not listed keep
    /// their URL's port; empty (the default): every endpoint does.
    pub egress_services: Vec<ServiceEgress>,
}

/// The children a CR asks for. `None` means "this child must not exist".
#[derive(Clone, Debug)]
pub struct Children {
    pub service_account: ServiceAccount,
    pub deployment: Deployment,
    pub service: Service,
    pub network_policy: Option<NetworkPolicy>,
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
}

/// Build every child of `lc`.
pub fn build_children(lc: &LumenoreConnector, inputs: &BuildInputs) -> Children {
    Children {
        service_account: service_account(lc),
        deployment: deployment(lc, inputs),
        service: service(lc),
        network_policy: network_policy_with(
            lc,
            inputs.monitoring_namespace.as_deref(),
            &inputs.egress_services,
        ),
        pod_disruption_budget: pod_disruption_budget(lc),
    }
}

/// Name shared by every child (the CR's name).
pub fn child_name(lc: &LumenoreConnector) -> String {
    lc.name_any()
}

/// Labels selecting the connector pods. Kept minimal: a Deployment selector is immutable.
pub fn selector_labels(lc: &LumenoreConnector) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "lumenore-connector".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), lc.name_any()),
    ])
}

/// The label selector as a string, for the scale subresource.
pub fn selector_string(lc: &LumenoreConnector) -> String {
    selector_labels(lc)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels put on every child.
pub fn labels(lc: &LumenoreConnector) -> BTreeMap<String, String> {
    let mut l = selector_labels(lc);
    l.insert("app.kubernetes.io/component".into(), "connector".into());
    l.insert("app.kubernetes.io/managed-by".into(), crate::crd::MANAGER.into());
    l.insert("lumenore.io/tenant".into(), lc.spec.tenant.clone());
    l.insert("lumenore.io/cloud".into(), lc.spec.region.cloud.as_str().into());
    l.insert("lumenore.io/region".into(), lc.spec.region.name.clone());
    l
}

/// Controller owner reference to the CR (garbage collection removes children with it).
pub fn owner_reference(lc: &LumenoreConnector) -> OwnerReference {
    lc.controller_owner_ref(&()).unwrap_or_else(|| OwnerReference {
        api_version: LumenoreConnector::api_version(&()).into_owned(),
        kind: LumenoreConnector::kind(&()).into_owned(),
        name: lc.name_any(),
        uid: lc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn meta(lc: &LumenoreConnector) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(lc)),
        namespace: lc.namespace(),
        labels: Some(labels(lc)),
        owner_references: Some(vec![owner_reference(lc)]),
        ..Default::default()
    }
}

/// Service name and in-cluster endpoint of the connector.
pub fn endpoint(lc: &LumenoreConnector) -> String {
    format!(
        "http://{}.{}.svc:{CONNECTOR_PORT}/mcp",
        child_name(lc),
        lc.namespace().unwrap_or_else(|| "default".into())
    )
}

/// ServiceAccount of the pods; no API token is mounted (the connector never calls the API server).
pub fn service_account(lc: &LumenoreConnector) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(lc),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// Host header values the connector accepts: the Service's in-cluster names plus the CR's extra hosts,
/// each with and without `:8080`.
pub fn allowed_hosts(lc: &LumenoreConnector) -> Vec<String> {
    let svc = child_name(lc);
    let ns = lc.namespace().unwrap_or_else(|| "default".into());
    let mut bases = vec![
        svc.clone(),
        format!("{svc}.{ns}"),
        format!("{svc}.{ns}.svc"),
        format!("{svc}.{ns}.svc.cluster.local"),
    ];
    for h in &lc.spec.network.extra_allowed_hosts {
        if !bases.contains(h) {
            bases.push(h.clone());
        }
    }
    let mut out = Vec::with_capacity(bases.len() * 2);
    for b in bases {
        let with_port = format!("{b}:{CONNECTOR_PORT}");
        let has_port = b.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        out.push(b);
        if !has_port {
            out.push(with_port);
        }
    }
    out
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Environment of the connector container: only names of the connector's contract (`lumenore_contract::env`).
pub fn connector_env(lc: &LumenoreConnector) -> Vec<EnvVar> {
    let spec = &lc.spec;
    let mut out = vec![
        env(cenv::LISTEN, format!("0.0.0.0:{CONNECTOR_PORT}")),
        env(cenv::BACKEND, spec.backend.as_str()),
        env(cenv::LOG_FORMAT, "json"),
        env(cenv::ALLOWED_HOSTS, allowed_hosts(lc).join(",")),
    ];
    if !spec.network.allowed_origins.is_empty() {
        out.push(env(cenv::ALLOWED_ORIGINS, spec.network.allowed_origins.join(",")));
    }
    if spec.backend == Backend::Lumenore {
        out.push(env(cenv::SERVER_URL, spec.server_url.clone()));
    }
    if let Some(creds) = &spec.credentials {
        for (var, key) in creds.keys() {
            out.push(secret_env(var, &creds.secret_name, key));
        }
    }
    out.push(env(cenv::AUTH_MODE, spec.auth.mode.env_value()));
    match spec.auth.mode {
        AuthMode::None => out.push(env(cenv::ALLOW_UNAUTHENTICATED, "true")),
        AuthMode::ApiKeys => {
            if let Some(keys) = &spec.auth.api_keys {
                out.push(env(cenv::API_KEYS_FILE, format!("{API_KEYS_DIR}/{}", keys.key)));
            }
        }
        AuthMode::Oauth => {
            if let Some(o) = &spec.auth.oauth {
                out.push(env(cenv::OAUTH_ISSUER, o.issuer.clone()));
                out.push(env(cenv::OAUTH_AUDIENCE, o.audience.clone()));
                if let Some(j) = &o.jwks_url {
                    out.push(env(cenv::OAUTH_JWKS_URL, j.clone()));
                }
            }
        }
    }
    out.push(env(
        cenv::PUBLIC_URL,
        spec.public_url.clone().unwrap_or_else(|| endpoint(lc)),
    ));
    out.extend(otel_env(lc));
    if let Some(r) = &spec.rate_limits {
        if let Some(v) = r.per_caller_per_minute {
            out.push(env(cenv::RATE_LIMIT_CALLER_PER_MINUTE, v.to_string()));
        }
        if let Some(v) = r.tenant_per_minute {
            out.push(env(cenv::RATE_LIMIT_TENANT_PER_MINUTE, v.to_string()));
        }
        if let Some(v) = r.max_concurrent_backend_calls {
            out.push(env(cenv::MAX_CONCURRENT_BACKEND_CALLS, v.to_string()));
        }
        if let Some(store) = &r.store {
            out.extend(store_env(lc, store));
        }
        if shares_wanted(lc) {
            out.push(env(
                cenv::RATE_LIMIT_SHARES_FILE,
                format!("{SHARES_DIR}/{SHARES_KEY}"),
            ));
        }
    }
    out
}

/// Where the rate-limit shares ConfigMap is mounted, and its one key.
pub const SHARES_DIR: &str = "/etc/lumenore/rate-limits";
pub const SHARES_KEY: &str = "shares";

/// Whether the tenant has a rate to share between its pods (and so a shares ConfigMap).
pub fn shares_wanted(lc: &LumenoreConnector) -> bool {
    lc.spec
        .rate_limits
        .as_ref()
        .is_some_and(|r| r.per_caller_per_minute.is_some() || r.tenant_per_minute.is_some())
}

/// Name of the shares ConfigMap.
pub fn shares_config_map_name(lc: &LumenoreConnector) -> String {
    format!("{}-rate-limits", child_name(lc))
}

/// The pods a tenant's limits are shared by: its Deployment's ready replicas, at least 1 (a tenant with
/// none ready has no pod to protect the backend from, and a division by zero helps nobody).
pub fn shares_of(deployment: &Deployment) -> i32 {
    deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        .max(1)
}

/// The shares ConfigMap: the number of ready pods, which each connector reads (mounted, re-read every
/// 2 s) to divide the limits by. `None` when the tenant has no rate to share.
pub fn shares_config_map(lc: &LumenoreConnector, shares: i32) -> Option<ConfigMap> {
    shares_wanted(lc).then(|| ConfigMap {
        metadata: ObjectMeta {
            name: Some(shares_config_map_name(lc)),
            ..meta(lc)
        },
        data: Some(BTreeMap::from([(SHARES_KEY.to_string(), shares.to_string())])),
        ..Default::default()
    })
}

/// The shares ConfigMap's volume: the whole directory (no subPath, so the kubelet updates the file in
/// place), optional so a pod starts before the operator's first write (the connector then keeps
/// `--rate-limit-shares`, 1, until the file appears).
fn shares_volume(lc: &LumenoreConnector) -> Option<(Volume, VolumeMount)> {
    shares_wanted(lc).then(|| {
        (
            Volume {
                name: "rate-limit-shares".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: shares_config_map_name(lc),
                    optional: Some(true),
                    default_mode: Some(0o444),
                    ..Default::default()
                }),
                ..Default::default()
            },
            VolumeMount {
                name: "rate-limit-shares".into(),
                mount_path: SHARES_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        )
    })
}

/// The rate-limit store's variables: its URL, user, timeout and failure policy, the scope (the tenant's
/// `<namespace>/<name>`, so tenants sharing one Redis never share a bucket), the password from its Secret
/// and the CA bundle's mounted path.
fn store_env(lc: &LumenoreConnector, store: &RateLimitStore) -> Vec<EnvVar> {
    let redis = &store.redis;
    let mut out = vec![
        env(cenv::RATE_LIMIT_STORE, redis.url.clone()),
        env(cenv::RATE_LIMIT_STORE_FAILURE, store.failure_policy.env_value()),
        env(
            cenv::RATE_LIMIT_STORE_SCOPE,
            format!("{}/{}", lc.namespace().unwrap_or_default(), lc.name_any()),
        ),
    ];
    if let Some(timeout) = &store.timeout {
        out.push(env(cenv::RATE_LIMIT_STORE_TIMEOUT, timeout.clone()));
    }
    if let Some(username) = &redis.username {
        out.push(env(cenv::RATE_LIMIT_STORE_USERNAME, username.clone()));
    }
    if let Some(password) = &redis.password_secret_ref {
        out.push(secret_env(
            cenv::RATE_LIMIT_STORE_PASSWORD,
            &password.name,
            &password.key,
        ));
    }
    if redis.ca_secret_ref.is_some() {
        out.push(env(
            cenv::RATE_LIMIT_STORE_CA_FILE,
            format!("{STORE_CA_DIR}/{STORE_CA_FILE}"),
        ));
    }
    out
}

/// Where the rate-limit store's CA bundle is mounted.
pub const STORE_CA_DIR: &str = "/etc/lumenore/rate-limit-store";
const STORE_CA_FILE: &str = "ca.crt";

/// The rate-limit store's CA bundle, when `spec.rateLimits.store.redis.caSecretRef` names one.
fn store_ca_volume(lc: &LumenoreConnector) -> Option<(Volume, VolumeMount)> {
    let ca = lc
        .spec
        .rate_limits
        .as_ref()?
        .store
        .as_ref()?
        .redis
        .ca_secret_ref
        .as_ref()?;
    Some((
        Volume {
            name: "rate-limit-store-ca".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(ca.name.clone()),
                items: Some(vec![KeyToPath {
                    key: ca.key.clone(),
                    path: STORE_CA_FILE.into(),
                    ..Default::default()
                }]),
                default_mode: Some(0o444),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "rate-limit-store-ca".into(),
            mount_path: STORE_CA_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ))
}

/// The OpenTelemetry variables [`otel_env`] may set, all of them ones the connector honours
/// (`lumenore_contract::env::otel`; the e2e test `the_operators_telemetry_settings_rule_the_connectors_export`
/// runs the connector with them).
pub const CONNECTOR_OTEL_ENV: [&str; 6] = [
    cenv::otel::EXPORTER_OTLP_ENDPOINT,
    cenv::otel::EXPORTER_OTLP_PROTOCOL,
    cenv::otel::EXPORTER_OTLP_HEADERS,
    cenv::otel::SERVICE_NAME,
    cenv::otel::TRACES_SAMPLER,
    cenv::otel::TRACES_SAMPLER_ARG,
];

/// `service.name` of the connector's spans: `spec.telemetry.otlp.serviceName`, else
/// `lumenore-connector-<tenant>`.
pub fn otel_service_name(lc: &LumenoreConnector) -> Option<String> {
    let otlp = lc.spec.telemetry.as_ref()?.otlp.as_ref()?;
    Some(
        otlp.service_name
            .clone()
            .unwrap_or_else(|| format!("lumenore-connector-{}", lc.spec.tenant)),
    )
}

/// The OTEL_* variables of `spec.telemetry.otlp` (none when unset: the connector exports nothing).
/// Headers come from the Secret key by reference, never inlined.
pub fn otel_env(lc: &LumenoreConnector) -> Vec<EnvVar> {
    let Some(otlp) = lc.spec.telemetry.as_ref().and_then(|t| t.otlp.as_ref()) else {
        return Vec::new();
    };
    let mut out = vec![
        env(cenv::otel::EXPORTER_OTLP_ENDPOINT, otlp.endpoint.clone()),
        env(cenv::otel::EXPORTER_OTLP_PROTOCOL, otlp.protocol.as_str()),
        env(
            cenv::otel::SERVICE_NAME,
            otel_service_name(lc).unwrap_or_default(),
        ),
    ];
    if let Some(h) = &otlp.headers_secret_ref {
        out.push(secret_env(cenv::otel::EXPORTER_OTLP_HEADERS, &h.name, &h.key));
    }
    if let Some(ratio) = otlp.sampling_ratio {
        out.push(env(cenv::otel::TRACES_SAMPLER, "parentbased_traceidratio"));
        out.push(env(cenv::otel::TRACES_SAMPLER_ARG, ratio.to_string()));
    }
    out
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_string(), Quantity("256Mi".into()))])),
        ..Default::default()
    }
}

fn region_requirement(lc: &LumenoreConnector) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: REGION_LABEL.into(),
        operator: "In".into(),
        values: Some(vec![lc.spec.region.name.clone()]),
    }
}

/// Pod affinity: the CR's affinity with the region requirement added to every required node selector
/// term (terms are ORed, so each one must carry it), or a single region term when there is none.
pub fn affinity(lc: &LumenoreConnector) -> Affinity {
    let mut aff = lc
        .spec
        .scheduling
        .as_ref()
        .and_then(|s| s.affinity.clone())
        .unwrap_or_default();
    let node = aff.node_affinity.get_or_insert_with(NodeAffinity::default);
    let required = node
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required.node_selector_terms.push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        let exprs = term.match_expressions.get_or_insert_with(Vec::new);
        exprs.retain(|e| e.key != REGION_LABEL);
        exprs.push(region_requirement(lc));
    }
    aff
}

/// The operator's zone spread, merged with the CR's constraints: a constraint with the same
/// (topologyKey, whenUnsatisfiable) — the list's merge key, which the API server refuses to see twice
/// — replaces the operator's (keeping its pod selector when it sets none); repeats are dropped.
pub fn topology_spread(lc: &LumenoreConnector) -> Vec<TopologySpreadConstraint> {
    let mut out = vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: ZONE_LABEL.into(),
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(lc)),
            ..Default::default()
        }),
        match_label_keys: Some(vec!["pod-template-hash".into()]),
        ..Default::default()
    }];
    let extra = lc
        .spec
        .scheduling
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.clone())
        .unwrap_or_default();
    let mut replaced_ours = false;
    for mut c in extra {
        let same = |o: &TopologySpreadConstraint| {
            o.topology_key == c.topology_key && o.when_unsatisfiable == c.when_unsatisfiable
        };
        match out.iter().position(same) {
            Some(0) if !replaced_ours => {
                if c.label_selector.is_none() {
                    c.label_selector = out[0].label_selector.clone();
                    c.match_label_keys = c.match_label_keys.or_else(|| out[0].match_label_keys.clone());
                }
                out[0] = c;
                replaced_ours = true;
            }
            Some(_) => {}
            None => out.push(c),
        }
    }
    out
}

fn probe(path: &str, period: i32, failure: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure),
        ..Default::default()
    }
}

/// Desired replicas: 0 when suspended, the spec's count when set, `None` (not applied) otherwise.
pub fn desired_replicas(lc: &LumenoreConnector) -> Option<i32> {
    if lc.spec.suspend {
        Some(0)
    } else {
        lc.spec.replicas
    }
}

/// The connector Deployment.
pub fn deployment(lc: &LumenoreConnector, inputs: &BuildInputs) -> Deployment {
    let spec = &lc.spec;
    let image = spec.image.clone().unwrap_or_else(|| inputs.default_image.clone());
    let mut pod_annotations = BTreeMap::new();
    if let Some(h) = &inputs.credentials_hash {
        pod_annotations.insert(CREDENTIALS_HASH_ANNOTATION.to_string(), h.clone());
    }
    let mut pod_labels = labels(lc);
    pod_labels.extend(selector_labels(lc));

    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    if spec.auth.mode == AuthMode::ApiKeys
        && let Some(keys) = &spec.auth.api_keys
    {
        // The whole directory is mounted (no subPath), so kubelet swaps the file in place on rotation
        // and the connector reloads it without a restart.
        volumes.push(Volume {
            name: "api-keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(keys.secret_name.clone()),
                items: Some(vec![KeyToPath {
                    key: keys.key.clone(),
                    path: keys.key.clone(),
                    ..Default::default()
                }]),
                default_mode: Some(0o440),
                optional: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "api-keys".into(),
            mount_path: API_KEYS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    for (volume, mount) in store_ca_volume(lc).into_iter().chain(shares_volume(lc)) {
        volumes.push(volume);
        mounts.push(mount);
    }

    let scheduling = spec.scheduling.clone().unwrap_or_default();
    let container = Container {
        name: "connector".into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: CONNECTOR_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(connector_env(lc)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    Deployment {
        metadata: meta(lc),
        spec: DeploymentSpec {
            replicas: desired_replicas(lc),
            selector: LabelSelector {
                match_labels: Some(selector_labels(lc)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(child_name(lc)),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    affinity: Some(affinity(lc)),
                    topology_spread_constraints: Some(topology_spread(lc)),
                    node_selector: scheduling.node_selector,
                    tolerations: scheduling.tolerations,
                    priority_class_name: scheduling.priority_class_name,
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// ClusterIP Service on port 8080. No session affinity: the connector is stateless.
pub fn service(lc: &LumenoreConnector) -> Service {
    Service {
        metadata: meta(lc),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(lc)),
            session_affinity: Some("None".into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: CONNECTOR_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn port(protocol: &str, p: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(p)),
        end_port: None,
    }
}

/// Redis' port, when a store URL names none.
const REDIS_PORT: u16 = 6379;

/// The (host, port) pairs the connector must reach: the Lumenore server, with OAuth the issuer and
/// the JWKS URL (HTTPS), the OTLP trace receiver of `spec.telemetry.otlp`, and the rate-limit store of
/// `spec.rateLimits.store`. Ports come from the URLs (443 when an https URL names none, 6379 for Redis).
pub fn egress_endpoints(lc: &LumenoreConnector) -> Vec<(String, u16)> {
    let spec = &lc.spec;
    let mut urls: Vec<&str> = Vec::new();
    if spec.backend == Backend::Lumenore {
        urls.push(&spec.server_url);
    }
    if spec.auth.mode == AuthMode::Oauth
        && let Some(o) = &spec.auth.oauth
    {
        urls.push(&o.issuer);
        urls.extend(o.jwks_url.as_deref());
    }
    if let Some(otlp) = spec.telemetry.as_ref().and_then(|t| t.otlp.as_ref()) {
        urls.push(&otlp.endpoint);
    }
    if let Some(store) = spec.rate_limits.as_ref().and_then(|r| r.store.as_ref()) {
        urls.push(&store.redis.url);
    }
    let mut out: Vec<(String, u16)> = urls
        .into_iter()
        .filter_map(|u| url::Url::parse(u).ok())
        .filter_map(|u| {
            // Redis' own port when a redis:// or rediss:// URL names none (not a "known" default to `url`).
            let port = u
                .port_or_known_default()
                .or_else(|| matches!(u.scheme(), "redis" | "rediss").then_some(REDIS_PORT))?;
            Some((u.host_str()?.to_string(), port))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// An egress endpoint whose host names an in-cluster Service (`<svc>.<ns>.svc[.<cluster domain>]`,
/// `<svc>.<ns>`, `<svc>`), and what to allow for it.
///
/// A NetworkPolicy port is "a numerical or named port on a pod" (API reference, networking.k8s.io/v1
/// NetworkPolicyPort.port), and whether a Service's rewrite of the destination happens before or
/// after policy processing "is not defined" (kubernetes.io/docs/concepts/services-networking/
/// network-policies/, "Behavior of to and from selectors"). Common CNIs (Calico, Cilium, kube-router)
/// enforce egress after the translation, so they see the pod's port (the Service port's
/// `targetPort`), not the Service port of the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEgress {
    /// Host of the URL, as in [`egress_endpoints`].
    pub host: String,
    /// Port of the URL: the Service port.
    pub port: u16,
    /// What the policy allows for this endpoint.
    pub ports: EgressPorts,
}

/// The pods' ports behind a Service port, or why they could not be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EgressPorts {
    /// The pods' ports (the `targetPort`, or a named one resolved from the EndpointSlices); they
    /// replace the URL's port.
    Target(Vec<i32>),
    /// Not resolved (the reason, for people): the URL's port is kept and the endpoint listed in the
    /// [`EGRESS_UNRESOLVED_ANNOTATION`].
    Unresolved(String),
}

fn service_egress<'a>(services: &'a [ServiceEgress], host: &str, port: u16) -> Option<&'a EgressPorts> {
    services
        .iter()
        .find(|s| s.host == host && s.port == port)
        .map(|s| &s.ports)
}

/// TCP ports of [`egress_endpoints`]; 443 when there are none (embedded backend without OAuth).
pub fn egress_ports(lc: &LumenoreConnector) -> Vec<i32> {
    egress_ports_with(lc, &[])
}

/// [`egress_ports`], with the pods' ports of in-cluster Services in place of their URL ports.
pub fn egress_ports_with(lc: &LumenoreConnector, services: &[ServiceEgress]) -> Vec<i32> {
    let mut ports: Vec<i32> = Vec::new();
    for (host, port) in egress_endpoints(lc) {
        match service_egress(services, &host, port) {
            Some(EgressPorts::Target(target)) if !target.is_empty() => ports.extend(target),
            _ => ports.push(i32::from(port)),
        }
    }
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        ports.push(443);
    }
    ports
}

/// Annotation on the NetworkPolicy listing the `host:port` the connector must reach (what
/// `spec.network.egressTo` must cover).
pub const EGRESS_HOSTS_ANNOTATION: &str = "lumenore.io/egress-hosts";
/// Annotation on the NetworkPolicy mapping the `host:port` of in-cluster Services to the pods' ports
/// the policy allows instead (`host:port->target[/target...]`); absent when there are none.
pub const EGRESS_TARGET_PORTS_ANNOTATION: &str = "lumenore.io/egress-target-ports";
/// Annotation on the NetworkPolicy listing the in-cluster Services whose pods' port could not be
/// found (`host:port (reason)`): their URL's port is allowed, which a CNI enforcing after the
/// Service's translation does not match when the `targetPort` differs. Absent when there are none.
pub const EGRESS_UNRESOLVED_ANNOTATION: &str = "lumenore.io/egress-unresolved";

/// NetworkPolicy: ingress on 8080 only from the allowed peers (same namespace by default) and the
/// monitoring namespace; egress only DNS and the ports of the URLs the connector calls. `None` when
/// the CR disables it.
pub fn network_policy(lc: &LumenoreConnector, monitoring_namespace: Option<&str>) -> Option<NetworkPolicy> {
    network_policy_with(lc, monitoring_namespace, &[])
}

/// [`network_policy`], allowing the pods' ports of the in-cluster Services in `services` (see
/// [`ServiceEgress`]) instead of their URL ports.
pub fn network_policy_with(
    lc: &LumenoreConnector,
    monitoring_namespace: Option<&str>,
    services: &[ServiceEgress],
) -> Option<NetworkPolicy> {
    let net = &lc.spec.network;
    if !net.network_policy {
        return None;
    }
    let ingress_from = if net.ingress_from.is_empty() {
        vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..Default::default()
        }]
    } else {
        net.ingress_from.clone()
    };
    let https_to = (!net.egress_to.is_empty()).then(|| net.egress_to.clone());
    let mut ingress = vec![NetworkPolicyIngressRule {
        from: Some(ingress_from),
        ports: Some(vec![port("TCP", CONNECTOR_PORT)]),
    }];
    if let Some(ns) = monitoring_namespace.filter(|n| !n.is_empty()) {
        // /metrics is served on the connector port (beside /mcp): scrapers need that port.
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        ns.to_string(),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: Some(vec![port("TCP", CONNECTOR_PORT)]),
        });
    }
    let mut metadata = meta(lc);
    let endpoints = egress_endpoints(lc);
    let hosts: Vec<String> = endpoints.iter().map(|(h, p)| format!("{h}:{p}")).collect();
    let mut target_ports = Vec::new();
    let mut unresolved = Vec::new();
    for (host, port) in &endpoints {
        match service_egress(services, host, *port) {
            Some(EgressPorts::Target(target)) if !target.is_empty() => {
                let target: Vec<String> = target.iter().map(i32::to_string).collect();
                target_ports.push(format!("{host}:{port}->{}", target.join("/")));
            }
            Some(EgressPorts::Unresolved(why)) => unresolved.push(format!("{host}:{port} ({why})")),
            Some(EgressPorts::Target(_)) | None => {}
        }
    }
    let annotations: BTreeMap<String, String> = [
        (EGRESS_HOSTS_ANNOTATION, hosts.join(",")),
        (EGRESS_TARGET_PORTS_ANNOTATION, target_ports.join(",")),
        (EGRESS_UNRESOLVED_ANNOTATION, unresolved.join(", ")),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
    }
    Some(NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(lc)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: None,
                    ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
                },
                NetworkPolicyEgressRule {
                    to: https_to,
                    ports: Some(
                        egress_ports_with(lc, services)
                            .into_iter()
                            .map(|p| port("TCP", p))
                            .collect(),
                    ),
                },
            ]),
        }),
    })
}

/// PodDisruptionBudget allowing one pod down at a time. Only when more than one pod is expected:
/// `spec.replicas` of 2 or more, or unset (an HPA scales it); never while suspended.
pub fn pod_disruption_budget(lc: &LumenoreConnector) -> Option<PodDisruptionBudget> {
    if lc.spec.suspend || lc.spec.replicas.is_some_and(|r| r < 2) {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: meta(lc),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(lc)),
                ..Default::default()
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..Default::default()
        }),
        status: None,
    })
}
