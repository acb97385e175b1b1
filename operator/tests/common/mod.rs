//! Shared test fixtures.
#![allow(dead_code)]

pub mod fake_api;
pub mod kstatus;

use lumenore_operator::crd::LumenoreConnector;
use serde_json::{Value, json};

/// A CR from its JSON spec, as the API server would hold it (defaults applied by deserialization).
pub fn connector(ns: &str, name: &str, spec: Value) -> LumenoreConnector {
    serde_json::from_value(json!({
        "apiVersion": "lumenore.io/v1alpha1",
        "kind": "LumenoreConnector",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
    }))
    .expect("valid LumenoreConnector")
}

/// Client credentials, replicas left to an HPA, defaults everywhere else.
pub fn minimal_spec() -> Value {
    json!({
        "tenant": "acme",
        "region": {"cloud": "aws", "name": "eu-west-1"},
        "serverUrl": "https://acme.lumenore.com",
        "credentials": {"secretName": "acme-creds", "clientIdKey": "client-id", "clientSecretKey": "client-secret"},
    })
}

/// Every optional field set: static token, 3 replicas, API keys, rate limits, network peers, scheduling.
pub fn full_spec() -> Value {
    json!({
        "tenant": "globex",
        "region": {"cloud": "azure", "name": "westeurope"},
        "serverUrl": "https://globex.lumenore.com",
        "credentials": {"secretName": "globex-creds", "apiTokenKey": "token"},
        "replicas": 3,
        "image": "registry.example.com/lumenore-connector:1.2.3",
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "scheduling": {
            "nodeSelector": {"pool": "connectors"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "connectors", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]},
                {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}
            ]}}},
            "priorityClassName": "tenant-high"
        },
        "network": {
            "networkPolicy": true,
            "ingressFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
            "egressTo": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
            "extraAllowedHosts": ["mcp.globex.example.com"],
            "allowedOrigins": ["https://chat.globex.example.com"]
        },
        "auth": {"mode": "apiKeys", "apiKeys": {"secretName": "globex-api-keys", "key": "keys.json"}},
        "rateLimits": {"perCallerPerMinute": 60, "tenantPerMinute": 600, "maxConcurrentBackendCalls": 8},
        "publicUrl": "https://mcp.globex.example.com/mcp",
    })
}

/// OAuth callers, suspended, one replica, no NetworkPolicy.
pub fn oauth_suspended_spec() -> Value {
    json!({
        "tenant": "initech",
        "region": {"cloud": "gcp", "name": "europe-west4"},
        "serverUrl": "https://initech.lumenore.com",
        "credentials": {"secretName": "initech-creds", "clientIdKey": "id", "clientSecretKey": "secret"},
        "replicas": 1,
        "suspend": true,
        "network": {"networkPolicy": false},
        "auth": {"mode": "oauth", "oauth": {"issuer": "https://login.initech.example.com", "audience": "https://mcp.initech.example.com/mcp", "jwksUrl": "https://login.initech.example.com/jwks.json"}},
    })
}

/// Embedded backend: no credentials at all.
pub fn embedded_spec() -> Value {
    json!({
        "tenant": "demo",
        "region": {"cloud": "oci", "name": "eu-frankfurt-1"},
        "backend": "embedded",
        "replicas": 2,
    })
}
