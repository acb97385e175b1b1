//! The `LumenoreConnector` custom resource (group `lumenore.io`, version `v1alpha1`).
//!
//! Defaults live in the schema (`#[serde(default)]` + schemars), so the API server fills them in and
//! the operator never writes `spec`. Rules the API server enforces are CEL `x-kubernetes-validations`;
//! [`crate::validate`] re-checks the same rules in Rust for objects stored before a rule existed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the custom resource.
pub const GROUP: &str = "lumenore.io";
/// Field manager used for every server-side apply.
pub const MANAGER: &str = "lumenore-operator";
/// Field manager that keeps a Deployment's `spec.replicas` when the operator stops setting it
/// (`spec.replicas` removed to let a HorizontalPodAutoscaler own the count).
pub const REPLICAS_HANDOVER_MANAGER: &str = "lumenore-operator-replicas-handover";

/// Desired state of one tenant's connector: where it runs, which Lumenore server it talks to, which
/// Secret holds its credentials, and how callers are authenticated and rate limited.
// Several `printcolumn(...)` share keys like `type_`; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lumenore.io",
    version = "v1alpha1",
    kind = "LumenoreConnector",
    plural = "lumenoreconnectors",
    singular = "lumenoreconnector",
    shortname = "lmc",
    category = "lumenore",
    namespaced,
    status = "LumenoreConnectorStatus",
    doc = "A LumenoreConnector runs one tenant's MCP connector (Deployment, Service, ServiceAccount, NetworkPolicy, PodDisruptionBudget) in the tenant's cloud region.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Tenant",
        type_ = "string",
        json_path = ".spec.tenant",
        description = "Tenant served by this connector"
    ),
    printcolumn(
        name = "Region",
        type_ = "string",
        json_path = ".spec.region.name",
        description = "Cloud region the connector is pinned to"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Ready condition"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready replicas"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition",
        priority = 1
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.connector.version",
        description = "Connector version (image tag) the Deployment runs",
        priority = 1
    ),
    printcolumn(
        name = "Wave",
        type_ = "string",
        json_path = ".status.connector.wave",
        description = "Fleet-rollout wave of this tenant",
        priority = 1
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        description = "In-cluster MCP endpoint",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
// The name becomes the Service's name (a DNS-1035 label) and a label value (at most 63 characters).
// Judged on creation only (`optionalOldSelf`: `oldSelf` is `optional.none()` on create, set on every
// update; the name cannot change). A root rule runs on every write, `/status` included, over the
// whole object, and ratcheting never skips it (the root is never unchanged), so an unconditional
// rule would refuse every status write of an object stored before the rule existed (`acme.eu`);
// such an object is reported as InvalidSpec by `crate::validate` instead.
#[kube(validation = Rule::new("oldSelf.hasValue() || (self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$'))").optional_old_self(true).message("metadata.name must be a DNS-1035 label: at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (it names the connector's Service)"))]
#[x_kube(validation = Rule::new("self.backend != 'lumenore' || has(self.credentials)").message("credentials are required when backend is lumenore").field_path(".credentials"))]
#[serde(rename_all = "camelCase")]
pub struct LumenoreConnectorSpec {
    /// Tenant identifier: a DNS label (lowercase letters, digits and '-', at most 63 characters). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("tenant is immutable"))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("tenant must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub tenant: String,

    /// Cloud and region the connector must run in; its pods are pinned to nodes of that region. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("region is immutable"))]
    pub region: Region,

    /// Which backend the connector serves: `lumenore` (the tenant's Lumenore server) or `embedded` (local demo datasets).
    #[serde(default)]
    pub backend: Backend,

    /// Base URL of the tenant's Lumenore server; must use https.
    #[x_kube(validation = Rule::new("self.startsWith('https://') && self.size() > 8").message("serverUrl must be an https URL"))]
    #[schemars(length(max = 2048))]
    #[serde(default = "default_server_url")]
    pub server_url: String,

    /// Secret (in the same namespace) holding the backend credentials, and the names of its keys.
    /// Required when backend is `lumenore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,

    /// Number of connector pods. Leave unset to let a HorizontalPodAutoscaler own the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Container image of the connector. Defaults to the operator's `--connector-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Compute resources of the connector container. Defaults: requests cpu 100m / memory 128Mi, limit memory 256Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra scheduling constraints, combined with the region affinity and zone spread the operator always sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,

    /// Network exposure of the connector: NetworkPolicy peers, extra allowed Host headers and browser origins.
    #[serde(default)]
    pub network: Network,

    /// How callers of the connector are authenticated.
    #[serde(default)]
    pub auth: Auth,

    /// Limits protecting the tenant's backend. Unset fields keep the connector's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,

    /// Externally reachable URL of the MCP endpoint (OAuth protected-resource metadata). Defaults to the in-cluster endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("publicUrl must be an http(s) URL"))]
    #[schemars(length(max = 2048))]
    pub public_url: Option<String>,

    /// Suspend the connector: scale it to zero replicas while keeping every object.
    #[serde(default)]
    pub suspend: bool,

    /// Telemetry the connector exports. Unset: no traces leave the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Telemetry>,
}

/// What `spec.telemetry.otlp.endpoint` must look like: an http(s) URL with a host and an explicit
/// port (the NetworkPolicy opens that port). Shared by the CEL rule and [`crate::validate`].
pub const OTLP_ENDPOINT_PATTERN: &str = r"^https?://([^/:?#@\s\[\]]+|\[[0-9a-fA-F:.]+\]):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(/[^\s?#]*)?$";

/// Telemetry of the connector.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// Export OpenTelemetry traces over OTLP (sets the connector's OTEL_* variables). Unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<Otlp>,
}

/// Trace export over OTLP/HTTP (protobuf), the protocol the connector speaks.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Otlp {
    /// Base URL of the OTLP/HTTP receiver with an explicit port, e.g. `http://otel-collector.observability.svc:4318` (spans go to `/v1/traces` under it). Sets OTEL_EXPORTER_OTLP_ENDPOINT; the connector's NetworkPolicy allows egress to that port (listed in the `lumenore.io/egress-hosts` annotation).
    #[x_kube(validation = Rule::new("self.matches('^https?://([^/:?#@\\\\s\\\\[\\\\]]+|\\\\[[0-9a-fA-F:.]+\\\\]):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])(/[^\\\\s?#]*)?$')").message("telemetry.otlp.endpoint must be an http or https URL with a host and an explicit port (1-65535), e.g. http://otel-collector.observability.svc:4318"))]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: String,
    /// OTLP protocol. The connector exports over HTTP with protobuf bodies only (OTLP/gRPC is not supported): `http/protobuf`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// Secret key (same namespace) holding the OTLP request headers, `name=value` pairs separated by commas (e.g. `authorization=Bearer ...`). Passed to the connector as OTEL_EXPORTER_OTLP_HEADERS from the Secret, never inlined in the pod spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretKeyRef>,
    /// `service.name` of the exported spans. Default: `lumenore-connector-<tenant>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), pattern(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    pub service_name: Option<String>,
    /// Fraction of new traces sampled, 0 to 1 (OTEL_TRACES_SAMPLER=parentbased_traceidratio): a trace the caller started keeps its caller's decision. Unset: every trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: Option<f64>,
}

/// OTLP protocols the connector can export with.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP over HTTP, protobuf bodies.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Value of OTEL_EXPORTER_OTLP_PROTOCOL.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

pub use super::secret_ref::SecretKeyRef;

fn default_server_url() -> String {
    "https://preview.lumenore.com".to_string()
}

/// Cloud provider and region name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Region {
    /// Cloud provider: aws, azure, gcp or oci.
    pub cloud: Cloud,
    /// Region name as in the node label `topology.kubernetes.io/region` (e.g. `eu-west-1`); a label value.
    #[schemars(
        length(min = 1, max = 63),
        pattern(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
    )]
    pub name: String,
}

/// Cloud provider.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    /// Amazon Web Services.
    Aws,
    /// Microsoft Azure.
    Azure,
    /// Google Cloud.
    Gcp,
    /// Oracle Cloud Infrastructure.
    Oci,
}

impl Cloud {
    /// The lowercase name used in the CR and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Azure => "azure",
            Cloud::Gcp => "gcp",
            Cloud::Oci => "oci",
        }
    }
}

impl std::str::FromStr for Cloud {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aws" => Ok(Cloud::Aws),
            "azure" => Ok(Cloud::Azure),
            "gcp" => Ok(Cloud::Gcp),
            "oci" => Ok(Cloud::Oci),
            other => Err(format!(
                "unknown cloud {other:?} (expected aws, azure, gcp or oci)"
            )),
        }
    }
}

/// Connector backend.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The tenant's Lumenore server.
    #[default]
    Lumenore,
    /// Local datasets answered by the connector's embedded engine.
    Embedded,
}

impl Backend {
    /// Value of `LUMENORE_BACKEND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Lumenore => "lumenore",
            Backend::Embedded => "embedded",
        }
    }
}

/// Where the backend credentials are. Set either `clientIdKey` and `clientSecretKey` (client credentials
/// login), or `apiTokenKey` (a static token).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.apiTokenKey) && !has(self.clientIdKey) && !has(self.clientSecretKey)) || (!has(self.apiTokenKey) && has(self.clientIdKey) && has(self.clientSecretKey))").message("set either clientIdKey and clientSecretKey, or apiTokenKey (exactly one credentials form)"))]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// Name of a Secret in the connector's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the Secret holding the client id (sets LUMENORE_CLIENT_ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub client_id_key: Option<String>,
    /// Key of the Secret holding the client secret (sets LUMENORE_SECRET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub client_secret_key: Option<String>,
    /// Key of the Secret holding a static API token (sets LUMENORE_API_KEY), instead of client credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub api_token_key: Option<String>,
}

impl Credentials {
    /// The Secret keys this form uses, paired with the environment variable each one sets.
    pub fn keys(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(k) = &self.client_id_key {
            out.push((lumenore_contract::env::CLIENT_ID, k.as_str()));
        }
        if let Some(k) = &self.client_secret_key {
            out.push((lumenore_contract::env::SECRET, k.as_str()));
        }
        if let Some(k) = &self.api_token_key {
            out.push((lumenore_contract::env::API_KEY, k.as_str()));
        }
        out
    }
}

/// Extra scheduling constraints for the connector pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Node labels the pods require, in addition to the region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity of the pods; the operator adds its required region term to every node selector term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Extra topology spread constraints, added after the operator's zone spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// Priority class of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Network exposure of the connector.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Create a NetworkPolicy for the connector pods (ingress only from `ingressFrom`, egress only DNS and the ports of the URLs the connector calls).
    #[serde(default = "default_true")]
    pub network_policy: bool,
    /// Peers allowed to reach the connector on port 8080. Empty: pods of the same namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_from: Vec<NetworkPolicyPeer>,
    /// Peers the connector may reach on the ports of the URLs it calls (serverUrl, the OAuth issuer and JWKS URL, the OTLP endpoint; their `host:port` are listed in the NetworkPolicy's `lumenore.io/egress-hosts` annotation). Empty: any address. DNS is always allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_to: Vec<NetworkPolicyPeer>,
    /// Host header values accepted in addition to the Service's in-cluster names (e.g. an Ingress host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub extra_allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the connector (sets LUMENORE_ALLOWED_ORIGINS). Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allowed_origins: Vec<String>,
}

fn default_true() -> bool {
    true
}

impl Default for Network {
    fn default() -> Self {
        Network {
            network_policy: true,
            ingress_from: Vec::new(),
            egress_to: Vec::new(),
            extra_allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

/// Caller authentication of the connector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("self.mode != 'apiKeys' || has(self.apiKeys)").message("auth.apiKeys is required when auth.mode is apiKeys"))]
#[x_kube(validation = Rule::new("self.mode != 'oauth' || has(self.oauth)").message("auth.oauth is required when auth.mode is oauth"))]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Authentication mode: `none` (anyone who can reach the pod), `apiKeys` (hashed keys from a Secret) or `oauth` (JWT bearer tokens).
    #[serde(default)]
    pub mode: AuthMode,
    /// API keys Secret; required when mode is `apiKeys`. Mounted as a directory, so a rotation reaches the pods without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeysRef>,
    /// OAuth 2.1 resource-server settings; required when mode is `oauth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuth>,
}

/// Caller authentication mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum AuthMode {
    /// No caller authentication (the operator sets LUMENORE_ALLOW_UNAUTHENTICATED=true).
    #[default]
    None,
    /// API keys from a Secret.
    ApiKeys,
    /// OAuth 2.1 bearer tokens.
    Oauth,
}

impl AuthMode {
    /// Value of `LUMENORE_AUTH_MODE`.
    pub fn env_value(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::ApiKeys => "api-keys",
            AuthMode::Oauth => "oauth",
        }
    }
}

/// Reference to the Secret holding the hashed API keys file.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeysRef {
    /// Name of a Secret in the connector's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the Secret holding the keys file.
    #[serde(default = "default_api_keys_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_api_keys_key() -> String {
    "keys".to_string()
}

/// OAuth 2.1 resource-server settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OAuth {
    /// Token issuer (`iss`); must be an https URL.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("oauth.issuer must be an https URL"))]
    #[schemars(length(min = 9, max = 2048))]
    pub issuer: String,
    /// Expected audience (`aud`), normally the connector's public URL.
    #[schemars(length(min = 1, max = 2048))]
    pub audience: String,
    /// JWKS URL; defaults to the issuer's discovery document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("oauth.jwksUrl must be an https URL"))]
    #[schemars(length(max = 2048))]
    pub jwks_url: Option<String>,
}

/// Limits protecting the tenant's backend. Counts are `u32` in Rust but `int64` in the schema.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// Where the counters live. Unset: each pod keeps its own (the limits are per pod). With a store the
    /// limits hold for the tenant as a whole and for each caller, across every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<RateLimitStore>,
    /// Tool calls per minute allowed to one caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    // `format: uint32` is not an OpenAPI format: the API server warns about it on every CRD apply.
    #[schemars(with = "Option<i64>")]
    pub per_caller_per_minute: Option<u32>,
    /// Tool calls per minute allowed to the whole tenant: per pod, or across all pods with a `store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    #[schemars(with = "Option<i64>")]
    pub tenant_per_minute: Option<u32>,
    /// Maximum concurrent backend calls per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    #[schemars(with = "Option<i64>")]
    pub max_concurrent_backend_calls: Option<u32>,
}

/// A store shared by the tenant's replicas for the rate limits' counters.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitStore {
    /// A Redis server (or a Redis-compatible one: Valkey, a managed Redis).
    pub redis: RedisStore,
    /// The longest a tool call waits for the store, as a duration (`50ms`, `1s`). Default `50ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), pattern(r"^[1-9][0-9]{0,5}(ms|s)$"))]
    pub timeout: Option<String>,
    /// What a tool call gets when the store fails or is slow: `failOpen` admits it by the pod's own
    /// buckets, `failClosed` answers 503 with `Retry-After`. Default `failOpen`.
    #[serde(default)]
    pub failure_policy: StoreFailurePolicy,
}

/// The store's failure policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum StoreFailurePolicy {
    #[default]
    FailOpen,
    FailClosed,
}

impl StoreFailurePolicy {
    /// The connector's `LUMENORE_RATE_LIMIT_STORE_FAILURE` value.
    pub fn env_value(self) -> &'static str {
        match self {
            StoreFailurePolicy::FailOpen => "open",
            StoreFailurePolicy::FailClosed => "closed",
        }
    }
}

/// A Redis server. The password and the CA bundle come from Secrets of the tenant's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.caSecretRef) || self.url.startsWith('rediss://')").message("rateLimits.store.redis.caSecretRef needs a rediss:// url"))]
pub struct RedisStore {
    /// `redis://host:port[/db]`, or `rediss://` for TLS. No user or password in it.
    #[x_kube(validation = Rule::new("!self.contains('@')").message("rateLimits.store.redis.url must not carry a user or password: use username and passwordSecretRef"))]
    #[schemars(
        length(min = 10, max = 1024),
        pattern(r"^rediss?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/([0-9]{1,2})?)?$")
    )]
    pub url: String,
    /// ACL user name (Redis 6+); unset uses the default user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub username: Option<String>,
    /// Secret key holding the password, passed to the connector from the Secret, never inlined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the PEM bundle of the authorities that sign the server's certificate (with
    /// `rediss://`), instead of the system roots. Mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// Observed state of a LumenoreConnector.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LumenoreConnectorStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions Accepted, Available and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Pods of the connector Deployment (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready pods of the connector Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Label selector of the connector pods (scale subresource, used by a HorizontalPodAutoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// In-cluster MCP endpoint, e.g. `http://NAME.NAMESPACE.svc:8080/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The connector image the Deployment runs, its version and the fleet-rollout wave of this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<super::rollout::ConnectorImageStatus>,
}

impl LumenoreConnectorStatus {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
