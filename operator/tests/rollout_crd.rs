//! The generated LumenoreFleetRollout CRD: fresh in `crds/`, structural, namespaced with the status
//! subresource and printer columns, and its CEL rules (run client-side) do what they say.

use kube::CustomResourceExt;
use lumenore_operator::crdgen::{ROLLOUT_CRD_FILE, rollout_crd_yaml};
use lumenore_operator::rollout::LumenoreFleetRollout;
use serde_json::{Value, json};

fn crd() -> Value {
    serde_json::to_value(LumenoreFleetRollout::crd()).unwrap()
}

fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn crds_dir_is_fresh() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds")
        .join(ROLLOUT_CRD_FILE);
    let actual = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        actual == rollout_crd_yaml().unwrap(),
        "crds/{ROLLOUT_CRD_FILE} is stale: run `cargo run -p lumenore-operator -- crdgen --out crds`"
    );
}

/// Every node typed, no `$ref`, nothing forbidden inside junctors (the API server's structural rules).
#[test]
fn schema_is_structural_and_documented() {
    fn walk(path: &str, node: &Value, problems: &mut Vec<String>) {
        let typed = node.get("type").is_some()
            || node.get("x-kubernetes-int-or-string").is_some()
            || node.get("x-kubernetes-preserve-unknown-fields").is_some();
        if !typed {
            problems.push(format!("{path}: no type"));
        }
        if node.get("$ref").is_some() {
            problems.push(format!("{path}: $ref"));
        }
        let is_item = path.ends_with("[]") || path.ends_with('}');
        if !is_item && path.matches('.').count() <= 2 && node.get("description").is_none() && !path.is_empty()
        {
            problems.push(format!("{path}: no description"));
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(&format!("{path}.{k}"), v, problems);
            }
        }
        if let Some(items) = node.get("items") {
            walk(&format!("{path}[]"), items, problems);
        }
        if let Some(ap) = node.get("additionalProperties").filter(|v| v.is_object()) {
            walk(&format!("{path}{{}}"), ap, problems);
        }
    }
    let s = schema();
    let mut problems = Vec::new();
    for root in ["spec", "status"] {
        walk(root, &s["properties"][root], &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn namespaced_with_status_short_name_and_printer_columns() {
    let c = crd();
    assert_eq!(c["spec"]["scope"], "Namespaced");
    assert_eq!(c["spec"]["names"]["shortNames"], json!(["lfr"]));
    let v = &c["spec"]["versions"][0];
    assert_eq!(v["subresources"]["status"], json!({}));
    let cols: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        cols,
        [
            "Image", "Phase", "Wave", "Updated", "Tenants", "Ready", "Previous", "Message", "Age"
        ]
    );
    let d = &s_props()["spec"]["properties"];
    assert_eq!(d["maxUnavailable"]["default"], 5);
    assert_eq!(d["bakeSeconds"]["default"], 300);
    assert_eq!(d["readyDeadlineSeconds"]["default"], 600);
}

fn s_props() -> Value {
    schema()["properties"].clone()
}

fn object(spec: Value) -> Value {
    json!({"apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreFleetRollout",
           "metadata": {"name": "r", "namespace": "lumenore-system"}, "spec": spec})
}

fn cel(spec: Value) -> Result<(), String> {
    kube::core::cel::Validator::new()
        .validate(&schema(), &object(spec), None)
        .map_err(|e| format!("{e:?}"))
}

fn spec(waves: Value) -> Value {
    json!({"image": "ghcr.io/lumenore/lumenore-connector:0.2.0", "maxUnavailable": 5, "bakeSeconds": 0,
           "readyDeadlineSeconds": 60, "paused": false, "rollback": false, "waves": waves})
}

#[test]
fn cel_rules_reject_duplicate_wave_names_and_a_partial_last_wave() {
    cel(spec(json!([
        {"name": "canary", "selector": {"matchLabels": {"ring": "canary"}}, "percent": 100},
        {"name": "rest", "percent": 100}
    ])))
    .unwrap();
    let err = cel(spec(json!([
        {"name": "a", "percent": 10},
        {"name": "a", "percent": 100}
    ])))
    .unwrap_err();
    assert!(err.contains("waves[].name must be unique"), "{err}");
    let err = cel(spec(json!([
        {"name": "a", "percent": 100},
        {"name": "b", "selector": {"matchLabels": {"x": "y"}}, "percent": 100}
    ])))
    .unwrap_err();
    assert!(
        err.contains("the last wave must take every remaining tenant"),
        "{err}"
    );
    let err = cel(spec(json!([{"name": "a", "percent": 50}]))).unwrap_err();
    assert!(
        err.contains("the last wave must take every remaining tenant"),
        "{err}"
    );
}
