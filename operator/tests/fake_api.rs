//! The in-memory API server itself: server-side apply with field ownership, list merge keys, name and
//! label validation, injected 422s and hangs. The reconcile scenarios are only as good as this fake,
//! so its rules are checked here against the API server's documented behaviour and against
//! k8s-openapi's own merge strategies (generated from the Kubernetes OpenAPI).

mod common;

use std::time::Duration;

use common::fake_api::{FakeApi, TEST_MANAGER, ssa};
use http::Method;
use k8s_openapi::DeepMerge;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const NS: &str = "tenants";

fn deployment(env: Value, replicas: Option<i64>) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": "img:1", "env": env,
                    "ports": [{"containerPort": 8080, "protocol": "TCP", "name": "http"}]}]}
            }
        }
    });
    if let Some(r) = replicas {
        d["spec"]["replicas"] = json!(r);
    }
    d
}

fn env_names(api: &FakeApi) -> Vec<String> {
    let d = api.get_raw::<Deployment>(NS, "web").unwrap();
    d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fields_a_manager_stops_applying_are_removed_unless_another_manager_owns_them() {
    let api = FakeApi::new();
    let env = json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]);
    api.apply_as::<Deployment>(NS, "web", "op", &deployment(env, Some(3)), true)
        .unwrap();
    assert!(api.owns::<Deployment>(NS, "web", "op", &["spec", "replicas"]));

    // A second manager applies env var C into the same container (merged by name, not replaced).
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "main", "env": [{"name": "C", "value": "3"}]}]}}}});
    api.apply_as::<Deployment>(NS, "web", "sidecar-injector", &other, false)
        .unwrap();
    assert_eq!(env_names(&api), ["A", "B", "C"]);

    // op stops sending B and replicas: both are removed (op was their only owner), C survives.
    let env = json!([{"name": "A", "value": "1"}]);
    let d = api
        .apply_as::<Deployment>(NS, "web", "op", &deployment(env, None), true)
        .unwrap();
    assert_eq!(env_names(&api), ["A", "C"]);
    // The API server defaults a missing replicas to 1: the count is lost.
    assert_eq!(d["spec"]["replicas"], 1);
    assert!(!api.owns::<Deployment>(NS, "web", "op", &["spec", "replicas"]));

    // The container item is shared: op dropping the whole container keeps what the other manager owns.
    let bare = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}}}});
    api.apply_as::<Deployment>(NS, "web", "op", &bare, true).unwrap();
    assert_eq!(env_names(&api), ["C"]);
}

#[test]
fn a_field_another_manager_set_survives_and_moving_it_to_a_handover_manager_keeps_it() {
    let api = FakeApi::new();
    api.apply_as::<Deployment>(NS, "web", "op", &deployment(json!([]), Some(3)), true)
        .unwrap();
    // Shared ownership: a second manager applies the same value (no conflict).
    let only_replicas = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
    api.apply_as::<Deployment>(NS, "web", "handover", &only_replicas, false)
        .unwrap();
    // op stops applying replicas: the field stays, owned by the handover manager alone.
    api.apply_as::<Deployment>(NS, "web", "op", &deployment(json!([]), None), true)
        .unwrap();
    let d = api.get_raw::<Deployment>(NS, "web").unwrap();
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(api.owns::<Deployment>(NS, "web", "handover", &["spec", "replicas"]));
    assert!(!api.owns::<Deployment>(NS, "web", "op", &["spec", "replicas"]));

    // An HPA scales (an update): it takes the field over without a conflict.
    api.edit_as::<Deployment>(NS, "web", "kube-controller-manager", |d| {
        d["spec"]["replicas"] = json!(7)
    });
    assert!(api.owns::<Deployment>(NS, "web", "kube-controller-manager", &["spec", "replicas"]));
    assert!(!api.owns::<Deployment>(NS, "web", "handover", &["spec", "replicas"]));
}

#[test]
fn applying_a_different_value_to_another_managers_field_conflicts_unless_forced() {
    let api = FakeApi::new();
    api.apply_as::<Deployment>(NS, "web", "op", &deployment(json!([]), Some(3)), true)
        .unwrap();
    let five = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let (code, msg) = api
        .apply_as::<Deployment>(NS, "web", "kubectl", &five, false)
        .unwrap_err();
    assert_eq!(code, 409);
    assert!(msg.contains("conflict with \"op\": .spec.replicas"), "{msg}");
    assert_eq!(
        api.get_raw::<Deployment>(NS, "web").unwrap()["spec"]["replicas"],
        3
    );

    // Forced: the field moves to the new manager.
    api.apply_as::<Deployment>(NS, "web", "kubectl", &five, true)
        .unwrap();
    assert_eq!(
        api.get_raw::<Deployment>(NS, "web").unwrap()["spec"]["replicas"],
        5
    );
    assert!(api.owns::<Deployment>(NS, "web", "kubectl", &["spec", "replicas"]));
    assert!(!api.owns::<Deployment>(NS, "web", "op", &["spec", "replicas"]));
}

#[test]
fn managed_fields_use_the_fields_v1_encoding() {
    let api = FakeApi::new();
    api.apply_as::<Deployment>(
        NS,
        "web",
        "op",
        &deployment(json!([{"name": "A", "value": "1"}]), Some(2)),
        true,
    )
    .unwrap();
    let d = api.get_raw::<Deployment>(NS, "web").unwrap();
    let mf = d["metadata"]["managedFields"].as_array().unwrap();
    let op = mf.iter().find(|e| e["manager"] == "op").unwrap();
    assert_eq!(op["operation"], "Apply");
    assert_eq!(op["fieldsType"], "FieldsV1");
    let f = &op["fieldsV1"];
    assert_eq!(f["f:spec"]["f:replicas"], json!({}));
    let container = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"main\"}"];
    assert_eq!(container["."], json!({}));
    assert_eq!(container["f:env"]["k:{\"name\":\"A\"}"]["f:value"], json!({}));
    assert_eq!(
        container["f:ports"]["k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"]["f:name"],
        json!({})
    );
    // A LabelSelector is atomic: owned as one field.
    assert_eq!(f["f:spec"]["f:selector"], json!({}));
    // Encoding round-trips.
    let set = ssa::from_fields_v1(f);
    assert_eq!(ssa::to_fields_v1(&set), *f);
    // The Deployment was typed correctly by kube too.
    let typed: Deployment = serde_json::from_value(d).unwrap();
    assert_eq!(typed.metadata.managed_fields.unwrap().len(), 1);
}

/// Where no field is removed, server-side apply's merge of lists must agree with k8s-openapi's
/// `DeepMerge`, which is generated from the same OpenAPI list types (strategic merge keys).
#[test]
fn list_merge_agrees_with_k8s_openapi_deep_merge() {
    let live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS,
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "a", "uid": "u1"}]},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {
            "containers": [
                {"name": "main", "image": "img:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                 "ports": [{"containerPort": 8080, "protocol": "TCP"}], "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                 "args": ["--x"]},
                {"name": "side", "image": "side:1"}
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]
        }}}
    });
    let config = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Y", "name": "b", "uid": "u2"}]},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {
            "containers": [
                {"name": "main", "image": "img:2", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                 "ports": [{"containerPort": 9090, "protocol": "TCP"}], "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                 "args": ["--y"]},
                {"name": "third", "image": "third:1"}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "b", "operator": "Exists"}],
            "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"},
                                          {"maxSkew": 1, "topologyKey": "host", "whenUnsatisfiable": "DoNotSchedule"}]
        }}}
    });
    let mut ours = live.clone();
    ssa::merge(&mut ours, &config, "");
    let mut theirs: Deployment = serde_json::from_value(live).unwrap();
    theirs.merge_from(serde_json::from_value(config).unwrap());
    let ours: Deployment = serde_json::from_value(ours).unwrap();
    assert_eq!(
        serde_json::to_value(&ours).unwrap(),
        serde_json::to_value(&theirs).unwrap()
    );
}

#[test]
fn names_and_labels_are_validated_as_the_api_server_does() {
    let api = FakeApi::new();
    let service = |name: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}});
    let sa = |name: &str, labels: Value| json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "labels": labels}});

    // Service names are DNS-1035 labels.
    for bad in ["acme.eu", "3m", &"a".repeat(64), "Acme"] {
        let (code, msg) = api
            .apply_as::<Service>(NS, bad, "op", &service(bad), true)
            .unwrap_err();
        assert_eq!(code, 422, "{bad}");
        assert!(
            msg.starts_with(&format!("Service \"{bad}\" is invalid: metadata.name")),
            "{msg}"
        );
    }
    api.apply_as::<Service>(NS, "acme", "op", &service("acme"), true)
        .unwrap();
    api.apply_as::<Service>(NS, &"a".repeat(63), "op", &service(&"a".repeat(63)), true)
        .unwrap();

    // Other kinds: DNS-1123 subdomains.
    api.apply_as::<ServiceAccount>(NS, "acme.eu", "op", &sa("acme.eu", json!({})), true)
        .unwrap();
    api.apply_as::<ServiceAccount>(NS, "3m", "op", &sa("3m", json!({})), true)
        .unwrap();
    let (code, _) = api
        .apply_as::<ServiceAccount>(NS, "-x", "op", &sa("-x", json!({})), true)
        .unwrap_err();
    assert_eq!(code, 422);

    // Label values: at most 63 characters of the label regex.
    let (code, msg) = api
        .apply_as::<ServiceAccount>(
            NS,
            "l1",
            "op",
            &sa("l1", json!({"lumenore.io/region": "eu west"})),
            true,
        )
        .unwrap_err();
    assert_eq!(code, 422);
    assert!(
        msg.contains("metadata.labels: Invalid value: \"eu west\""),
        "{msg}"
    );
    let (code, _) = api
        .apply_as::<ServiceAccount>(
            NS,
            "l2",
            "op",
            &sa("l2", json!({"app.kubernetes.io/instance": "a".repeat(64)})),
            true,
        )
        .unwrap_err();
    assert_eq!(code, 422);
    api.apply_as::<ServiceAccount>(
        NS,
        "l3",
        "op",
        &sa(
            "l3",
            json!({"app.kubernetes.io/instance": "a".repeat(63), "x": ""}),
        ),
        true,
    )
    .unwrap();
}

#[tokio::test]
async fn injected_refusals_carry_their_message_and_updates_take_ownership() {
    let api = FakeApi::new();
    let client = api.client();
    let sas: Api<ServiceAccount> = Api::namespaced(client, NS);
    api.fail_next_with(
        Method::PATCH,
        "/serviceaccounts/acme",
        403,
        "admission webhook \"policy.example.com\" denied the request: automount must be false",
        1,
    );
    let body = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "acme"}});
    let err = sas
        .patch("acme", &PatchParams::apply("op").force(), &Patch::Apply(&body))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert!(s.message.contains("denied the request"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
    sas.patch("acme", &PatchParams::apply("op").force(), &Patch::Apply(&body))
        .await
        .unwrap();
    api.edit::<ServiceAccount>(NS, "acme", |o| o["metadata"]["labels"] = json!({"team": "data"}));
    assert!(api.owns::<ServiceAccount>(NS, "acme", TEST_MANAGER, &["metadata", "labels", "team"]));
}

#[tokio::test]
async fn an_injected_hang_never_answers() {
    let api = FakeApi::new();
    let sas: Api<ServiceAccount> = Api::namespaced(api.client(), NS);
    api.hang_next(Method::GET, "/serviceaccounts/acme", 1);
    let r = tokio::time::timeout(Duration::from_millis(300), sas.get_opt("acme")).await;
    assert!(r.is_err(), "the request must still be pending");
    // Only the next request hangs.
    assert!(sas.get_opt("acme").await.unwrap().is_none());
    assert_eq!(api.log().first().map(|l| l.status), Some(0));
}

fn service_account(ns: &str, name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// LIST pages as the API server pages them: `limit` objects per page in key order, a continue token
/// and `remainingItemCount` while more remain, the first page's resourceVersion on every page; the
/// watch cache (`resourceVersion=0`) ignores `limit`; bad and expired tokens are refused.
#[tokio::test]
async fn lists_are_paged_with_limit_and_continue() {
    let api = FakeApi::new();
    for i in 0..7 {
        api.put(&service_account(NS, &format!("sa-{i}")));
    }
    for i in 0..2 {
        api.put(&service_account("other", &format!("sa-{i}")));
    }
    let sas: Api<ServiceAccount> = Api::namespaced(api.client(), NS);
    let mut names = Vec::new();
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    let mut rvs = std::collections::BTreeSet::new();
    loop {
        let mut lp = kube::api::ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = sas.list(&lp).await.unwrap();
        pages.push((page.items.len(), page.metadata.remaining_item_count));
        names.extend(page.items.iter().map(|o| o.metadata.name.clone().unwrap()));
        rvs.insert(page.metadata.resource_version.clone().unwrap());
        // An object written meanwhile does not change the pages' resourceVersion.
        api.put(&service_account("zzz", "later"));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, [(3, Some(4)), (3, Some(1)), (1, None)]);
    assert_eq!(names, (0..7).map(|i| format!("sa-{i}")).collect::<Vec<_>>());
    assert_eq!(
        rvs.len(),
        1,
        "every page carries the first page's resourceVersion: {rvs:?}"
    );

    // Across namespaces: key order (namespace, then name); limit 0 means no limit.
    let all: Api<ServiceAccount> = Api::all(api.client());
    let first = all
        .list(&kube::api::ListParams::default().limit(2))
        .await
        .unwrap();
    let keys: Vec<_> = first
        .items
        .iter()
        .map(|o| {
            (
                o.metadata.namespace.clone().unwrap(),
                o.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("other".to_string(), "sa-0".to_string()),
            ("other".into(), "sa-1".into())
        ]
    );
    // 7 + 2 + the one written during the paging above.
    assert_eq!(first.metadata.remaining_item_count, Some(8));
    assert_eq!(all.list(&Default::default()).await.unwrap().items.len(), 10);

    // resourceVersion=0 is served from the watch cache, which ignores limit ...
    let (code, body) = api
        .handle(
            &Method::GET,
            &format!("/api/v1/namespaces/{NS}/serviceaccounts"),
            Some("limit=3&resourceVersion=0&resourceVersionMatch=NotOlderThan"),
            "",
            &[],
        )
        .unwrap();
    let cached: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((code, cached["items"].as_array().unwrap().len()), (200, 7));
    assert!(
        cached["metadata"].get("continue").is_none(),
        "{}",
        cached["metadata"]
    );
    // ... which is why kube leaves resourceVersion=0 out when it sends a limit (the "any" semantic
    // of kube's watcher still pages).
    let paged = sas
        .list(&kube::api::ListParams::default().limit(3).match_any())
        .await
        .unwrap();
    assert_eq!(paged.items.len(), 3);

    // A token that is not the server's: 400. An expired one (after a compaction): 410 Expired.
    let bad = sas
        .list(
            &kube::api::ListParams::default()
                .limit(3)
                .continue_token("bm90LWEtdG9rZW4"),
        )
        .await
        .unwrap_err();
    assert!(matches!(&bad, kube::Error::Api(s) if s.code == 400), "{bad:?}");
    let page = sas
        .list(&kube::api::ListParams::default().limit(3))
        .await
        .unwrap();
    let token = page.metadata.continue_.unwrap();
    api.expire_continue_tokens();
    let expired = sas
        .list(&kube::api::ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap_err();
    match expired {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.contains("too old"), "{}", s.message);
        }
        other => panic!("{other:?}"),
    }
}

/// kube's watcher, configured as the operator's LumenoreConnector watch (with a smaller page), lists
/// page by page from the fake, as it does from an API server.
#[tokio::test]
async fn the_watcher_lists_page_by_page() {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let api = FakeApi::new();
    for i in 0..5 {
        api.put(&service_account(NS, &format!("sa-{i}")));
    }
    let sas: Api<ServiceAccount> = Api::namespaced(api.client(), NS);
    let config = lumenore_operator::controller::connector_watch_config().page_size(2);
    let mut events = watcher(sas, config).boxed();
    let mut seen = Vec::new();
    while let Some(ev) = events.next().await {
        match ev.unwrap() {
            watcher::Event::InitApply(o) => seen.push(o.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen.len(), 5);
    let lists: Vec<_> = api
        .log()
        .into_iter()
        .filter(|l| l.method == Method::GET && l.path.ends_with("/serviceaccounts"))
        .collect();
    assert_eq!(lists.len(), 3, "pages of 2, 2 and 1: {lists:?}");
}
