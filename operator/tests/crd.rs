//! The generated CRD: fresh in `crds/`, structural, documented, and its CEL rules do what they say.

use kube::CustomResourceExt;
use lumenore_operator::crd::LumenoreConnector;
use lumenore_operator::crdgen::{CRD_FILE, crd_yaml};
use serde_json::{Value, json};

#[path = "common/cel_admission.rs"]
mod cel_admission;

fn crd_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds")
        .join(CRD_FILE)
}

#[test]
fn crds_dir_is_fresh() {
    let expected = crd_yaml().expect("CRD serializes");
    let actual = std::fs::read_to_string(crd_path()).unwrap_or_default();
    assert!(
        actual == expected,
        "crds/{CRD_FILE} is stale: run `cargo run -p lumenore-operator -- crdgen --out crds`"
    );
}

#[test]
fn yaml_round_trips_to_the_same_crd() {
    let yaml = crd_yaml().unwrap();
    let parsed: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_saphyr::from_str(&yaml).expect("generated YAML parses");
    assert_eq!(
        serde_json::to_value(&parsed).unwrap(),
        serde_json::to_value(LumenoreConnector::crd()).unwrap()
    );
}

fn schema() -> Value {
    let crd = serde_json::to_value(LumenoreConnector::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Walk every schema node; `f(path, node)`.
fn walk(path: &str, node: &Value, f: &mut dyn FnMut(&str, &Value)) {
    f(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(&format!("{path}.{k}"), v, f);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, f);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), ap, f);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(list) = node.get(key).and_then(Value::as_array) {
            for (i, v) in list.iter().enumerate() {
                walk(&format!("{path}/{key}{i}"), v, f);
            }
        }
    }
}

#[test]
fn schema_is_structural() {
    let mut problems = Vec::new();
    walk("", &schema(), &mut |path, node| {
        let in_junctor = path.contains("/anyOf") || path.contains("/oneOf") || path.contains("/allOf");
        let typed = node.get("type").is_some()
            || node.get("x-kubernetes-int-or-string") == Some(&json!(true))
            || node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
        if !typed && !in_junctor {
            problems.push(format!("{path}: no type"));
        }
        if in_junctor {
            for forbidden in [
                "type",
                "description",
                "default",
                "nullable",
                "additionalProperties",
            ] {
                if node.get(forbidden).is_some() {
                    problems.push(format!("{path}: {forbidden} inside a junctor"));
                }
            }
        }
        if node.get("$ref").is_some() {
            problems.push(format!("{path}: $ref is not allowed"));
        }
        if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
            problems.push(format!("{path}: properties and additionalProperties together"));
        }
    });
    assert!(
        problems.is_empty(),
        "schema is not structural:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_spec_and_status_field_has_a_description() {
    let s = schema();
    let mut missing = Vec::new();
    for root in ["spec", "status"] {
        walk(root, &s["properties"][root], &mut |path, node| {
            let is_item = path.ends_with("[]") || path.ends_with('}');
            let desc = node.get("description").and_then(Value::as_str).unwrap_or("");
            if !is_item && !path.contains("/") && desc.trim().is_empty() {
                missing.push(path.to_string());
            }
        });
    }
    assert!(
        missing.is_empty(),
        "fields without a description (kubectl explain):\n{}",
        missing.join("\n")
    );
}

#[test]
fn crd_has_subresources_short_name_and_printer_columns() {
    let crd = serde_json::to_value(LumenoreConnector::crd()).unwrap();
    let v = &crd["spec"]["versions"][0];
    assert_eq!(crd["spec"]["group"], "lumenore.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["lmc"]));
    assert_eq!(v["subresources"]["status"], json!({}));
    assert_eq!(v["subresources"]["scale"]["specReplicasPath"], ".spec.replicas");
    assert_eq!(
        v["subresources"]["scale"]["statusReplicasPath"],
        ".status.replicas"
    );
    assert_eq!(
        v["subresources"]["scale"]["labelSelectorPath"],
        ".status.selector"
    );
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["Tenant", "Region", "Ready", "Replicas", "Age"] {
        assert!(cols.contains(&want), "missing printer column {want}: {cols:?}");
    }
    let conds = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conds["x-kubernetes-list-type"], "map");
}

#[test]
fn spec_defaults_are_in_the_schema() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    assert_eq!(spec["backend"]["default"], "lumenore");
    assert_eq!(spec["suspend"]["default"], false);
    assert_eq!(spec["serverUrl"]["default"], "https://preview.lumenore.com");
    assert_eq!(spec["auth"]["default"]["mode"], "none");
    assert_eq!(spec["network"]["default"]["networkPolicy"], true);
    let required: Vec<&str> = s["properties"]["spec"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, vec!["region", "tenant"]);
}

// ---- CEL rules, evaluated client-side with kube's CEL validator ----

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "lumenore.io/v1alpha1",
        "kind": "LumenoreConnector",
        "metadata": {"name": "acme", "namespace": "tenants"},
        "spec": spec,
    })
}

fn good_spec() -> Value {
    json!({
        "tenant": "acme",
        "region": {"cloud": "aws", "name": "eu-west-1"},
        "backend": "lumenore",
        "serverUrl": "https://acme.lumenore.com",
        "credentials": {"secretName": "acme-creds", "clientIdKey": "id", "clientSecretKey": "secret"},
        "auth": {"mode": "none"},
        "network": {"networkPolicy": true},
        "suspend": false,
    })
}

/// The rules as kube-apiserver evaluates them: kube's CEL validator, wired by the fake API server's
/// admission module (`optionalOldSelf` bound as the server binds it, ratcheting on update).
fn cel(new: &Value, old: Option<&Value>) -> Result<(), String> {
    cel_admission::Schema::new(&schema()).admit("LumenoreConnector.lumenore.io", new, old)
}

fn with(mut spec: Value, path: &[&str], v: Value) -> Value {
    let mut cur = &mut spec;
    for p in &path[..path.len() - 1] {
        cur = &mut cur[*p];
    }
    cur[path[path.len() - 1]] = v;
    spec
}

#[test]
fn cel_accepts_a_good_spec() {
    cel(&object(good_spec()), None).unwrap();
    let token = with(
        good_spec(),
        &["credentials"],
        json!({"secretName": "s", "apiTokenKey": "token"}),
    );
    cel(&object(token), None).unwrap();
    let embedded = json!({"tenant": "demo", "region": {"cloud": "gcp", "name": "europe-west4"}, "backend": "embedded", "serverUrl": "https://preview.lumenore.com", "auth": {"mode": "none"}});
    cel(&object(embedded), None).unwrap();
}

#[test]
fn cel_rejects_a_tenant_that_is_not_a_dns_label() {
    for bad in ["Acme", "acme_corp", "-acme", "acme-"] {
        let err = cel(&object(with(good_spec(), &["tenant"], json!(bad))), None).unwrap_err();
        assert!(err.contains("DNS label"), "{bad}: {err}");
    }
}

#[test]
fn cel_rejects_plain_http_server_url() {
    let err = cel(
        &object(with(
            good_spec(),
            &["serverUrl"],
            json!("http://acme.lumenore.com"),
        )),
        None,
    )
    .unwrap_err();
    assert!(err.contains("https"), "{err}");
}

#[test]
fn cel_requires_exactly_one_credentials_form() {
    for creds in [
        json!({"secretName": "s", "clientIdKey": "id", "clientSecretKey": "secret", "apiTokenKey": "t"}),
        json!({"secretName": "s", "clientIdKey": "id"}),
        json!({"secretName": "s"}),
    ] {
        let err = cel(&object(with(good_spec(), &["credentials"], creds.clone())), None).unwrap_err();
        assert!(err.contains("exactly one credentials form"), "{creds}: {err}");
    }
    let mut no_creds = good_spec();
    no_creds.as_object_mut().unwrap().remove("credentials");
    let err = cel(&object(no_creds), None).unwrap_err();
    assert!(err.contains("credentials are required"), "{err}");
}

#[test]
fn cel_keeps_tenant_and_region_immutable() {
    let old = object(good_spec());
    let err = cel(
        &object(with(good_spec(), &["tenant"], json!("other"))),
        Some(&old),
    )
    .unwrap_err();
    assert!(err.contains("tenant is immutable"), "{err}");
    let err = cel(
        &object(with(good_spec(), &["region", "name"], json!("us-east-1"))),
        Some(&old),
    )
    .unwrap_err();
    assert!(err.contains("region is immutable"), "{err}");
    // Other fields may change.
    cel(&object(with(good_spec(), &["suspend"], json!(true))), Some(&old)).unwrap();
}

#[test]
fn cel_auth_mode_needs_its_settings() {
    let err = cel(
        &object(with(good_spec(), &["auth"], json!({"mode": "apiKeys"}))),
        None,
    )
    .unwrap_err();
    assert!(err.contains("auth.apiKeys is required"), "{err}");
    let err = cel(
        &object(with(good_spec(), &["auth"], json!({"mode": "oauth"}))),
        None,
    )
    .unwrap_err();
    assert!(err.contains("auth.oauth is required"), "{err}");
    let err = cel(
        &object(with(
            good_spec(),
            &["auth"],
            json!({"mode": "oauth", "oauth": {"issuer": "http://idp", "audience": "a"}}),
        )),
        None,
    )
    .unwrap_err();
    assert!(err.contains("issuer must be an https URL"), "{err}");
    cel(
        &object(with(
            good_spec(),
            &["auth"],
            json!({"mode": "apiKeys", "apiKeys": {"secretName": "keys", "key": "keys"}}),
        )),
        None,
    )
    .unwrap();
    cel(
        &object(with(
            good_spec(),
            &["auth"],
            json!({"mode": "oauth", "oauth": {"issuer": "https://idp.example.com", "audience": "https://mcp.example.com/mcp"}}),
        )),
        None,
    )
    .unwrap();
}

#[test]
fn cel_rejects_names_the_children_cannot_carry() {
    // The name becomes the Service's name (DNS-1035 label) and a label value (at most 63 characters).
    let named = |n: &str| {
        let mut o = object(good_spec());
        o["metadata"]["name"] = json!(n);
        o
    };
    for bad in ["acme.eu", "3m", &"a".repeat(64), "Acme", "acme-", "acme_eu"] {
        let err = cel(&named(bad), None).unwrap_err();
        assert!(err.contains("DNS-1035"), "{bad}: {err}");
    }
    for good in ["acme", "a", &"a".repeat(63), "acme-2"] {
        cel(&named(good), None).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    // The rule judges creation only (optionalOldSelf): an object stored under such a name before the
    // rule existed can still be written (its status above all); the operator reports it InvalidSpec.
    for bad in ["acme.eu", "3m"] {
        cel(&named(bad), Some(&named(bad))).unwrap_or_else(|e| panic!("{bad}: {e}"));
    }
}

#[test]
fn tenant_and_region_must_be_label_values() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    let tenant = spec["tenant"]["pattern"].as_str().expect("tenant pattern");
    let region = spec["region"]["properties"]["name"]["pattern"]
        .as_str()
        .expect("region pattern");
    assert_eq!(tenant, "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$");
    // The label value regex of k8s.io/apimachinery, anchored (an empty region is refused by minLength).
    assert_eq!(region, "^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$");
    assert_eq!(spec["region"]["properties"]["name"]["maxLength"], 63);
}

#[test]
fn schema_uses_only_formats_the_api_server_knows() {
    // Formats the API server's OpenAPI validation recognises (k8s.io/kube-openapi strfmt); any other
    // one makes it warn on every apply of the CRD.
    let known = [
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "binary",
        "date",
        "date-time",
        "password",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "duration",
    ];
    let mut unknown = Vec::new();
    walk("", &schema(), &mut |path, node| {
        if let Some(f) = node.get("format").and_then(Value::as_str)
            && !known.contains(&f)
        {
            unknown.push(format!("{path}: {f}"));
        }
    });
    assert!(unknown.is_empty(), "{unknown:?}");
}

#[test]
fn cel_otlp_endpoint_is_an_http_url_with_a_host_and_a_port() {
    let otlp = |endpoint: &str| {
        object(with(
            good_spec(),
            &["telemetry"],
            json!({"otlp": {"endpoint": endpoint}}),
        ))
    };
    for good in [
        "http://otel-collector.observability.svc:4318",
        "https://otlp.example.com:443/tenant-a",
        "http://10.0.0.7:4318",
        "http://[fd00::7]:4318",
    ] {
        cel(&otlp(good), None).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "otel-collector:4318",
        "grpc://otel-collector:4317",
        "http://otel-collector",
        "https://otlp.example.com/v1/traces",
        "http://otel-collector:0",
        "http://otel-collector:65536",
        "http://user:secret@otel-collector:4318",
        "http://:4318",
        "http://otel-collector:4318?x=1",
    ] {
        let err = cel(&otlp(bad), None).unwrap_err();
        assert!(
            err.contains(
                "telemetry.otlp.endpoint must be an http or https URL with a host and an explicit port"
            ),
            "{bad}: {err}"
        );
    }
}

#[test]
fn otlp_schema_rules() {
    let s = schema();
    let otlp = &s["properties"]["spec"]["properties"]["telemetry"]["properties"]["otlp"];
    assert_eq!(otlp["required"], json!(["endpoint"]));
    assert_eq!(otlp["properties"]["protocol"]["enum"], json!(["http/protobuf"]));
    assert_eq!(otlp["properties"]["protocol"]["default"], "http/protobuf");
    let ratio = &otlp["properties"]["samplingRatio"];
    assert_eq!(
        (ratio["minimum"].as_f64(), ratio["maximum"].as_f64()),
        (Some(0.0), Some(1.0))
    );
    assert_eq!(
        otlp["properties"]["headersSecretRef"]["required"],
        json!(["key", "name"])
    );
    // Only formats the API server knows (it warns about others).
    let mut formats = Vec::new();
    walk("otlp", otlp, &mut |path, node| {
        if let Some(f) = node.get("format").and_then(Value::as_str) {
            formats.push(format!("{path}: {f}"));
        }
    });
    assert!(formats.iter().all(|f| f.ends_with(": double")), "{formats:?}");
}

/// The endpoint pattern is written twice, as the CEL rule's literal (an attribute needs a literal) and as
/// `OTLP_ENDPOINT_PATTERN` for the Rust re-check: they must be the same expression.
#[test]
fn otlp_endpoint_cel_rule_and_rust_pattern_are_the_same() {
    let s = schema();
    let endpoint =
        &s["properties"]["spec"]["properties"]["telemetry"]["properties"]["otlp"]["properties"]["endpoint"];
    let rule = endpoint["x-kubernetes-validations"][0]["rule"]
        .as_str()
        .expect("a CEL rule on spec.telemetry.otlp.endpoint");
    // Inside a CEL string literal every regex backslash is written twice.
    let expected = format!(
        "self.matches('{}')",
        lumenore_operator::crd::OTLP_ENDPOINT_PATTERN.replace('\\', "\\\\")
    );
    assert_eq!(rule, expected);
}

/// Issue 23: the store URL and timeout the schema admits are exactly what the connector accepts, so a
/// resource the API server takes never becomes pods that crash at start (`validate::validate_store` is the
/// operator's second check, the connector's own the third).
#[test]
fn the_rate_limit_store_schema_admits_what_the_connector_accepts() {
    use lumenore_operator::crd::RateLimitStore;
    let s = schema();
    let store = &s["properties"]["spec"]["properties"]["rateLimits"]["properties"]["store"]["properties"];
    let url_pattern =
        regex::Regex::new(store["redis"]["properties"]["url"]["pattern"].as_str().unwrap()).unwrap();
    let timeout_pattern = regex::Regex::new(store["timeout"]["pattern"].as_str().unwrap()).unwrap();
    let parsed = |url: &str, timeout: Option<&str>| -> RateLimitStore {
        serde_json::from_value(serde_json::json!({"redis": {"url": url}, "timeout": timeout})).unwrap()
    };
    for good in [
        "redis://redis.platform.svc:6379/0",
        "redis://10.0.0.7",
        "rediss://redis.platform.svc.cluster.local:6380/",
        "redis://[fd00::7]:6379/15",
    ] {
        assert!(url_pattern.is_match(good), "schema refuses {good}");
        lumenore_operator::validate::validate_store(&parsed(good, None))
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "redis://:hunter2@redis:6379",
        "redis://admin@redis:6379",
        "redis://:6379",
        "rediss://redis#x",
        "redis://redis?protocol=x",
        "redis://redis/a",
        "http://redis:6379",
    ] {
        assert!(!url_pattern.is_match(bad), "schema admits {bad}");
        assert!(
            lumenore_operator::validate::validate_store(&parsed(bad, None)).is_err(),
            "{bad}"
        );
    }
    // The schema's pattern cannot bound a port: the operator's check refuses what a URL cannot hold.
    assert!(url_pattern.is_match("redis://redis:99999"));
    assert!(lumenore_operator::validate::validate_store(&parsed("redis://redis:99999", None)).is_err());
    for (timeout, ok) in [
        ("50ms", true),
        ("1s", true),
        ("0ms", false),
        ("0s", false),
        ("5m", false),
        ("007ms", false),
    ] {
        assert_eq!(timeout_pattern.is_match(timeout), ok, "{timeout}");
        if ok {
            lumenore_operator::validate::validate_store(&parsed("redis://r:6379", Some(timeout))).unwrap();
        }
    }
    assert!(lumenore_operator::validate::validate_store(&parsed("redis://r:6379", Some("0ms"))).is_err());
}
