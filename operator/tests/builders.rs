//! Snapshot tests of every child object for representative CRs, plus the properties that matter.

mod common;

use common::*;
use lumenore_operator::builders::{self, BuildInputs, Children, REGION_LABEL};
use lumenore_operator::crd::LumenoreConnector;
use serde_json::{Value, json};

const HASH: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn build(lc: &LumenoreConnector) -> Children {
    builders::build_children(
        lc,
        &BuildInputs {
            default_image: "ghcr.io/lumenore/lumenore-connector:0.1.0".into(),
            credentials_hash: lc.spec.credentials.as_ref().map(|_| HASH.to_string()),
            monitoring_namespace: None,
            egress_services: Vec::new(),
        },
    )
}

fn snapshot_all(prefix: &str, lc: &LumenoreConnector) {
    let c = build(lc);
    insta::assert_yaml_snapshot!(format!("{prefix}_serviceaccount"), c.service_account);
    insta::assert_yaml_snapshot!(format!("{prefix}_deployment"), c.deployment);
    insta::assert_yaml_snapshot!(format!("{prefix}_service"), c.service);
    insta::assert_yaml_snapshot!(format!("{prefix}_networkpolicy"), c.network_policy);
    insta::assert_yaml_snapshot!(format!("{prefix}_poddisruptionbudget"), c.pod_disruption_budget);
}

#[test]
fn snapshots_minimal() {
    snapshot_all("minimal", &connector("tenants", "acme", minimal_spec()));
}

#[test]
fn snapshots_full() {
    snapshot_all("full", &connector("tenants", "globex", full_spec()));
}

#[test]
fn snapshots_oauth_suspended() {
    snapshot_all(
        "oauth_suspended",
        &connector("tenants", "initech", oauth_suspended_spec()),
    );
}

#[test]
fn snapshots_embedded() {
    snapshot_all("embedded", &connector("demo", "demo", embedded_spec()));
}

/// `full_spec` exporting traces: OTLP endpoint in the cluster, headers from a Secret, 25 % sampling.
fn telemetry_spec() -> Value {
    let mut spec = full_spec();
    spec["telemetry"] = json!({"otlp": {
        "endpoint": "http://otel-collector.observability.svc:4318",
        "headersSecretRef": {"name": "globex-otlp", "key": "headers"},
        "samplingRatio": 0.25
    }});
    spec
}

#[test]
fn snapshots_telemetry() {
    let c = build(&connector("tenants", "globex", telemetry_spec()));
    insta::assert_yaml_snapshot!("telemetry_deployment", c.deployment);
    insta::assert_yaml_snapshot!("telemetry_networkpolicy", c.network_policy);
}

#[test]
fn telemetry_sets_the_otel_variables_and_opens_the_collector_port() {
    let c = build(&connector("tenants", "globex", telemetry_spec()));
    let env = env_map(&c);
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://otel-collector.observability.svc:4318"
    );
    assert_eq!(env["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf");
    assert_eq!(
        env["OTEL_SERVICE_NAME"], "lumenore-connector-globex",
        "defaults from the tenant"
    );
    assert_eq!(env["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
    assert_eq!(env["OTEL_TRACES_SAMPLER_ARG"], "0.25");
    // Headers by reference only: the pod spec never holds them.
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_HEADERS"],
        json!({"secretKeyRef": {"name": "globex-otlp", "key": "headers", "optional": false}})
    );
    let np = serde_json::to_value(&c.network_policy).unwrap();
    let ports: Vec<i64> = np["spec"]["egress"][1]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [443, 4318]);
    let hosts = np["metadata"]["annotations"][builders::EGRESS_HOSTS_ANNOTATION]
        .as_str()
        .unwrap();
    assert!(hosts.contains("otel-collector.observability.svc:4318"), "{hosts}");

    // A service name of one's own; no sampling ratio: the SDK's default (every trace) is left alone.
    let mut spec = telemetry_spec();
    spec["telemetry"]["otlp"]["serviceName"] = json!("mcp-globex");
    spec["telemetry"]["otlp"]
        .as_object_mut()
        .unwrap()
        .remove("samplingRatio");
    let env = env_map(&build(&connector("tenants", "globex", spec)));
    assert_eq!(env["OTEL_SERVICE_NAME"], "mcp-globex");
    assert!(!env.contains_key("OTEL_TRACES_SAMPLER") && !env.contains_key("OTEL_TRACES_SAMPLER_ARG"));

    // Without telemetry: no OTEL variable at all (the connector exports nothing).
    let env = env_map(&build(&connector("tenants", "globex", full_spec())));
    assert!(!env.keys().any(|k| k.starts_with("OTEL_")), "{env:?}");
}

/// The OTEL_* variables the operator may set are ones the connector honours (`lumenore_contract::env::otel`;
/// the e2e test `the_operators_telemetry_settings_rule_the_connectors_export` runs the connector with the
/// variables built here and checks its export follows them).
#[test]
fn every_otel_variable_set_on_the_connector_is_one_it_honours() {
    let mut set = std::collections::BTreeSet::new();
    let mut named = telemetry_spec();
    named["telemetry"]["otlp"]["serviceName"] = json!("mcp-globex");
    for spec in [telemetry_spec(), named] {
        for e in builders::connector_env(&connector("tenants", "globex", spec)) {
            if e.name.starts_with("OTEL_") {
                set.insert(e.name);
            }
        }
    }
    let unknown: Vec<&String> = set
        .iter()
        .filter(|n| !builders::CONNECTOR_OTEL_ENV.contains(&n.as_str()))
        .collect();
    assert!(unknown.is_empty(), "not honoured by the connector: {unknown:?}");
    assert_eq!(
        set.len(),
        builders::CONNECTOR_OTEL_ENV.len(),
        "every variable exercised: {set:?}"
    );
}

fn env_map(c: &Children) -> std::collections::BTreeMap<String, Value> {
    let d = serde_json::to_value(&c.deployment).unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let v = e.get("value").cloned().unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[test]
fn replicas_are_not_applied_when_left_to_an_hpa() {
    let c = build(&connector("tenants", "acme", minimal_spec()));
    let d = serde_json::to_value(&c.deployment).unwrap();
    assert!(
        d["spec"].get("replicas").is_none(),
        "replicas must be absent: {}",
        d["spec"]
    );
    // An HPA-managed connector still gets a PDB.
    assert!(c.pod_disruption_budget.is_some());

    let c = build(&connector("tenants", "globex", full_spec()));
    assert_eq!(c.deployment.spec.replicas, Some(3));
}

#[test]
fn suspend_scales_to_zero_and_drops_the_pdb() {
    let c = build(&connector("tenants", "initech", oauth_suspended_spec()));
    assert_eq!(c.deployment.spec.replicas, Some(0));
    assert!(c.pod_disruption_budget.is_none());
    assert!(c.network_policy.is_none(), "networkPolicy: false");
}

#[test]
fn pdb_only_when_more_than_one_pod() {
    for (replicas, want) in [
        (json!(0), false),
        (json!(1), false),
        (json!(2), true),
        (json!(5), true),
    ] {
        let mut spec = minimal_spec();
        spec["replicas"] = replicas.clone();
        let c = build(&connector("tenants", "acme", spec));
        assert_eq!(c.pod_disruption_budget.is_some(), want, "replicas {replicas}");
    }
}

#[test]
fn the_operator_never_sets_the_restart_annotation_or_foreign_labels() {
    for spec in [
        minimal_spec(),
        full_spec(),
        oauth_suspended_spec(),
        embedded_spec(),
    ] {
        let c = build(&connector("tenants", "x", spec));
        let text = serde_json::to_string(&c.deployment).unwrap();
        assert!(!text.contains("kubectl.kubernetes.io/restartedAt"));
        assert!(!text.contains("\"status\""));
    }
}

#[test]
fn pods_are_locked_down() {
    let c = build(&connector("tenants", "globex", full_spec()));
    let d = serde_json::to_value(&c.deployment).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    let ctr = &pod["containers"][0];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(ctr["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(ctr["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(ctr["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(ctr["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(ctr["ports"][0]["containerPort"], 8080);
    assert_eq!(c.service_account.automount_service_account_token, Some(false));
    let svc = serde_json::to_value(&c.service).unwrap();
    assert_eq!(svc["spec"]["sessionAffinity"], "None");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
}

#[test]
fn every_required_node_term_carries_the_region() {
    let c = build(&connector("tenants", "globex", full_spec()));
    let d = serde_json::to_value(&c.deployment).unwrap();
    let terms = d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(terms.len(), 2, "the CR's two terms are kept");
    for t in terms {
        let exprs = t["matchExpressions"].as_array().unwrap();
        assert!(
            exprs.iter().any(|e| e["key"] == REGION_LABEL
                && e["operator"] == "In"
                && e["values"] == json!(["westeurope"])),
            "{t}"
        );
        assert!(exprs.iter().any(|e| e["key"] == "kubernetes.io/arch"));
    }
    let spread = &d["spec"]["template"]["spec"]["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
}

#[test]
fn credentials_come_from_secret_key_refs_and_the_hash_is_annotated() {
    let c = build(&connector("tenants", "acme", minimal_spec()));
    let env = env_map(&c);
    assert_eq!(
        env["LUMENORE_CLIENT_ID"]["secretKeyRef"],
        json!({"name": "acme-creds", "key": "client-id", "optional": false})
    );
    assert_eq!(
        env["LUMENORE_SECRET"]["secretKeyRef"],
        json!({"name": "acme-creds", "key": "client-secret", "optional": false})
    );
    assert!(!env.contains_key("LUMENORE_API_KEY"));
    assert_eq!(env["SERVER_URL"], "https://acme.lumenore.com");
    let d = serde_json::to_value(&c.deployment).unwrap();
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["lumenore.io/credentials-hash"],
        HASH
    );

    let c = build(&connector("tenants", "globex", full_spec()));
    let env = env_map(&c);
    assert_eq!(env["LUMENORE_API_KEY"]["secretKeyRef"]["key"], "token");
    assert!(!env.contains_key("LUMENORE_CLIENT_ID"));
}

#[test]
fn allowed_hosts_cover_the_service_names_and_extra_hosts() {
    let c = build(&connector("tenants", "globex", full_spec()));
    let env = env_map(&c);
    assert_eq!(
        env["LUMENORE_ALLOWED_HOSTS"],
        "globex,globex:8080,globex.tenants,globex.tenants:8080,globex.tenants.svc,globex.tenants.svc:8080,\
globex.tenants.svc.cluster.local,globex.tenants.svc.cluster.local:8080,mcp.globex.example.com,mcp.globex.example.com:8080"
    );
    assert_eq!(env["LUMENORE_ALLOWED_ORIGINS"], "https://chat.globex.example.com");
    assert_eq!(env["LUMENORE_LISTEN"], "0.0.0.0:8080");
    assert_eq!(env["LUMENORE_LOG_FORMAT"], "json");
    assert_eq!(env["LUMENORE_BACKEND"], "lumenore");
}

#[test]
fn auth_and_rate_limits_reach_the_connector() {
    // API keys: the whole directory is mounted (no subPath) so rotation is picked up in place.
    let c = build(&connector("tenants", "globex", full_spec()));
    let env = env_map(&c);
    assert_eq!(env["LUMENORE_AUTH_MODE"], "api-keys");
    assert_eq!(env["LUMENORE_API_KEYS_FILE"], "/etc/lumenore/api-keys/keys.json");
    assert!(!env.contains_key("LUMENORE_ALLOW_UNAUTHENTICATED"));
    assert_eq!(env["LUMENORE_RATE_LIMIT_CALLER_PER_MINUTE"], "60");
    assert_eq!(env["LUMENORE_RATE_LIMIT_TENANT_PER_MINUTE"], "600");
    assert_eq!(env["LUMENORE_MAX_CONCURRENT_BACKEND_CALLS"], "8");
    assert_eq!(env["LUMENORE_PUBLIC_URL"], "https://mcp.globex.example.com/mcp");
    let d = serde_json::to_value(&c.deployment).unwrap();
    let mounts = d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap();
    let keys = mounts.iter().find(|m| m["name"] == "api-keys").unwrap();
    assert_eq!(keys["mountPath"], "/etc/lumenore/api-keys");
    assert!(keys.get("subPath").is_none());
    let vols = d["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let vol = vols.iter().find(|v| v["name"] == "api-keys").unwrap();
    assert_eq!(vol["secret"]["secretName"], "globex-api-keys");

    let c = build(&connector("tenants", "initech", oauth_suspended_spec()));
    let env = env_map(&c);
    assert_eq!(env["LUMENORE_AUTH_MODE"], "oauth");
    assert_eq!(env["LUMENORE_OAUTH_ISSUER"], "https://login.initech.example.com");
    assert_eq!(
        env["LUMENORE_OAUTH_AUDIENCE"],
        "https://mcp.initech.example.com/mcp"
    );
    assert_eq!(
        env["LUMENORE_OAUTH_JWKS_URL"],
        "https://login.initech.example.com/jwks.json"
    );
    assert_eq!(env["LUMENORE_PUBLIC_URL"], "http://initech.tenants.svc:8080/mcp");

    let c = build(&connector("tenants", "acme", minimal_spec()));
    let env = env_map(&c);
    assert_eq!(env["LUMENORE_AUTH_MODE"], "none");
    assert_eq!(env["LUMENORE_ALLOW_UNAUTHENTICATED"], "true");
    assert!(!env.contains_key("LUMENORE_RATE_LIMIT_CALLER_PER_MINUTE"));
}

#[test]
fn embedded_backend_needs_no_credentials() {
    let c = build(&connector("demo", "demo", embedded_spec()));
    let env = env_map(&c);
    assert_eq!(env["LUMENORE_BACKEND"], "embedded");
    assert!(!env.contains_key("SERVER_URL"));
    assert!(!env.contains_key("LUMENORE_CLIENT_ID"));
    let d = serde_json::to_value(&c.deployment).unwrap();
    assert!(d["spec"]["template"]["metadata"].get("annotations").is_none());
}

#[test]
fn network_policy_allows_only_peers_in_and_dns_https_out() {
    let c = build(&connector("tenants", "globex", full_spec()));
    let np = serde_json::to_value(c.network_policy.unwrap()).unwrap();
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        np["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "ingress"
    );
    assert_eq!(
        np["spec"]["ingress"][0]["ports"],
        json!([{"protocol": "TCP", "port": 8080}])
    );
    assert_eq!(
        np["spec"]["egress"][0]["ports"],
        json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
    );
    assert_eq!(
        np["spec"]["egress"][1]["ports"],
        json!([{"protocol": "TCP", "port": 443}])
    );
    assert_eq!(
        np["spec"]["egress"][1]["to"][0]["ipBlock"]["cidr"],
        "203.0.113.0/24"
    );

    // Default: same namespace in, HTTPS anywhere out.
    let c = build(&connector("tenants", "acme", minimal_spec()));
    let np = serde_json::to_value(c.network_policy.unwrap()).unwrap();
    assert_eq!(np["spec"]["ingress"][0]["from"], json!([{"podSelector": {}}]));
    assert!(np["spec"]["egress"][1].get("to").is_none());
}

#[test]
fn children_are_controlled_by_the_cr() {
    let lc = connector("tenants", "acme", minimal_spec());
    let c = build(&lc);
    for meta in [
        &c.service_account.metadata,
        &c.deployment.metadata,
        &c.service.metadata,
        &c.network_policy.as_ref().unwrap().metadata,
        &c.pod_disruption_budget.as_ref().unwrap().metadata,
    ] {
        let o = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(o.kind, "LumenoreConnector");
        assert_eq!(o.uid, "uid-acme");
        assert_eq!(o.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("tenants"));
        assert_eq!(meta.name.as_deref(), Some("acme"));
    }
}

#[test]
fn egress_ports_come_from_the_server_issuer_and_jwks_urls() {
    let mut spec = minimal_spec();
    spec["serverUrl"] = json!("https://acme.lumenore.example:8443/base");
    spec["auth"] = json!({"mode": "oauth", "oauth": {
        "issuer": "https://login.acme.example:9443/realms/acme",
        "audience": "https://mcp.acme.example/mcp",
        "jwksUrl": "https://keys.acme.example/jwks.json"}});
    let c = build(&connector("tenants", "acme", spec));
    let np = serde_json::to_value(c.network_policy.unwrap()).unwrap();
    assert_eq!(
        np["spec"]["egress"][1]["ports"],
        json!([{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8443}, {"protocol": "TCP", "port": 9443}])
    );
    // The hosts egressTo must cover, for the docs and for `kubectl describe`.
    assert_eq!(
        np["metadata"]["annotations"][builders::EGRESS_HOSTS_ANNOTATION],
        "acme.lumenore.example:8443,keys.acme.example:443,login.acme.example:9443"
    );
    // Without OAuth the issuer's port is not opened.
    let mut spec = minimal_spec();
    spec["serverUrl"] = json!("https://acme.lumenore.example:8443");
    let np =
        serde_json::to_value(build(&connector("tenants", "acme", spec)).network_policy.unwrap()).unwrap();
    assert_eq!(
        np["spec"]["egress"][1]["ports"],
        json!([{"protocol": "TCP", "port": 8443}])
    );
}

/// CNIs enforce egress after a Service's translation, on the pod's port: for an in-cluster Service
/// the policy allows the pods' ports the reconcile found (`BuildInputs::egress_services`) instead of
/// the URL's, lists what it could not resolve, and leaves every other host's port alone.
#[test]
fn egress_to_an_in_cluster_service_allows_the_pods_port() {
    use builders::{EgressPorts, ServiceEgress};
    let mut spec = minimal_spec();
    spec["serverUrl"] = json!("https://lumenore.lumenore-system.svc:8443");
    spec["auth"] = json!({"mode": "oauth", "oauth": {
        "issuer": "https://login.acme.example:9443/realms/acme",
        "audience": "https://mcp.acme.example/mcp"}});
    spec["telemetry"] = json!({"otlp": {"endpoint": "http://otel-collector.observability.svc:4318"}});
    let lc = connector("tenants", "acme", spec);
    let with = |egress_services: Vec<ServiceEgress>| {
        let inputs = BuildInputs {
            default_image: "img".into(),
            credentials_hash: Some(HASH.into()),
            monitoring_namespace: None,
            egress_services,
        };
        serde_json::to_value(builders::build_children(&lc, &inputs).network_policy.unwrap()).unwrap()
    };
    let ports = |np: &Value| -> Vec<i64> {
        np["spec"]["egress"][1]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].as_i64().unwrap())
            .collect()
    };
    let hosts =
        "login.acme.example:9443,lumenore.lumenore-system.svc:8443,otel-collector.observability.svc:4318";

    // Nothing resolved (the default): the URLs' ports, exactly as before.
    let np = with(Vec::new());
    assert_eq!(ports(&np), [4318, 8443, 9443]);
    assert_eq!(
        np["metadata"]["annotations"],
        json!({builders::EGRESS_HOSTS_ANNOTATION: hosts})
    );

    // The collector's pods listen on 14318, the server's on 8080 and 8081 (two pod templates).
    let np = with(vec![
        ServiceEgress {
            host: "otel-collector.observability.svc".into(),
            port: 4318,
            ports: EgressPorts::Target(vec![14318]),
        },
        ServiceEgress {
            host: "lumenore.lumenore-system.svc".into(),
            port: 8443,
            ports: EgressPorts::Target(vec![8080, 8081]),
        },
        // Not an endpoint of this CR: ignored.
        ServiceEgress {
            host: "other.observability.svc".into(),
            port: 4318,
            ports: EgressPorts::Target(vec![1]),
        },
    ]);
    assert_eq!(ports(&np), [8080, 8081, 9443, 14318]);
    let annotations = &np["metadata"]["annotations"];
    assert_eq!(
        annotations[builders::EGRESS_HOSTS_ANNOTATION],
        hosts,
        "egressTo must still cover the URLs' hosts"
    );
    assert_eq!(
        annotations[builders::EGRESS_TARGET_PORTS_ANNOTATION],
        "lumenore.lumenore-system.svc:8443->8080/8081,otel-collector.observability.svc:4318->14318"
    );
    assert!(annotations.get(builders::EGRESS_UNRESOLVED_ANNOTATION).is_none());

    // Unresolved: the URL's port is kept, and the reason shown.
    let np = with(vec![ServiceEgress {
        host: "otel-collector.observability.svc".into(),
        port: 4318,
        ports: EgressPorts::Unresolved("named targetPort otlp-http: no EndpointSlice port yet".into()),
    }]);
    assert_eq!(ports(&np), [4318, 8443, 9443]);
    assert_eq!(
        np["metadata"]["annotations"][builders::EGRESS_UNRESOLVED_ANNOTATION],
        "otel-collector.observability.svc:4318 (named targetPort otlp-http: no EndpointSlice port yet)"
    );
    assert!(
        np["metadata"]["annotations"]
            .get(builders::EGRESS_TARGET_PORTS_ANNOTATION)
            .is_none()
    );
}

#[test]
fn a_monitoring_namespace_may_reach_the_metrics_port() {
    let lc = connector("tenants", "acme", minimal_spec());
    let inputs = BuildInputs {
        default_image: "img".into(),
        credentials_hash: None,
        monitoring_namespace: Some("monitoring".into()),
        egress_services: Vec::new(),
    };
    let np = serde_json::to_value(builders::build_children(&lc, &inputs).network_policy.unwrap()).unwrap();
    assert_eq!(np["spec"]["ingress"].as_array().unwrap().len(), 2);
    assert_eq!(
        np["spec"]["ingress"][1]["from"],
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}])
    );
    assert_eq!(
        np["spec"]["ingress"][1]["ports"],
        json!([{"protocol": "TCP", "port": 8080}])
    );
    // Not configured: only the tenant's peers.
    let np = serde_json::to_value(build(&lc).network_policy.unwrap()).unwrap();
    assert_eq!(np["spec"]["ingress"].as_array().unwrap().len(), 1);
}

#[test]
fn a_user_zone_spread_replaces_the_operators_instead_of_duplicating_it() {
    let mut spec = minimal_spec();
    spec["scheduling"] = json!({"topologySpreadConstraints": [
        {"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"},
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"},
        {"maxSkew": 3, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
    ]});
    let lc = connector("tenants", "acme", spec);
    let tsc = builders::topology_spread(&lc);
    let keys: Vec<(String, String)> = tsc
        .iter()
        .map(|c| (c.topology_key.clone(), c.when_unsatisfiable.clone()))
        .collect();
    assert_eq!(
        keys,
        [
            (
                "topology.kubernetes.io/zone".to_string(),
                "ScheduleAnyway".to_string()
            ),
            ("kubernetes.io/hostname".to_string(), "DoNotSchedule".to_string())
        ],
        "each (topologyKey, whenUnsatisfiable) once: the API server rejects duplicates"
    );
    assert_eq!(tsc[0].max_skew, 2, "the user's setting wins");
    assert!(
        tsc[0].label_selector.is_some(),
        "and still selects the connector's pods"
    );
    assert_eq!(tsc[1].max_skew, 1);
}

/// Every environment variable the operator sets is one the connector reads (`lumenore_contract::env`:
/// its clap settings, the credentials and the OpenTelemetry variables), so the two cannot drift.
#[test]
fn every_env_var_set_on_the_connector_is_one_it_accepts() {
    let mut oauth = oauth_suspended_spec();
    oauth["rateLimits"] =
        json!({"perCallerPerMinute": 1, "tenantPerMinute": 2, "maxConcurrentBackendCalls": 3});
    let mut stored = embedded_spec();
    stored["rateLimits"] = store_limits();
    oauth["network"]["allowedOrigins"] = json!(["https://chat.example.com"]);
    let mut set = std::collections::BTreeSet::new();
    for spec in [
        minimal_spec(),
        full_spec(),
        oauth,
        embedded_spec(),
        telemetry_spec(),
        stored,
    ] {
        let lc = connector("tenants", "acme", spec);
        for e in builders::connector_env(&lc) {
            set.insert(e.name);
        }
    }
    assert!(set.len() >= 31, "every option exercised: {set:?}");
    // `lumenore_contract::env` is the set the connector's command line reads (held to it by the
    // connector's test `the_command_line_reads_exactly_the_contracts_settings`), plus the credentials and
    // the OpenTelemetry variables it honours.
    let unknown: Vec<&String> = set
        .iter()
        .filter(|n| !lumenore_contract::env::accepted(n))
        .collect();
    assert!(unknown.is_empty(), "the connector does not read {unknown:?}");
}

fn store_limits() -> Value {
    json!({"tenantPerMinute": 600, "perCallerPerMinute": 60, "store": {
        "redis": {
            "url": "rediss://redis.platform.svc.cluster.local:6380/2",
            "username": "lumenore",
            "passwordSecretRef": {"name": "redis-auth", "key": "password"},
            "caSecretRef": {"name": "redis-tls", "key": "ca.pem"}},
        "timeout": "80ms",
        "failurePolicy": "failClosed"}})
}

/// Issue 23: the store reaches the connector as its variables (the password from the Secret, the scope
/// the tenant's namespace and name), the CA bundle as a read-only mount, and the NetworkPolicy opens the
/// store's port.
#[test]
fn a_rate_limit_store_reaches_the_connector_and_its_port_is_opened() {
    let mut spec = embedded_spec();
    spec["rateLimits"] = store_limits();
    let c = build(&connector("tenants", "acme", spec));
    let env = env_map(&c);
    assert_eq!(
        env["LUMENORE_RATE_LIMIT_STORE"],
        "rediss://redis.platform.svc.cluster.local:6380/2"
    );
    assert_eq!(env["LUMENORE_RATE_LIMIT_STORE_USERNAME"], "lumenore");
    assert_eq!(
        env["LUMENORE_RATE_LIMIT_STORE_PASSWORD"],
        json!({"secretKeyRef": {"name": "redis-auth", "key": "password", "optional": false}})
    );
    assert_eq!(env["LUMENORE_RATE_LIMIT_STORE_SCOPE"], "tenants/acme");
    assert_eq!(env["LUMENORE_RATE_LIMIT_STORE_TIMEOUT"], "80ms");
    assert_eq!(env["LUMENORE_RATE_LIMIT_STORE_FAILURE"], "closed");
    assert_eq!(
        env["LUMENORE_RATE_LIMIT_STORE_CA_FILE"],
        format!("{}/ca.crt", builders::STORE_CA_DIR)
    );
    let d = serde_json::to_value(&c.deployment).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "rate-limit-store-ca")
        .unwrap()
        .clone();
    assert_eq!(mount["mountPath"], builders::STORE_CA_DIR);
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "rate-limit-store-ca")
        .unwrap()
        .clone();
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "ca.pem", "path": "ca.crt"}])
    );
    let np = serde_json::to_value(c.network_policy.unwrap()).unwrap();
    assert_eq!(
        np["spec"]["egress"][1]["ports"],
        json!([{"protocol": "TCP", "port": 6380}])
    );
    assert_eq!(
        np["metadata"]["annotations"][builders::EGRESS_HOSTS_ANNOTATION],
        "redis.platform.svc.cluster.local:6380"
    );

    // Redis' own port when the URL names none; the default policy is failOpen; no CA, no mount.
    let mut spec = embedded_spec();
    spec["rateLimits"] = json!({"tenantPerMinute": 60, "store": {"redis": {"url": "redis://10.0.0.7"}}});
    let c = build(&connector("tenants", "acme", spec));
    let env = env_map(&c);
    assert_eq!(env["LUMENORE_RATE_LIMIT_STORE_FAILURE"], "open");
    assert!(!env.contains_key("LUMENORE_RATE_LIMIT_STORE_PASSWORD"));
    assert!(!env.contains_key("LUMENORE_RATE_LIMIT_STORE_CA_FILE"));
    let np = serde_json::to_value(c.network_policy.unwrap()).unwrap();
    assert_eq!(
        np["spec"]["egress"][1]["ports"],
        json!([{"protocol": "TCP", "port": 6379}])
    );
}

/// Issue 23, share mode: a tenant with a rate gets a ConfigMap of its ready pods, mounted as a directory
/// (the kubelet updates it in place) and optional (a pod starts before the first write); the connector is
/// told where to read it. A tenant without a rate gets none of it.
#[test]
fn rate_limits_are_shared_by_the_ready_pods_through_a_config_map() {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
    let lc = connector("tenants", "globex", full_spec());
    let env = env_map(&build(&lc));
    assert_eq!(
        env["LUMENORE_RATE_LIMIT_SHARES_FILE"],
        format!("{}/{}", builders::SHARES_DIR, builders::SHARES_KEY)
    );
    let ready = |n: Option<i32>| Deployment {
        status: Some(DeploymentStatus {
            ready_replicas: n,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(builders::shares_of(&ready(Some(3))), 3);
    assert_eq!(builders::shares_of(&ready(Some(0))), 1);
    assert_eq!(builders::shares_of(&ready(None)), 1);
    assert_eq!(builders::shares_of(&Deployment::default()), 1);
    let cm = serde_json::to_value(builders::shares_config_map(&lc, 3).unwrap()).unwrap();
    assert_eq!(cm["metadata"]["name"], "globex-rate-limits");
    assert_eq!(cm["metadata"]["namespace"], "tenants");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(cm["data"], json!({"shares": "3"}));
    let d = serde_json::to_value(&build(&lc).deployment).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "rate-limit-shares")
        .unwrap()
        .clone();
    assert_eq!(
        volume["configMap"],
        json!({"name": "globex-rate-limits", "optional": true, "defaultMode": 0o444})
    );
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "rate-limit-shares")
        .unwrap()
        .clone();
    assert_eq!(mount["mountPath"], builders::SHARES_DIR);
    assert!(mount.get("subPath").is_none());

    let plain = connector("tenants", "acme", minimal_spec());
    assert!(builders::shares_config_map(&plain, 3).is_none());
    assert!(!env_map(&build(&plain)).contains_key("LUMENORE_RATE_LIMIT_SHARES_FILE"));
    // Only the concurrency cap: nothing to share.
    let mut spec = minimal_spec();
    spec["rateLimits"] = json!({"maxConcurrentBackendCalls": 4});
    assert!(builders::shares_config_map(&connector("tenants", "acme", spec), 3).is_none());
}
