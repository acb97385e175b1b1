//! The in-memory API server's watches and misbehaviour, proven with kube-runtime's own `watcher`,
//! `metadata_watcher` and `reflector` (a client nobody here wrote), in-process and over loopback HTTP:
//! resourceVersion semantics, bookmarks, 410 after a compaction (the watcher re-lists), stalled and
//! cut streams, partitions, CRDs not installed, immutable fields, the write record.
//!
//! Only `common/fake_api.rs` is included (not the whole `common` module), so this file depends on
//! nothing but the fake.

#[path = "common/fake_api.rs"]
mod fake_api;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_api::{FakeApi, Write};
use futures::{Stream, StreamExt};
use http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use lumenore_operator::crd::LumenoreConnector;
use serde_json::{Value, json};

const NS: &str = "tenants";
const MANAGED: &str = "app.kubernetes.io/managed-by=lumenore-operator";

/// Every test is bounded: a fake that stops answering fails the test instead of hanging CI.
async fn bounded(f: impl Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the test did not finish within 60 s");
}

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": {"v": v},
    }))
    .unwrap()
}

fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "data": {"k": "dg=="},
    }))
    .unwrap()
}

fn deployment(name: &str, selector: &str, managed: bool) -> Deployment {
    let mut labels = json!({"app": selector});
    if managed {
        labels["app.kubernetes.io/managed-by"] = json!("lumenore-operator");
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": selector}},
            "template": {
                "metadata": {"labels": {"app": selector}},
                "spec": {"containers": [{"name": "c", "image": "registry.example.com/c:1"}]},
            },
        },
    }))
    .unwrap()
}

fn connector(name: &str) -> LumenoreConnector {
    serde_json::from_value(json!({
        "apiVersion": "lumenore.io/v1alpha1", "kind": "LumenoreConnector",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "tenant": "acme",
            "region": {"cloud": "aws", "name": "eu-west-1"},
            "serverUrl": "https://acme.lumenore.com",
            "credentials": {"secretName": "acme-creds", "clientIdKey": "id", "clientSecretKey": "secret"},
        },
    }))
    .unwrap()
}

/// What a watcher yielded, in order, as short strings (`Init`, `InitApply(x)`, `Apply(x)`,
/// `Delete(x)`, `InitDone`, `WatchError(410: ...)`, ...).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn since(&self, from: usize) -> Vec<String> {
        self.0.lock().unwrap()[from..].to_vec()
    }

    /// Wait (10 s at most) until what was seen since `from` satisfies `pred`.
    async fn wait(&self, from: usize, what: &str, pred: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if pred(&self.since(from)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; seen since #{from}: {:?}",
                self.since(from)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for(&self, from: usize, item: &str) {
        self.wait(from, item, |s| s.iter().any(|e| e == item)).await
    }
}

fn summary<K: Resource>(r: &Result<watcher::Event<K>, watcher::Error>) -> String {
    let name = |o: &K| o.meta().name.clone().unwrap_or_default();
    match r {
        Ok(watcher::Event::Init) => "Init".into(),
        Ok(watcher::Event::InitApply(o)) => format!("InitApply({})", name(o)),
        Ok(watcher::Event::InitDone) => "InitDone".into(),
        Ok(watcher::Event::Apply(o)) => format!("Apply({})", name(o)),
        Ok(watcher::Event::Delete(o)) => format!("Delete({})", name(o)),
        Err(watcher::Error::WatchError(s)) => format!("WatchError({}: {})", s.code, s.message),
        Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) => {
            format!("InitialListFailed({})", s.code)
        }
        Err(watcher::Error::WatchStartFailed(kube::Error::Api(s))) => format!("WatchStartFailed({})", s.code),
        Err(e) => format!("Err({e})"),
    }
}

/// Drive a watcher stream in the background, recording what it yields.
fn drive<K: Resource + Send + 'static>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> Seen {
    let seen = Seen::default();
    let out = seen.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            out.0.lock().unwrap().push(summary(&item));
        }
        out.0.lock().unwrap().push("END".into());
    });
    seen
}

/// A reflector over `ConfigMap`s in `NS`, driven in the background.
fn reflect_configmaps(client: kube::Client, cfg: watcher::Config) -> (Store<ConfigMap>, Seen) {
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = watcher(Api::<ConfigMap>::namespaced(client, NS), cfg).reflect(writer);
    (reader, drive(stream))
}

fn names_in(store: &Store<ConfigMap>) -> Vec<String> {
    let mut v: Vec<String> = store.state().iter().map(|o| o.name_any()).collect();
    v.sort();
    v
}

async fn store_converges(store: &Store<ConfigMap>, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while names_in(store) != want {
        assert!(
            Instant::now() < deadline,
            "the store holds {:?}, not {want:?}",
            names_in(store)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn value_of(store: &Store<ConfigMap>, name: &str) -> Option<String> {
    store
        .get(&ObjectRef::new(name).within(NS))
        .and_then(|o| o.data.as_ref().and_then(|d| d.get("v").cloned()))
}

/// A kube client over loopback HTTP to `api`, as the operator's (a kubeconfig with a bearer token).
async fn http_client(port: u16, token: &str) -> kube::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user: {{token: {token}}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: {NS}\ncurrent-context: c\n"
    );
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

async fn serve(api: &FakeApi) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(api.clone().serve(listener));
    port
}

/// Creates, updates and deletes (by the client itself and by another one) reach the reflector; other
/// namespaces do not.
async fn reflector_follows_writes(api: &FakeApi, client: kube::Client) {
    api.put(&cm("one", "1"));
    api.put(
        &serde_json::from_value::<ConfigMap>(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "elsewhere", "namespace": "other"},
        }))
        .unwrap(),
    );
    let (store, seen) = reflect_configmaps(client.clone(), watcher::Config::default());
    seen.wait_for(0, "InitDone").await;
    assert_eq!(seen.all()[..3], ["Init", "InitApply(one)", "InitDone"]);
    store_converges(&store, &["one"]).await;

    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    cms.create(&PostParams::default(), &cm("two", "2")).await.unwrap();
    seen.wait_for(0, "Apply(two)").await;
    store_converges(&store, &["one", "two"]).await;

    api.edit::<ConfigMap>(NS, "one", |o| o["data"]["v"] = json!("1b"));
    seen.wait(0, "one updated", |_| {
        value_of(&store, "one").as_deref() == Some("1b")
    })
    .await;

    cms.delete("two", &DeleteParams::default()).await.unwrap();
    seen.wait_for(0, "Delete(two)").await;
    store_converges(&store, &["one"]).await;
    api.remove::<ConfigMap>(NS, "one");
    seen.wait_for(0, "Delete(one)").await;
    store_converges(&store, &[]).await;
    assert!(
        !seen.all().iter().any(|e| e.contains("elsewhere")),
        "{:?}",
        seen.all()
    );
}

#[tokio::test]
async fn the_watcher_and_reflector_follow_creates_updates_and_deletes_in_process() {
    bounded(async {
        let api = FakeApi::new();
        reflector_follows_writes(&api, api.client_named("op-a")).await;
        let writes = api.writes();
        let w: Vec<(String, Option<String>, u16)> = writes
            .iter()
            .map(|w| (w.method.to_string(), w.identity.clone(), w.status))
            .collect();
        assert_eq!(
            w,
            [
                ("POST".to_string(), Some("op-a".to_string()), 201),
                ("DELETE".to_string(), Some("op-a".to_string()), 200)
            ]
        );
    })
    .await
}

#[tokio::test]
async fn the_watcher_and_reflector_follow_creates_updates_and_deletes_over_http() {
    bounded(async {
        let api = FakeApi::new();
        let port = serve(&api).await;
        reflector_follows_writes(&api, http_client(port, "op-a").await).await;

        // The write record names the client by its bearer token.
        let writes = api.writes();
        let post = writes.iter().find(|w| w.method == Method::POST).unwrap();
        assert_eq!(post.identity.as_deref(), Some("op-a"));
        assert_eq!(
            (
                post.plural.as_str(),
                post.namespace.as_deref(),
                post.name.as_str()
            ),
            ("configmaps", Some(NS), "two")
        );
        assert_eq!(post.object.as_ref().unwrap()["data"]["v"], "2");
        let delete = writes.iter().find(|w| w.method == Method::DELETE).unwrap();
        assert_eq!((delete.status, delete.object.is_none()), (200, true));
        assert!(delete.seq > post.seq);

        // A partition by token: the client's requests hang, until healed.
        let b = http_client(port, "op-b").await;
        let b_cms: Api<ConfigMap> = Api::namespaced(b, NS);
        api.partition("op-b");
        let hung = tokio::time::timeout(Duration::from_millis(500), b_cms.list(&ListParams::default())).await;
        assert!(hung.is_err(), "a partitioned client got an answer: {hung:?}");
        let a_cms: Api<ConfigMap> = Api::namespaced(http_client(port, "op-a").await, NS);
        a_cms
            .list(&ListParams::default())
            .await
            .expect("other clients are served");
        api.heal("op-b");
        b_cms
            .list(&ListParams::default())
            .await
            .expect("served again once healed");
    })
    .await
}

/// A watch whose resourceVersion was compacted away gets 410 "too old resource version": kube's
/// watcher re-lists and its store converges, also dropping an object deleted while its stream was
/// down.
#[tokio::test]
async fn after_a_compaction_the_watcher_relists_and_the_store_converges() {
    bounded(async {
        let api = FakeApi::new();
        api.put(&cm("keep", "1"));
        api.put(&cm("gone", "1"));
        let (store, seen) = reflect_configmaps(api.client(), watcher::Config::default());
        seen.wait_for(0, "InitDone").await;
        store_converges(&store, &["gone", "keep"]).await;

        // The stream goes silent; meanwhile "gone" is deleted and "new" created, the history is
        // compacted, and the stream is cut.
        api.stall_watches(None);
        let mark = seen.len();
        api.remove::<ConfigMap>(NS, "gone");
        api.put(&cm("new", "1"));
        api.compact();
        let compacted_at = api.resource_version();
        api.cut_watches();

        seen.wait_for(mark, "InitDone").await;
        let after = seen.since(mark);
        let expired = after
            .iter()
            .position(|e| e.starts_with("WatchError(410: too old resource version: "))
            .unwrap_or_else(|| panic!("no 410: {after:?}"));
        assert!(
            after[expired].ends_with(&format!("({compacted_at}))")),
            "{after:?}"
        );
        assert_eq!(
            after[expired + 1..],
            ["Init", "InitApply(keep)", "InitApply(new)", "InitDone"],
            "{after:?}"
        );
        assert!(!after.contains(&"Delete(gone)".to_string()), "{after:?}");
        store_converges(&store, &["keep", "new"]).await;

        // Live again after the re-list.
        api.put(&cm("later", "1"));
        seen.wait_for(mark, "Apply(later)").await;
    })
    .await
}

/// Bookmarks carry the current resourceVersion (writes to other collections included), and the
/// watcher resumes from it: after a compaction and a cut it watches on without re-listing, while a
/// watcher without bookmarks has to re-list.
#[tokio::test]
async fn bookmarks_advance_the_watchers_resume_point() {
    bounded(async {
        let api = FakeApi::new();
        api.set_bookmark_interval(Duration::from_millis(100));
        api.put(&cm("one", "1"));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let svc = {
            let requests = requests.clone();
            tower::ServiceBuilder::new()
                .map_request(move |req: http::Request<kube::client::Body>| {
                    requests.lock().unwrap().push(req.uri().to_string());
                    req
                })
                .service(api.service())
        };
        let client = kube::Client::new(svc, NS);
        let (_store, with) = reflect_configmaps(client.clone(), watcher::Config::default());
        let (_store2, without) =
            reflect_configmaps(client.clone(), watcher::Config::default().disable_bookmarks());
        with.wait_for(0, "InitDone").await;
        without.wait_for(0, "InitDone").await;
        let listed_at = api.resource_version();

        // Writes elsewhere move the resourceVersion on; ConfigMap watches only see bookmarks.
        for i in 0..5 {
            api.put(&secret(&format!("s{i}")));
        }
        let current = api.resource_version();
        assert!(current > listed_at);

        // A raw watch sees a BOOKMARK at the current resourceVersion.
        let raw: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
        let mut events = raw
            .watch(&WatchParams::default(), &listed_at.to_string())
            .await
            .unwrap()
            .boxed();
        match events.next().await {
            Some(Ok(WatchEvent::Bookmark(b))) => {
                assert_eq!(b.metadata.resource_version, current.to_string());
                assert_eq!(b.types.kind, "ConfigMap");
            }
            other => panic!("expected a bookmark, got {other:?}"),
        }
        // Let the watchers get theirs too (bookmarks every 100 ms).
        tokio::time::sleep(Duration::from_millis(1000)).await;

        let (mark_with, mark_without) = (with.len(), without.len());
        api.compact();
        api.cut_watches();
        without.wait_for(mark_without, "InitDone").await;
        assert!(
            without.since(mark_without)[0].starts_with("WatchError(410: too old resource version"),
            "{:?}",
            without.since(mark_without)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            with.since(mark_with),
            Vec::<String>::new(),
            "re-listed although bookmarked"
        );
        let resumed = format!("resourceVersion={current}");
        let reqs = requests.lock().unwrap().clone();
        assert!(
            reqs.iter()
                .any(|r| r.contains("watch=true") && r.contains(&resumed)),
            "no watch resumed from {current}: {reqs:?}"
        );

        api.put(&cm("two", "2"));
        with.wait_for(mark_with, "Apply(two)").await;
    })
    .await
}

/// A stalled stream stays open and silent; a watch opened afterwards (same client) and other
/// clients' watches see the change; a cut ends the stalled stream.
#[tokio::test]
async fn a_stalled_watch_is_silent_not_closed() {
    bounded(async {
        let api = FakeApi::new();
        api.put(&secret("unrelated"));
        let from = api.resource_version().to_string();
        let a: Api<ConfigMap> = Api::namespaced(api.client_named("a"), NS);
        let b: Api<ConfigMap> = Api::namespaced(api.client_named("b"), NS);
        let wp = WatchParams::default().disable_bookmarks();
        let mut stalled = a.watch(&wp, &from).await.unwrap().boxed();
        let mut other = b.watch(&wp, &from).await.unwrap().boxed();

        api.put(&cm("before", "1"));
        let added = |e: Option<kube::Result<WatchEvent<ConfigMap>>>| match e {
            Some(Ok(WatchEvent::Added(o))) => o.name_any(),
            e => panic!("expected ADDED, got {e:?}"),
        };
        assert_eq!(added(stalled.next().await), "before");
        assert_eq!(added(other.next().await), "before");

        api.stall_watches(Some("a"));
        api.put(&cm("after", "1"));
        assert_eq!(added(other.next().await), "after");
        let mut fresh = a.watch(&wp, &from).await.unwrap().boxed();
        assert_eq!(added(fresh.next().await), "before");
        assert_eq!(added(fresh.next().await), "after");
        let silent = tokio::time::timeout(Duration::from_millis(1500), stalled.next()).await;
        assert!(
            silent.is_err(),
            "the stalled stream delivered or ended: {silent:?}"
        );

        api.cut_watches();
        let ended = tokio::time::timeout(Duration::from_secs(5), stalled.next()).await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");
        assert!(fresh.next().await.is_none(), "cut_watches ends every stream");
    })
    .await
}

/// A partition holds a client's open watch streams (and its requests) until healed; then what
/// happened meanwhile arrives in order.
#[tokio::test]
async fn a_partition_holds_watches_until_healed() {
    bounded(async {
        let api = FakeApi::new();
        let p: Api<ConfigMap> = Api::namespaced(api.client_named("p"), NS);
        let from = api.resource_version().to_string();
        let mut held = p
            .watch(&WatchParams::default().disable_bookmarks(), &from)
            .await
            .unwrap()
            .boxed();
        api.partition("p");
        api.put(&cm("x", "1"));
        api.put(&cm("y", "1"));
        assert!(
            tokio::time::timeout(Duration::from_millis(500), held.next())
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), p.list(&ListParams::default()))
                .await
                .is_err()
        );
        api.heal("p");
        for want in ["x", "y"] {
            match held.next().await {
                Some(Ok(WatchEvent::Added(o))) => assert_eq!(o.name_any(), want),
                e => panic!("{e:?}"),
            }
        }
        assert_eq!(p.list(&ListParams::default()).await.unwrap().items.len(), 2);
    })
    .await
}

/// Label selectors filter watches (an object relabelled out of the selector is a DELETE for the
/// watcher), and metadata watches get `PartialObjectMetadata`.
#[tokio::test]
async fn label_selected_metadata_watches_see_only_their_objects() {
    bounded(async {
        let api = FakeApi::new();
        api.put(&deployment("managed", "m", true));
        api.put(&deployment("foreign", "f", false));
        let deployments: Api<Deployment> = Api::namespaced(api.client(), NS);
        let kinds: Arc<Mutex<Vec<String>>> = Arc::default();
        let k = kinds.clone();
        // As the operator watches Deployments: `Api<PartialObjectMeta<_>>` sends metadata-only requests.
        let meta: Api<PartialObjectMeta<Deployment>> = Api::namespaced(api.client(), NS);
        let stream = watcher(meta, watcher::Config::default().labels(MANAGED)).map(move |ev| {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = &ev {
                let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
                k.lock().unwrap().push(kind);
            }
            ev
        });
        let seen = drive(stream);
        seen.wait_for(0, "InitDone").await;
        assert_eq!(seen.all(), ["Init", "InitApply(managed)", "InitDone"]);

        // Into the selector: ADDED; out of it: DELETED; never selected: nothing.
        api.edit::<Deployment>(NS, "foreign", |d| {
            d["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("lumenore-operator")
        });
        seen.wait_for(0, "Apply(foreign)").await;
        api.edit::<Deployment>(NS, "managed", |d| {
            d["metadata"]["labels"]
                .as_object_mut()
                .unwrap()
                .remove("app.kubernetes.io/managed-by");
        });
        seen.wait_for(0, "Delete(managed)").await;
        api.put(&deployment("unrelated", "u", false));
        api.remove::<Deployment>(NS, "unrelated");
        api.put(&deployment("last", "l", true));
        seen.wait_for(0, "Apply(last)").await;
        assert!(
            !seen.all().iter().any(|e| e.contains("unrelated")),
            "{:?}",
            seen.all()
        );
        assert!(
            kinds.lock().unwrap().iter().all(|k| k == "PartialObjectMetadata"),
            "{:?}",
            kinds.lock().unwrap()
        );

        // A LIST with the same selector agrees.
        let listed = deployments
            .list(&ListParams::default().labels(MANAGED))
            .await
            .unwrap();
        let mut names: Vec<String> = listed.items.iter().map(|d| d.name_any()).collect();
        names.sort();
        assert_eq!(names, ["foreign", "last"]);
    })
    .await
}

/// Streaming lists (`sendInitialEvents=true`): initial ADDED events, the `initial-events-end`
/// bookmark, then live events.
#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_bookmark() {
    bounded(async {
        let api = FakeApi::new();
        api.put(&cm("one", "1"));
        let (store, seen) = reflect_configmaps(api.client(), watcher::Config::default().streaming_lists());
        seen.wait_for(0, "InitDone").await;
        assert_eq!(seen.all(), ["Init", "InitApply(one)", "InitDone"]);
        api.put(&cm("two", "2"));
        seen.wait_for(0, "Apply(two)").await;
        store_converges(&store, &["one", "two"]).await;
    })
    .await
}

/// A CRD not installed: every path of the kind answers the API server's 404 (LIST, watch, GET,
/// writes), open watches of it end; once installed it is served and kube's watcher recovers.
#[tokio::test]
async fn an_uninstalled_kind_is_not_found_until_installed() {
    bounded(async {
        let api = FakeApi::new();
        api.uninstall::<LumenoreConnector>();
        let lcs: Api<LumenoreConnector> = Api::namespaced(api.client(), NS);
        let not_found = |r: kube::Error| match r {
            kube::Error::Api(s) => (s.code, s.message),
            e => panic!("{e}"),
        };
        let list = lcs.list(&ListParams::default()).await.unwrap_err();
        assert_eq!(not_found(list), (404, "404 page not found".to_string()));
        let watch = lcs.watch(&WatchParams::default(), "0").await.err().unwrap();
        assert_eq!(not_found(watch).0, 404);
        let (code, body) = api
            .handle(
                &Method::GET,
                &format!("/apis/lumenore.io/v1alpha1/namespaces/{NS}/lumenoreconnectors/acme"),
                None,
                "",
                &[],
            )
            .unwrap();
        assert_eq!((code, body.as_slice()), (404, b"404 page not found\n".as_slice()));
        let create = lcs
            .create(&PostParams::default(), &connector("early"))
            .await
            .unwrap_err();
        assert_eq!(not_found(create).0, 404);

        let (reader, writer) = reflector::store::<LumenoreConnector>();
        let seen = drive(
            watcher(lcs.clone(), watcher::Config::default())
                .default_backoff()
                .reflect(writer),
        );
        seen.wait_for(0, "InitialListFailed(404)").await;

        api.install::<LumenoreConnector>();
        api.put(&connector("acme"));
        seen.wait_for(0, "InitDone").await;
        seen.wait(0, "acme in the store", |_| reader.state().len() == 1)
            .await;

        // Uninstalled again: the open watch ends, and watching again is a 404.
        let mark = seen.len();
        api.uninstall::<LumenoreConnector>();
        seen.wait(mark, "a 404 after the watch ended", |s| {
            s.iter().any(|e| e.ends_with("(404)"))
        })
        .await;
        let writes: Vec<u16> = api.writes().iter().map(|w| w.status).collect();
        assert_eq!(writes, [404]);
    })
    .await
}

/// Immutable fields: a Deployment's selector, a Service's cluster IP, refused with the API server's
/// 422 wording and causes.
#[tokio::test]
async fn immutable_fields_are_refused_with_the_api_servers_422() {
    bounded(async {
        let api = FakeApi::new();
        let deployments: Api<Deployment> = Api::namespaced(api.client_named("op-a"), NS);
        deployments
            .create(&PostParams::default(), &deployment("web", "web", true))
            .await
            .unwrap();
        let pp = PatchParams::apply("lumenore-operator").force();
        // Same selector: accepted.
        let mut same = deployment("web", "web", true);
        same.spec.replicas = Some(3);
        deployments.patch("web", &pp, &Patch::Apply(&same)).await.unwrap();

        let err = deployments
            .patch("web", &pp, &Patch::Apply(&deployment("web", "other", true)))
            .await
            .unwrap_err();
        let kube::Error::Api(s) = err else { panic!("{err}") };
        assert_eq!(s.code, 422);
        assert_eq!(s.reason, "Invalid");
        assert_eq!(
            s.message,
            r#"Deployment.apps "web" is invalid: spec.selector: Invalid value: {"matchLabels":{"app":"other"}}: field is immutable"#
        );
        let details = s.details.as_ref().unwrap();
        assert_eq!((details.kind.as_str(), details.group.as_str()), ("Deployment", "apps"));
        assert_eq!(details.causes.len(), 1);
        assert_eq!(
            (details.causes[0].reason.as_str(), details.causes[0].field.as_str()),
            ("FieldValueInvalid", "spec.selector")
        );
        let stored = api.get::<Deployment>(NS, "web").unwrap();
        assert_eq!(
            stored.spec.selector.match_labels.unwrap()["app"],
            "web",
            "the refused write changed nothing"
        );

        // A Service keeps its cluster IP when an update leaves it out, and refuses another one.
        let svc = |ip: Option<&str>| -> Service {
            let mut v = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": NS},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]},
            });
            if let Some(ip) = ip {
                v["spec"]["clusterIP"] = json!(ip);
            }
            serde_json::from_value(v).unwrap()
        };
        api.put(&svc(Some("10.96.0.10")));
        let services: Api<Service> = Api::namespaced(api.client_named("op-a"), NS);
        let kept = services.patch("web", &pp, &Patch::Apply(&svc(None))).await.unwrap();
        assert_eq!(kept.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.10"));
        let err = services
            .patch("web", &pp, &Patch::Apply(&svc(Some("10.96.0.11"))))
            .await
            .unwrap_err();
        let kube::Error::Api(s) = err else { panic!("{err}") };
        assert_eq!(
            (s.code, s.message.as_str()),
            (
                422,
                r#"Service "web" is invalid: spec.clusterIPs[0]: Invalid value: ["10.96.0.11"]: may not change once set"#
            )
        );

        let refused: Vec<(String, u16, bool)> = api
            .writes()
            .iter()
            .filter(|w| w.status == 422)
            .map(|w| (w.plural.clone(), w.status, w.object.is_none()))
            .collect();
        assert_eq!(
            refused,
            [("deployments".to_string(), 422, true), ("services".to_string(), 422, true)]
        );
    })
    .await
}

/// The write hook runs after each write is stored, may read the fake, and sees refusals too; slow
/// requests are slow.
#[tokio::test]
async fn write_hooks_and_slow_requests() {
    bounded(async {
        let api = FakeApi::new();
        type Hooked = Vec<(u64, String, u16, bool)>;
        let hooked: Arc<Mutex<Hooked>> = Arc::default();
        {
            let hooked = hooked.clone();
            api.on_write(Arc::new(move |w: &Write, api: &FakeApi| {
                // Called without the fake's lock: reading it here does not deadlock.
                let stored = api.get_raw::<ConfigMap>(NS, &w.name).is_some();
                hooked
                    .lock()
                    .unwrap()
                    .push((w.seq, w.method.to_string(), w.status, stored));
            }));
        }
        let cms: Api<ConfigMap> = Api::namespaced(api.client(), NS);
        cms.create(&PostParams::default(), &cm("a", "1")).await.unwrap();
        api.fail_next(Method::PATCH, "/configmaps/a", 409, 1);
        let pp = PatchParams::apply("m");
        assert!(cms.patch("a", &pp, &Patch::Apply(&cm("a", "2"))).await.is_err());
        cms.delete("a", &DeleteParams::default()).await.unwrap();
        assert_eq!(
            *hooked.lock().unwrap(),
            [
                (1, "POST".to_string(), 201, true),
                (2, "PATCH".to_string(), 409, true),
                (3, "DELETE".to_string(), 200, false)
            ]
        );
        assert_eq!(api.writes().len(), 3);

        api.delay_requests("/configmaps", Duration::from_millis(300), 1);
        let t = Instant::now();
        cms.list(&ListParams::default()).await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
        let t = Instant::now();
        cms.list(&ListParams::default()).await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(300), "{:?}", t.elapsed());
    })
    .await
}

/// The watch stream's wire format, and the resourceVersion rules, as the API server answers them.
#[tokio::test]
async fn raw_watch_streams_follow_resource_version_rules() {
    bounded(async {
        let api = FakeApi::new();
        let cms: Api<ConfigMap> = Api::namespaced(api.client(), NS);
        api.put(&cm("a", "1"));
        let after_a = api.resource_version();
        api.put(&cm("b", "1"));
        api.remove::<ConfigMap>(NS, "a");
        let wp = WatchParams::default().disable_bookmarks().timeout(1);

        // From a resourceVersion: the history after it, then the stream ends at timeoutSeconds.
        let events: Vec<String> = cms
            .watch(&wp, &after_a.to_string())
            .await
            .unwrap()
            .map(|e| match e.unwrap() {
                WatchEvent::Added(o) => format!("ADDED {}", o.name_any()),
                WatchEvent::Modified(o) => format!("MODIFIED {}", o.name_any()),
                WatchEvent::Deleted(o) => format!("DELETED {} {}", o.name_any(), o.resource_version().unwrap()),
                e => format!("{e:?}"),
            })
            .collect()
            .await;
        let deleted_at = api.resource_version();
        assert_eq!(events, ["ADDED b".to_string(), format!("DELETED a {deleted_at}")]);

        // "0": the current objects as ADDED, then live.
        let mut any = cms.watch(&wp, "0").await.unwrap().boxed();
        assert!(matches!(any.next().await, Some(Ok(WatchEvent::Added(o))) if o.name_any() == "b"));

        // A field selector.
        let mut one = cms
            .watch(&wp.clone().fields("metadata.name=c"), &deleted_at.to_string())
            .await
            .unwrap()
            .boxed();
        api.put(&cm("d", "1"));
        api.put(&cm("c", "1"));
        assert!(matches!(one.next().await, Some(Ok(WatchEvent::Added(o))) if o.name_any() == "c"));

        // Too old after a compaction: one ERROR event, then the end.
        api.compact();
        let mut old = cms.watch(&wp, &after_a.to_string()).await.unwrap().boxed();
        match old.next().await {
            Some(Ok(WatchEvent::Error(s))) => {
                assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
                assert_eq!(
                    s.message,
                    format!("too old resource version: {after_a} ({})", api.resource_version())
                );
            }
            e => panic!("{e:?}"),
        }
        assert!(old.next().await.is_none());

        // The raw lines over HTTP: newline-delimited watch events.
        let port = serve(&api).await;
        let url = format!(
            "http://127.0.0.1:{port}/api/v1/namespaces/{NS}/configmaps?watch=true&resourceVersion={}&timeoutSeconds=1",
            api.resource_version()
        );
        api.put(&cm("e", "1"));
        let body = tokio::task::spawn_blocking(move || raw_get(&url)).await.unwrap();
        let lines: Vec<Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 1, "{body}");
        assert_eq!(lines[0]["type"], "ADDED");
        assert_eq!(lines[0]["object"]["metadata"]["name"], "e");
    })
    .await
}

/// GET `url` over plain HTTP/1.1 without keep-alive; the de-chunked body.
fn raw_get(url: &str) -> String {
    use std::io::{Read, Write as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, mut chunked) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = String::new();
    while let Some((size, rest)) = chunked.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        body.push_str(&rest[..n]);
        chunked = &rest[n + 2..];
    }
    body
}
