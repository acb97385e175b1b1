//! The real operator binary against the real cluster in `KUBECONFIG` (kind, k3d, …).
//!
//! Applies the CRD from `crds/`, starts `lumenore-operator` watching a fresh namespace, creates a
//! credentials Secret and a LumenoreConnector, waits for `Ready=True` (what `kubectl wait
//! --for=condition=Ready` waits for), rotates the Secret and waits for new pods to replace the old
//! ones. Then what only a real API server shows: a name the CRD refuses (the Service could not carry
//! it), removing `spec.replicas` keeps the live count (field ownership handed over), and an HPA on the
//! connector's scale subresource scales the Deployment. Skipped (passes, with a clear message) when
//! no cluster is configured or reachable.
//!
//! Needs a connector image the cluster can run: `LUMENORE_E2E_CONNECTOR_IMAGE` (default
//! `ghcr.io/lumenore/lumenore-connector:<version>`; with kind: `kind load docker-image IMAGE`).
//! Nodes without a `topology.kubernetes.io/region` label get `e2e-region` (the connector pods
//! require the CR's region). `LUMENORE_OPERATOR_BIN` overrides the operator binary (otherwise it is
//! built with cargo). `LUMENORE_E2E_TIMEOUT_SECS` bounds each wait (default 240).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use lumenore_operator::crd::{LumenoreConnector, REPLICAS_HANDOVER_MANAGER};
use serde_json::json;

const SKIP: &str = "SKIPPED: no Kubernetes cluster configured (set KUBECONFIG)";
const REGION_LABEL: &str = "topology.kubernetes.io/region";

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn cluster() -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        println!("{SKIP}");
        return None;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match tokio::time::timeout(Duration::from_secs(10), Client::try_default()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            println!("{SKIP} — KUBECONFIG is set but unusable: {e}");
            return None;
        }
        Err(_) => {
            println!("{SKIP} — timed out loading KUBECONFIG");
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(v)) => {
            println!("cluster reachable: Kubernetes {}.{}", v.major, v.minor);
            Some(client)
        }
        _ => {
            println!("{SKIP} — the cluster in KUBECONFIG is unreachable");
            None
        }
    }
}

fn timeout() -> Duration {
    Duration::from_secs(
        std::env::var("LUMENORE_E2E_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(240),
    )
}

async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn operator_binary() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("LUMENORE_OPERATOR_BIN") {
        return p.into();
    }
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "lumenore-operator", "--bin", "lumenore-operator"])
        .current_dir(&workspace)
        .status()
        .expect("cargo build");
    assert!(status.success(), "building lumenore-operator failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("debug").join("lumenore-operator")
}

fn secret(ns: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("e2e-creds".into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            ("client-id".to_string(), ByteString(b"e2e-client".to_vec())),
            ("client-secret".to_string(), ByteString(value.as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

async fn ready_pods(pods: &Api<Pod>, selector: &str) -> Vec<String> {
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|p| p.name_any())
        .collect()
}

#[tokio::test]
async fn operator_deploys_a_connector_and_rolls_it_on_secret_rotation() {
    let Some(client) = cluster().await else {
        return;
    };

    // CRD from crds/ (the generated file, as users apply it).
    let crd_yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/lumenore.io_lumenoreconnectors.yaml"),
    )
    .expect("crds/ file");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&crd_yaml).expect("CRD YAML");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("lumenore-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    wait_for("CRD Established", || {
        let crds = crds.clone();
        let name = crd.name_any();
        async move {
            let c = crds.get(&name).await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;

    // Region label on nodes (the pods require the CR's region).
    let nodes: Api<Node> = Api::all(client.clone());
    let node_list = nodes
        .list(&ListParams::default())
        .await
        .expect("list nodes")
        .items;
    let region = node_list
        .iter()
        .find_map(|n| n.labels().get(REGION_LABEL).cloned())
        .unwrap_or_else(|| "e2e-region".to_string());
    for n in &node_list {
        if !n.labels().contains_key(REGION_LABEL) {
            println!("labelling node {} with {REGION_LABEL}={region}", n.name_any());
            nodes
                .patch(
                    &n.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {REGION_LABEL: region}}})),
                )
                .await
                .expect("label node");
        }
    }

    let ns = format!("lumenore-e2e-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("create namespace");
    struct Cleanup(Api<Namespace>, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let (api, ns) = (self.0.clone(), self.1.clone());
            // Best effort, on a fresh runtime (we may be unwinding out of the test's runtime).
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Runtime::new() {
                    rt.block_on(async move {
                        let _ = api.delete(&ns, &DeleteParams::background()).await;
                    });
                }
            })
            .join();
        }
    }
    let _cleanup = Cleanup(namespaces.clone(), ns.clone());

    // The operator, watching only this namespace.
    let image = std::env::var("LUMENORE_E2E_CONNECTOR_IMAGE").unwrap_or_else(|_| {
        format!(
            "ghcr.io/lumenore/lumenore-connector:{}",
            env!("CARGO_PKG_VERSION")
        )
    });
    let bin = operator_binary();
    let _operator = KillOnDrop(
        Command::new(&bin)
            .args([
                "--watch-namespaces",
                &ns,
                "--leader-elect=false",
                "--http-addr",
                "127.0.0.1:0",
                "--connector-image",
                &image,
                "--cluster-region",
                &region,
                "--log-format",
                "text",
            ])
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start operator"),
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(&PostParams::default(), &secret(&ns, "first"))
        .await
        .expect("create secret");
    let lcs: Api<LumenoreConnector> = Api::namespaced(client.clone(), &ns);
    let cr: LumenoreConnector = serde_json::from_value(json!({
        "apiVersion": "lumenore.io/v1alpha1",
        "kind": "LumenoreConnector",
        "metadata": {"name": "e2e", "namespace": ns},
        "spec": {
            "tenant": "e2e",
            "region": {"cloud": "aws", "name": region},
            "backend": "embedded",
            "credentials": {"secretName": "e2e-creds", "clientIdKey": "client-id", "clientSecretKey": "client-secret"},
            "replicas": 1,
            "network": {"networkPolicy": true}
        }
    }))
    .unwrap();
    lcs.create(&PostParams::default(), &cr)
        .await
        .expect("create LumenoreConnector");

    // kubectl wait --for=condition=Ready lumenoreconnector/e2e
    wait_for("LumenoreConnector Ready=True", || {
        let lcs = lcs.clone();
        async move {
            let lc = lcs.get("e2e").await.ok()?;
            let st = lc.status?;
            let ready = st.condition("Ready")?;
            println!("Ready={} {}: {}", ready.status, ready.reason, ready.message);
            (ready.status == "True").then_some(())
        }
    })
    .await;
    let lc = lcs.get("e2e").await.unwrap();
    let st = lc.status.unwrap();
    assert_eq!(
        st.endpoint.as_deref(),
        Some(format!("http://e2e.{ns}.svc:8080/mcp").as_str())
    );
    assert_eq!(st.ready_replicas, Some(1));
    assert_eq!(st.observed_generation, lc.metadata.generation);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let hash = |d: &Deployment| {
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("lumenore.io/credentials-hash").cloned())
    };
    let before_hash = hash(&deployments.get("e2e").await.unwrap()).expect("hash annotation");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = "app.kubernetes.io/instance=e2e";
    let old_pods = ready_pods(&pods, selector).await;
    assert!(!old_pods.is_empty());

    // Rotate the Secret: the hash changes and new pods replace the old ones.
    secrets
        .replace("e2e-creds", &PostParams::default(), &{
            let mut s = secrets.get("e2e-creds").await.unwrap();
            s.data = secret(&ns, "second").data;
            s
        })
        .await
        .expect("rotate secret");
    wait_for("a new credentials hash on the pod template", || {
        let deployments = deployments.clone();
        let before = before_hash.clone();
        async move {
            let d = deployments.get("e2e").await.ok()?;
            hash(&d).filter(|h| *h != before).map(|_| ())
        }
    })
    .await;
    wait_for("new ready pods replacing the old ones", || {
        let pods = pods.clone();
        let old = old_pods.clone();
        async move {
            let now = ready_pods(&pods, selector).await;
            println!("ready pods: {now:?} (old: {old:?})");
            (!now.is_empty() && now.iter().all(|p| !old.contains(p))).then_some(())
        }
    })
    .await;
    wait_for("Ready=True after the rotation", || {
        let lcs = lcs.clone();
        async move {
            let ready = lcs.get("e2e").await.ok()?.status?.condition("Ready")?.clone();
            (ready.status == "True").then_some(())
        }
    })
    .await;

    // A name the connector's Service could not carry is refused by the CRD's rule, at create time.
    for bad in ["acme.eu", "3m"] {
        let mut renamed = cr.clone();
        renamed.metadata.name = Some(bad.into());
        renamed.metadata.resource_version = None;
        match lcs.create(&PostParams::default(), &renamed).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{bad}: {s:?}");
                assert!(s.message.contains("DNS-1035"), "{bad}: {}", s.message);
            }
            other => panic!("{bad} was not refused: {other:?}"),
        }
    }

    // Removing spec.replicas keeps the live count: the operator hands the field over.
    let replicas = |d: &Deployment| d.spec.replicas;
    lcs.patch(
        "e2e",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .expect("set replicas 2");
    wait_for("Deployment replicas 2", || {
        let deployments = deployments.clone();
        async move { (replicas(&deployments.get("e2e").await.ok()?) == Some(2)).then_some(()) }
    })
    .await;
    lcs.patch(
        "e2e",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": null}})),
    )
    .await
    .expect("remove replicas");
    wait_for("the operator to observe the removal", || {
        let lcs = lcs.clone();
        async move {
            let lc = lcs.get("e2e").await.ok()?;
            (lc.status?.observed_generation == lc.metadata.generation).then_some(())
        }
    })
    .await;
    let d = deployments.get("e2e").await.unwrap();
    assert_eq!(replicas(&d), Some(2), "not reset to 1 by the API server");
    assert!(
        d.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some(REPLICAS_HANDOVER_MANAGER)),
        "spec.replicas handed over: {:?}",
        d.metadata.managed_fields
    );

    // An HPA on the connector's scale subresource: below minReplicas it scales up without metrics.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "e2e", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreConnector", "name": "e2e"},
            "minReplicas": 3, "maxReplicas": 3,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
        }
    }))
    .unwrap();
    lcs.patch(
        "e2e",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .expect("give the HPA a count to raise");
    hpas.create(&PostParams::default(), &hpa)
        .await
        .expect("create HPA");
    wait_for("the HPA's count on the connector and its Deployment", || {
        let (lcs, deployments) = (lcs.clone(), deployments.clone());
        async move {
            let lc = lcs.get("e2e").await.ok()?;
            let d = deployments.get("e2e").await.ok()?;
            println!(
                "connector spec.replicas {:?}, Deployment {:?}",
                lc.spec.replicas,
                replicas(&d)
            );
            (lc.spec.replicas == Some(3) && replicas(&d) == Some(3)).then_some(())
        }
    })
    .await;
    let _ = hpas.delete("e2e", &DeleteParams::default()).await;
}
