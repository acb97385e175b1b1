//! An in-memory Kubernetes API server, as a tower `Service` plugged into `kube::Client::new`.
//!
//! It stores objects as JSON and answers what the operator sends: GET (one object, or a list, paged
//! with `limit`/`continue`, see [`paging`]), POST (create), PUT (replace, with resourceVersion
//! conflicts), PATCH (server-side apply, merge patch; on the main resource or the `status`
//! subresource) and DELETE. Faults can be injected per request
//! (a status code and message, or a hang that never answers) and every request is logged.
//!
//! Server-side apply follows the API server's rules (structured-merge-diff, see [`ssa`]): every
//! object carries `metadata.managedFields` in the real `FieldsV1` format, one entry per field manager
//! and operation; an apply sets the manager's field set to what it sent, removes the fields it no
//! longer sends unless another manager owns them, keeps other managers' fields, and answers 409 when
//! it would change a field another manager owns (unless forced, which moves the field). Lists merge
//! by their `x-kubernetes-list-map-keys` (containers and env by name, container ports by
//! containerPort+protocol, Service ports by port+protocol, volumes by name, conditions by type ...);
//! other lists and `LabelSelector`s are atomic. Updates (POST, PUT, merge patch, the test helpers)
//! take ownership of the fields they change, as the API server does.
//!
//! Object names and label keys/values are validated as the API server validates the kinds the
//! operator writes: a Service name is a DNS-1035 label, other names DNS-1123 subdomains, label
//! values at most 63 characters of `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`. A Deployment
//! without `spec.replicas` is defaulted to 1, as the API server does.
//!
//! Shared by the reconcile scenarios and the benchmark (`#[path]`-included), so it stays dependency
//! light: kube, http, http-body-util, serde_json, tower, axum, hex.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// (collection path without namespace, e.g. "/apis/apps/v1|deployments") → (namespace, name) → object.
type Store = HashMap<String, BTreeMap<(String, String), Value>>;

/// Field manager of the test helpers' writes (`put`, `edit`).
pub const TEST_MANAGER: &str = "test-client";

#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Method,
    pub path_contains: String,
    /// Status code to answer; `None`: hang (never answer).
    pub status: Option<u16>,
    pub message: String,
    pub remaining: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub field_manager: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    objects: Store,
    rv: u64,
    uid: u64,
    faults: Vec<Fault>,
    log: Vec<Logged>,
    record: bool,
    /// (collection key, ns, name, manager) → last applied body.
    applied: HashMap<(String, String, String, String), Value>,
    keep_applied: bool,
    /// Continue tokens issued before this resourceVersion are expired (410), as after an etcd
    /// compaction.
    compacted_rv: u64,
    /// Clients (by name) whose requests never get an answer (a network partition, a half-open
    /// connection).
    partitioned: std::collections::HashSet<String>,
}

/// The fake API server. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    api_version: String,
    plural: String,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (base_len, api_version) = match *segs.first()? {
        "api" => (2, segs.get(1)?.to_string()),
        "apis" => (3, format!("{}/{}", segs.get(1)?, segs.get(2)?)),
        _ => return None,
    };
    let base = segs[..base_len].join("/");
    let rest = &segs[base_len..];
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let plural = rest.first()?.to_string();
    Some(Target {
        collection: format!("/{base}|{plural}"),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
        api_version,
        plural,
    })
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn reason_for(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

/// Deep merge `patch` into `target` (JSON merge patch): objects merge key by key (null deletes),
/// everything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn without_meta_and_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// Defaults the API server fills in for the kinds the operator writes (only those the operator's
/// behaviour depends on).
fn apply_defaults(plural: &str, v: &mut Value) {
    if plural == "deployments"
        && v.get("spec").is_some()
        && v["spec"].get("replicas").is_none_or(Value::is_null)
    {
        v["spec"]["replicas"] = json!(1);
    }
}

impl FakeApi {
    pub fn new() -> Self {
        let api = FakeApi::default();
        {
            let mut s = api.state.lock().unwrap();
            s.record = true;
            s.keep_applied = true;
        }
        api
    }

    /// A fake for large runs: no request log, no applied-body history.
    pub fn quiet() -> Self {
        FakeApi::default()
    }

    /// Answer one HTTP request; `None` when an injected hang says never to answer.
    pub async fn respond(&self, req: Request<kube::client::Body>) -> Option<Response<Vec<u8>>> {
        let (parts, body) = req.into_parts();
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Default::default(),
        };
        let ct = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (code, body) = self.handle(&parts.method, parts.uri.path(), parts.uri.query(), &ct, &bytes)?;
        Some(
            Response::builder()
                .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)
                .expect("valid response"),
        )
    }

    /// The fake as a tower service (a hang is a response future that never completes).
    pub fn service(
        &self,
    ) -> tower::util::BoxCloneService<Request<kube::client::Body>, Response<kube::client::Body>, Infallible>
    {
        self.service_named("")
    }

    /// The fake as seen by the client called `name` (see [`partition`](Self::partition)).
    pub fn service_named(
        &self,
        name: &str,
    ) -> tower::util::BoxCloneService<Request<kube::client::Body>, Response<kube::client::Body>, Infallible>
    {
        let api = self.clone();
        let name = name.to_string();
        tower::util::BoxCloneService::new(tower::service_fn(move |req: Request<kube::client::Body>| {
            let api = api.clone();
            let cut_off = api.state.lock().unwrap().partitioned.contains(&name);
            async move {
                if cut_off {
                    return std::future::pending().await;
                }
                match api.respond(req).await {
                    Some(resp) => Ok::<_, Infallible>(resp.map(kube::client::Body::from)),
                    None => std::future::pending().await,
                }
            }
        }))
    }

    /// A kube client called `name`, without timeouts of its own.
    pub fn client_named(&self, name: &str) -> kube::Client {
        kube::Client::new(self.service_named(name), "default")
    }

    /// From now on, requests of the client called `name` never get an answer.
    pub fn partition(&self, name: &str) {
        self.state.lock().unwrap().partitioned.insert(name.to_string());
    }

    /// Serve the fake over loopback HTTP (for the operator binary and the benchmark); a hang keeps
    /// the connection open without an answer.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        axum::serve(listener, self.router())
            .await
            .expect("serve the fake API");
    }

    /// The fake as an HTTP application: every path is answered by [`handle`](Self::handle). Routes
    /// added to it are answered first (the benchmark's Deployment controller).
    pub fn router(self) -> axum::Router {
        axum::Router::new().fallback(move |req: axum::extract::Request| {
            let api = self.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                let ct = parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                match api.handle(&parts.method, parts.uri.path(), parts.uri.query(), &ct, &bytes) {
                    Some((code, out)) => http::Response::builder()
                        .status(code)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(axum::body::Body::from(out))
                        .expect("valid response"),
                    None => std::future::pending().await,
                }
            }
        })
    }

    /// A kube client talking to this fake (no timeouts of its own).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.service(), "default")
    }

    /// Answer one request: (status code, JSON body), or `None` for an injected hang.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Option<(u16, Vec<u8>)> {
        let mut s = self.state.lock().unwrap();
        let manager = query_param(query, "fieldManager").map(str::to_string);
        let fault = s.take_fault(method, path);
        let (code, value) = match fault {
            Some(Fault { status: None, .. }) => {
                if s.record {
                    s.log.push(Logged {
                        method: method.clone(),
                        path: path.to_string(),
                        field_manager: manager,
                        status: 0,
                    });
                }
                return None;
            }
            Some(Fault {
                status: Some(code),
                message,
                ..
            }) => (code, status_body(code, reason_for(code), &message)),
            None => s.handle(method, path, query, content_type, body, manager.as_deref()),
        };
        if s.record {
            s.log.push(Logged {
                method: method.clone(),
                path: path.to_string(),
                field_manager: manager,
                status: code,
            });
        }
        Some((code, serde_json::to_vec(&value).unwrap_or_default()))
    }

    // ---- test helpers ----

    fn key_of<K: Resource<DynamicType = ()>>() -> String {
        let group = K::group(&());
        let base = if group.is_empty() {
            format!("/api/{}", K::version(&()))
        } else {
            format!("/apis/{}/{}", group, K::version(&()))
        };
        format!("{base}|{}", K::plural(&()))
    }

    /// Store (create or replace) an object, as another client would (field manager `test-client`).
    pub fn put<K: Resource<DynamicType = ()> + Serialize>(&self, obj: &K) -> Value {
        let mut v = serde_json::to_value(obj).unwrap();
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.meta().name.clone().unwrap_or_default();
        let mut s = self.state.lock().unwrap();
        let key = Self::key_of::<K>();
        let existing = s
            .objects
            .get(&key)
            .and_then(|m| m.get(&(ns.clone(), name.clone())))
            .cloned();
        ssa::record_update(existing.as_ref(), &mut v, TEST_MANAGER, false);
        s.stamp(&mut v, existing.as_ref());
        s.objects.entry(key).or_default().insert((ns, name), v.clone());
        v
    }

    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(&self, ns: &str, name: &str) -> Option<K> {
        self.get_raw::<K>(ns, name)
            .map(|v| serde_json::from_value(v).expect("stored object deserializes"))
    }

    pub fn get_raw<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .get(&Self::key_of::<K>())
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Change a stored object in place as field manager `test-client` (an update), bumping its
    /// resourceVersion.
    pub fn edit<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        self.edit_as::<K>(ns, name, TEST_MANAGER, f)
    }

    /// Change a stored object in place as `manager` (an update: it takes over the fields it changes).
    pub fn edit_as<K: Resource<DynamicType = ()>>(
        &self,
        ns: &str,
        name: &str,
        manager: &str,
        f: impl FnOnce(&mut Value),
    ) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv.to_string();
        let obj = s
            .objects
            .get_mut(&Self::key_of::<K>())
            .and_then(|m| m.get_mut(&(ns.to_string(), name.to_string())))
            .expect("object to edit exists");
        let old = obj.clone();
        let before = without_meta_and_status(obj);
        f(obj);
        if without_meta_and_status(obj) != before {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        ssa::record_update(Some(&old), obj, manager, false);
        let mut old_with_main = old;
        old_with_main["metadata"]["managedFields"] = obj["metadata"]["managedFields"].clone();
        ssa::record_update(Some(&old_with_main), obj, manager, true);
        obj["metadata"]["resourceVersion"] = json!(rv);
    }

    /// Server-side apply `config` to an object as `manager` (another client, e.g. `kubectl apply
    /// --server-side`), without force. `Err` carries the status code and message.
    pub fn apply_as<K: Resource<DynamicType = ()>>(
        &self,
        ns: &str,
        name: &str,
        manager: &str,
        config: &Value,
        force: bool,
    ) -> Result<Value, (u16, String)> {
        let (base, plural) = Self::key_of::<K>()
            .split_once('|')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .unwrap();
        let path = format!("{base}/namespaces/{ns}/{plural}/{name}");
        let query = format!("fieldManager={manager}{}", if force { "&force=true" } else { "" });
        let (code, body) = self
            .handle(
                &Method::PATCH,
                &path,
                Some(&query),
                "application/apply-patch+yaml",
                &serde_json::to_vec(config).unwrap(),
            )
            .expect("no hang injected");
        let v: Value = serde_json::from_slice(&body).unwrap();
        if code < 300 {
            Ok(v)
        } else {
            Err((code, v["message"].as_str().unwrap_or("").to_string()))
        }
    }

    /// The field managers of an object and what each owns (`FieldsV1` decoded).
    pub fn managers<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str) -> Vec<ssa::Entry> {
        self.get_raw::<K>(ns, name)
            .map(|v| ssa::read_entries(&v))
            .unwrap_or_default()
    }

    /// Does `manager` own the field at `path` (e.g. `["spec", "replicas"]`)?
    pub fn owns<K: Resource<DynamicType = ()>>(
        &self,
        ns: &str,
        name: &str,
        manager: &str,
        path: &[&str],
    ) -> bool {
        let p: ssa::Path = path.iter().map(|f| ssa::Pe::Field(f.to_string())).collect();
        self.managers::<K>(ns, name)
            .iter()
            .any(|e| e.manager == manager && e.set.contains(&p))
    }

    pub fn remove<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str) -> Option<Value> {
        let mut s = self.state.lock().unwrap();
        s.objects
            .get_mut(&Self::key_of::<K>())
            .and_then(|m| m.remove(&(ns.to_string(), name.to_string())))
    }

    /// Names of the stored objects of a kind in a namespace.
    pub fn names<K: Resource<DynamicType = ()>>(&self, ns: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.objects
            .get(&Self::key_of::<K>())
            .map(|m| {
                m.keys()
                    .filter(|(n, _)| n == ns)
                    .map(|(_, name)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of stored objects of every kind.
    pub fn object_count(&self) -> usize {
        self.state.lock().unwrap().objects.values().map(|m| m.len()).sum()
    }

    /// Serialized size of every stored object, in bytes.
    pub fn stored_bytes(&self) -> usize {
        let s = self.state.lock().unwrap();
        s.objects
            .values()
            .flat_map(|m| m.values())
            .map(|v| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0))
            .sum()
    }

    /// Garbage collection: delete objects whose controller owner no longer exists.
    pub fn collect_garbage(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        let uids: std::collections::HashSet<String> = s
            .objects
            .values()
            .flat_map(|m| m.values())
            .filter_map(|v| v["metadata"]["uid"].as_str().map(str::to_string))
            .collect();
        let mut removed = 0;
        for m in s.objects.values_mut() {
            m.retain(|_, v| {
                let owners = v["metadata"]["ownerReferences"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let orphan = !owners.is_empty()
                    && owners
                        .iter()
                        .all(|o| !uids.contains(o["uid"].as_str().unwrap_or("")));
                if orphan {
                    removed += 1;
                }
                !orphan
            });
        }
        removed
    }

    /// Simulate the Deployment controller: `ready` of the desired replicas are ready and updated.
    pub fn set_deployment_ready(&self, ns: &str, name: &str, ready: i32) {
        self.edit_as::<k8s_openapi::api::apps::v1::Deployment>(ns, name, "kube-controller-manager", |d| {
            let desired = d["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
            let gen_ = d["metadata"]["generation"].clone();
            d["status"] = json!({
                "observedGeneration": gen_,
                "replicas": desired,
                "readyReplicas": ready,
                "updatedReplicas": desired,
                "availableReplicas": ready,
                "conditions": [
                    {"type": "Available", "status": if ready > 0 { "True" } else { "False" }, "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                ]
            });
        });
    }

    /// Fail the next `times` requests with `method` whose path contains `path_contains`.
    pub fn fail_next(&self, method: Method, path_contains: &str, status: u16, times: usize) {
        self.fail_next_with(method, path_contains, status, "injected fault", times)
    }

    /// Like [`fail_next`](Self::fail_next), with the Status message the API server (or an admission
    /// webhook, a policy engine, a quota) would give.
    pub fn fail_next_with(
        &self,
        method: Method,
        path_contains: &str,
        status: u16,
        message: &str,
        times: usize,
    ) {
        self.state.lock().unwrap().faults.push(Fault {
            method,
            path_contains: path_contains.to_string(),
            status: Some(status),
            message: message.to_string(),
            remaining: times,
        });
    }

    /// Never answer the next `times` matching requests (a half-open connection, a stuck API server).
    pub fn hang_next(&self, method: Method, path_contains: &str, times: usize) {
        self.state.lock().unwrap().faults.push(Fault {
            method,
            path_contains: path_contains.to_string(),
            status: None,
            message: String::new(),
            remaining: times,
        });
    }

    /// Expire every continue token issued so far (an etcd compaction): continuing a paged LIST with
    /// one answers 410 Expired, with a token to go on from the current state.
    pub fn expire_continue_tokens(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted_rv = s.rv + 1;
    }

    /// Drop every injected fault that has not fired yet.
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// The last body `manager` applied to an object.
    pub fn applied_by<K: Resource<DynamicType = ()>>(
        &self,
        ns: &str,
        name: &str,
        manager: &str,
    ) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.applied
            .get(&(
                Self::key_of::<K>(),
                ns.to_string(),
                name.to_string(),
                manager.to_string(),
            ))
            .cloned()
    }

    /// Events (events.k8s.io/v1) stored in `ns`, oldest first.
    pub fn events(&self, ns: &str) -> Vec<Value> {
        let s = self.state.lock().unwrap();
        let mut evs: Vec<Value> = s
            .objects
            .get("/apis/events.k8s.io/v1|events")
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        evs.sort_by_key(|e| {
            e["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
        });
        evs
    }
}

impl State {
    fn stamp(&mut self, v: &mut Value, existing: Option<&Value>) {
        self.rv += 1;
        let meta = v
            .as_object_mut()
            .expect("object")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        match existing {
            Some(e) => {
                meta["uid"] = e["metadata"]["uid"].clone();
                meta["creationTimestamp"] = e["metadata"]["creationTimestamp"].clone();
                meta["generation"] = e["metadata"]["generation"].clone();
            }
            None => {
                self.uid += 1;
                meta["uid"] = json!(format!("uid-{:08}", self.uid));
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                meta["generation"] = json!(1);
            }
        }
        meta["resourceVersion"] = json!(self.rv.to_string());
    }

    fn take_fault(&mut self, method: &Method, path: &str) -> Option<Fault> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.method == *method && path.contains(&f.path_contains))?;
        f.remaining -= 1;
        Some(f.clone())
    }

    fn get_obj(&self, t: &Target, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get(&t.collection)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// 422 for a name or label the API server would refuse.
    fn invalid(t: &Target, obj: &Value) -> Option<(u16, Value)> {
        let errs = names::validate(&t.plural, obj);
        if errs.is_empty() {
            return None;
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let msg = format!(
            "{} \"{name}\" is invalid: {}",
            names::kind_of(&t.plural),
            if errs.len() == 1 {
                errs[0].clone()
            } else {
                format!("[{}]", errs.join(", "))
            }
        );
        Some((422, status_body(422, "Invalid", &msg)))
    }

    /// LIST, in pages when the client asks for them (see [`paging`]).
    fn list(&self, t: &Target, query: Option<&str>) -> (u16, Value) {
        let limit = query_param(query, "limit")
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0);
        let token = query_param(query, "continue").filter(|c| !c.is_empty());
        // `resourceVersion=0` without a continue token is answered from the API server's watch cache,
        // which ignores `limit` (kubernetes/kubernetes#70735): one response with every object.
        let from_watch_cache = token.is_none() && query_param(query, "resourceVersion") == Some("0");
        let limit = if from_watch_cache { None } else { limit };
        let (list_rv, after) = match token.map(paging::decode) {
            None => (self.rv, None),
            Some(None) => {
                return (
                    400,
                    status_body(400, "BadRequest", "continue key is not valid: malformed token"),
                );
            }
            Some(Some((rv, _))) if rv < self.compacted_rv => {
                let mut st = status_body(410, "Expired", paging::EXPIRED_MESSAGE);
                // The token to go on with, inconsistently, from the current state (as the API server
                // offers it).
                let (_, key) = paging::decode(token.unwrap_or_default()).unwrap_or_default();
                st["metadata"]["continue"] = json!(paging::encode(self.rv, &key));
                return (410, st);
            }
            Some(Some((rv, key))) => (rv, Some(key)),
        };
        let empty = BTreeMap::new();
        let coll = self.objects.get(&t.collection).unwrap_or(&empty);
        let in_scope = |(ns, _): &(String, String)| t.namespace.as_deref().is_none_or(|want| ns == want);
        let rest = coll
            .range::<(String, String), _>((
                after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                std::ops::Bound::Unbounded,
            ))
            .filter(|(k, _)| in_scope(k));
        let mut items = Vec::new();
        let mut last = None;
        let mut remaining = 0usize;
        for (k, v) in rest {
            if limit.is_some_and(|n| items.len() >= n) {
                remaining += 1;
            } else {
                items.push(v.clone());
                last = Some(k);
            }
        }
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if remaining > 0
            && let Some(k) = last
        {
            metadata["continue"] = json!(paging::encode(list_rv, k));
            metadata["remainingItemCount"] = json!(remaining);
        }
        (
            200,
            json!({"apiVersion": t.api_version, "kind": "List", "metadata": metadata, "items": items}),
        )
    }

    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        content_type: &str,
        body: &[u8],
        manager: Option<&str>,
    ) -> (u16, Value) {
        if path == "/version" {
            return (
                200,
                json!({"major": "1", "minor": "37", "gitVersion": "v1.37.0-fake"}),
            );
        }
        let Some(t) = parse_path(path) else {
            return (404, status_body(404, "NotFound", "unknown path"));
        };
        if query_param(query, "watch").is_some() {
            return (
                405,
                status_body(405, "MethodNotAllowed", "watch is not supported by the fake"),
            );
        }
        let ns = t.namespace.clone().unwrap_or_default();
        let not_found = |name: &str| {
            (
                404,
                status_body(404, "NotFound", &format!("{} \"{name}\" not found", t.plural)),
            )
        };
        let parsed: Option<Value> = if body.is_empty() {
            None
        } else {
            serde_json::from_slice(body).ok()
        };
        let updater = manager.unwrap_or("unknown");
        let status_sub = t.subresource.as_deref() == Some("status");

        match (method.clone(), t.name.clone()) {
            (Method::GET, None) => self.list(&t, query),
            (Method::GET, Some(name)) => match self.get_obj(&t, &ns, &name) {
                Some(v) => (200, v),
                None => not_found(&name),
            },
            (Method::POST, None) => {
                let Some(mut v) = parsed else {
                    return (400, status_body(400, "BadRequest", "no body"));
                };
                let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
                if let Some(err) = Self::invalid(&t, &v) {
                    return err;
                }
                if self.get_obj(&t, &ns, &name).is_some() {
                    return (
                        409,
                        status_body(
                            409,
                            "AlreadyExists",
                            &format!("{} \"{name}\" already exists", t.plural),
                        ),
                    );
                }
                v["metadata"]["namespace"] = json!(ns);
                apply_defaults(&t.plural, &mut v);
                ssa::record_update(None, &mut v, updater, false);
                self.stamp(&mut v, None);
                self.objects
                    .entry(t.collection.clone())
                    .or_default()
                    .insert((ns, name), v.clone());
                (201, v)
            }
            (Method::PUT, Some(name)) => {
                let Some(mut v) = parsed else {
                    return (400, status_body(400, "BadRequest", "no body"));
                };
                let Some(existing) = self.get_obj(&t, &ns, &name) else {
                    return not_found(&name);
                };
                let sent_rv = v["metadata"]["resourceVersion"].as_str().map(str::to_string);
                if sent_rv.is_some() && sent_rv.as_deref() != existing["metadata"]["resourceVersion"].as_str()
                {
                    return (
                        409,
                        status_body(
                            409,
                            "Conflict",
                            "the object has been modified; please apply your changes to the latest version and try again",
                        ),
                    );
                }
                if let Some(err) = Self::invalid(&t, &v) {
                    return err;
                }
                apply_defaults(&t.plural, &mut v);
                ssa::record_update(Some(&existing), &mut v, updater, false);
                if without_meta_and_status(&v) != without_meta_and_status(&existing) {
                    let g = existing["metadata"]["generation"].as_i64().unwrap_or(1);
                    self.stamp(&mut v, Some(&existing));
                    v["metadata"]["generation"] = json!(g + 1);
                } else {
                    self.stamp(&mut v, Some(&existing));
                }
                self.objects
                    .entry(t.collection.clone())
                    .or_default()
                    .insert((ns, name), v.clone());
                (200, v)
            }
            (Method::PATCH, Some(name)) => {
                let Some(patch) = parsed else {
                    return (400, status_body(400, "BadRequest", "no body"));
                };
                let is_apply = content_type.starts_with("application/apply-patch");
                if is_apply && manager.is_none() {
                    return (
                        400,
                        status_body(400, "BadRequest", "fieldManager is required for apply"),
                    );
                }
                let existing = self.get_obj(&t, &ns, &name);
                if existing.is_none() && (!is_apply || status_sub) {
                    return not_found(&name);
                }
                if is_apply
                    && self.keep_applied
                    && let Some(m) = manager
                {
                    self.applied.insert(
                        (t.collection.clone(), ns.clone(), name.clone(), m.to_string()),
                        patch.clone(),
                    );
                }
                let mut obj = if is_apply {
                    let force = query_param(query, "force") == Some("true");
                    match ssa::apply(existing.as_ref(), &patch, updater, force, status_sub) {
                        Ok(o) => o,
                        Err(conflicts) => {
                            let list: Vec<String> = conflicts
                                .iter()
                                .map(|(p, m)| format!("conflict with \"{m}\": {p}"))
                                .collect();
                            let msg = format!(
                                "Apply failed with {} conflict{}: {}",
                                conflicts.len(),
                                if conflicts.len() == 1 { "" } else { "s" },
                                list.join("\n")
                            );
                            return (409, status_body(409, "Conflict", &msg));
                        }
                    }
                } else {
                    let mut o = existing.clone().expect("checked above");
                    if status_sub {
                        if let Some(st) = patch.get("status") {
                            merge(&mut o["status"], st);
                        }
                    } else {
                        let mut p = patch.clone();
                        if let Some(m) = p.as_object_mut() {
                            m.remove("status");
                        }
                        merge(&mut o, &p);
                    }
                    ssa::record_update(existing.as_ref(), &mut o, updater, status_sub);
                    o
                };
                // Identity and server-owned metadata are not changed by a patch.
                obj["apiVersion"] = existing
                    .as_ref()
                    .map(|e| e["apiVersion"].clone())
                    .unwrap_or_else(|| patch["apiVersion"].clone());
                obj["kind"] = existing
                    .as_ref()
                    .map(|e| e["kind"].clone())
                    .unwrap_or_else(|| patch["kind"].clone());
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["namespace"] = json!(ns);
                if let Some(e) = &existing {
                    for k in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
                        obj["metadata"][k] = e["metadata"][k].clone();
                    }
                }
                if !status_sub {
                    apply_defaults(&t.plural, &mut obj);
                }
                if let Some(err) = Self::invalid(&t, &obj) {
                    return err;
                }
                if existing.as_ref() == Some(&obj) {
                    // A no-op patch does not change the resourceVersion.
                    return (200, obj);
                }
                let changed_spec = existing
                    .as_ref()
                    .is_some_and(|e| without_meta_and_status(e) != without_meta_and_status(&obj));
                let gen_ = obj["metadata"]["generation"].as_i64().unwrap_or(1);
                self.stamp(&mut obj, existing.as_ref());
                if existing.is_some() {
                    obj["metadata"]["generation"] = json!(if changed_spec { gen_ + 1 } else { gen_ });
                }
                self.objects
                    .entry(t.collection.clone())
                    .or_default()
                    .insert((ns, name), obj.clone());
                (if existing.is_some() { 200 } else { 201 }, obj)
            }
            (Method::DELETE, Some(name)) => match self
                .objects
                .get_mut(&t.collection)
                .and_then(|m| m.remove(&(ns.clone(), name.clone())))
            {
                Some(v) => (200, v),
                None => not_found(&name),
            },
            _ => (
                405,
                status_body(405, "MethodNotAllowed", "not supported by the fake"),
            ),
        }
    }
}

/// Paged LISTs, as the API server pages them (`limit` and `continue`, see "Retrieving large results
/// sets in chunks" in the Kubernetes API concepts): objects in key order (namespace, name); a page of
/// at most `limit` objects; when more remain, `metadata.continue` (an opaque token naming the list's
/// resourceVersion and the last key returned) and `metadata.remainingItemCount`; every page carries
/// the first page's resourceVersion. A malformed token is a 400, an expired one (see
/// [`FakeApi::expire_continue_tokens`]) a 410 `Expired`. Unlike etcd, later pages show the objects
/// as they are now, not as they were at that resourceVersion.
pub mod paging {
    use serde_json::{Value, json};

    /// The API server's message for an expired continue token.
    pub const EXPIRED_MESSAGE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

    /// The token continuing after key `(ns, name)` of a list at `rv`.
    pub fn encode(rv: u64, key: &(String, String)) -> String {
        let body = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0, key.1]});
        hex::encode(body.to_string())
    }

    /// (resourceVersion, last key) of a token; `None` when it is not one of ours.
    pub fn decode(token: &str) -> Option<(u64, (String, String))> {
        let v: Value = serde_json::from_slice(&hex::decode(token).ok()?).ok()?;
        if v["v"] != "meta.k8s.io/v1" {
            return None;
        }
        let start = v["start"].as_array()?;
        Some((
            v["rv"].as_u64()?,
            (
                start.first()?.as_str()?.to_string(),
                start.get(1)?.as_str()?.to_string(),
            ),
        ))
    }
}

/// Server-side apply on JSON objects, after structured-merge-diff (the API server's library): field
/// sets as paths, list types from the Kubernetes OpenAPI (`x-kubernetes-list-type`,
/// `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`/`structType` atomic), and the `FieldsV1`
/// encoding of `metadata.managedFields`.
pub mod ssa {
    use std::collections::BTreeSet;

    use serde_json::{Map, Value, json};

    /// One step of a field path: `f:name`, `k:{"name":"x"}` (a list-map item) or `v:"x"` (a set item).
    #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Pe {
        Field(String),
        Key(String),
        Value(String),
    }
    pub type Path = Vec<Pe>;
    pub type FieldSet = BTreeSet<Path>;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ListType {
        Atomic,
        Set,
        Map(&'static [&'static str]),
    }

    /// List type of the list at `type_path` (field names joined by '.', list items transparent).
    /// From the Kubernetes OpenAPI of the kinds the operator writes; every other list is atomic.
    pub fn list_type(type_path: &str) -> ListType {
        let ends = |s: &str| type_path == s || type_path.ends_with(&format!(".{s}"));
        if ends("metadata.ownerReferences") {
            ListType::Map(&["uid"])
        } else if ends("metadata.finalizers") {
            ListType::Set
        } else if ends("status.conditions") {
            ListType::Map(&["type"])
        } else if ends("spec.containers")
            || ends("spec.initContainers")
            || ends("spec.ephemeralContainers")
            || ends("containers.env")
            || ends("initContainers.env")
        {
            ListType::Map(&["name"])
        } else if ends("containers.ports") || ends("initContainers.ports") {
            ListType::Map(&["containerPort", "protocol"])
        } else if ends("containers.volumeMounts") || ends("initContainers.volumeMounts") {
            ListType::Map(&["mountPath"])
        } else if ends("template.spec.volumes")
            || ends("template.spec.imagePullSecrets")
            || ends("template.spec.resourceClaims")
        {
            ListType::Map(&["name"])
        } else if ends("template.spec.topologySpreadConstraints") {
            ListType::Map(&["topologyKey", "whenUnsatisfiable"])
        } else if ends("template.spec.hostAliases") {
            ListType::Map(&["ip"])
        } else if type_path == "spec.ports" {
            // Service ports.
            ListType::Map(&["port", "protocol"])
        } else {
            ListType::Atomic
        }
    }

    /// Maps and structs that are atomic (`x-kubernetes-map-type: atomic`, `+structType=atomic`): owned
    /// and replaced as a whole.
    pub fn atomic_object(type_path: &str) -> bool {
        let last = type_path.rsplit('.').next().unwrap_or("");
        matches!(
            last,
            // metav1.LabelSelector, Service spec.selector (map atomic).
            "selector" | "podSelector" | "namespaceSelector" | "labelSelector"
            // core/v1 references and selectors marked structType=atomic.
            | "secretKeyRef" | "configMapKeyRef" | "fieldRef" | "resourceFieldRef" | "regarding" | "related"
        ) || type_path.ends_with("nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution")
    }

    fn join(tp: &str, k: &str) -> String {
        if tp.is_empty() {
            k.to_string()
        } else {
            format!("{tp}.{k}")
        }
    }

    /// `{"k1":v1,...}` of an item's key fields, keys sorted (the FieldsV1 spelling).
    pub fn key_of(item: &Value, keys: &[&str]) -> String {
        let mut m = std::collections::BTreeMap::new();
        for k in keys {
            if let Some(v) = item.get(*k).filter(|v| !v.is_null()) {
                m.insert(k.to_string(), v.clone());
            }
        }
        serde_json::to_string(&m).unwrap_or_default()
    }

    /// Fields set in `obj` (an apply configuration or a live object), below `prefix`.
    pub fn fields(obj: &Value, type_path: &str) -> FieldSet {
        let mut out = FieldSet::new();
        if let Value::Object(m) = obj {
            collect_object(m, type_path, &Vec::new(), &mut out);
        }
        out
    }

    fn collect_object(m: &Map<String, Value>, tp: &str, prefix: &Path, out: &mut FieldSet) {
        for (k, v) in m {
            if v.is_null() {
                continue;
            }
            let mut p = prefix.clone();
            p.push(Pe::Field(k.clone()));
            collect_member(v, &join(tp, k), p, out);
        }
    }

    fn collect_member(v: &Value, tp: &str, p: Path, out: &mut FieldSet) {
        match v {
            Value::Object(m) if !m.is_empty() && !atomic_object(tp) => collect_object(m, tp, &p, out),
            Value::Array(items) => match list_type(tp) {
                ListType::Atomic => {
                    out.insert(p);
                }
                ListType::Set => {
                    for i in items {
                        let mut ip = p.clone();
                        ip.push(Pe::Value(i.to_string()));
                        out.insert(ip);
                    }
                }
                ListType::Map(keys) => {
                    for i in items {
                        let mut ip = p.clone();
                        ip.push(Pe::Key(key_of(i, keys)));
                        out.insert(ip.clone());
                        if let Value::Object(m) = i {
                            collect_object(m, tp, &ip, out);
                        }
                    }
                }
            },
            _ => {
                out.insert(p);
            }
        }
    }

    fn find_item(items: &[Value], pe: &Pe, tp: &str) -> Option<usize> {
        match (pe, list_type(tp)) {
            (Pe::Key(k), ListType::Map(keys)) => items.iter().position(|i| key_of(i, keys) == *k),
            (Pe::Value(v), _) => items
                .iter()
                .position(|i| serde_json::from_str::<Value>(v).is_ok_and(|x| x == *i)),
            _ => None,
        }
    }

    /// The value at `path` in `obj`.
    pub fn value_at<'a>(obj: &'a Value, path: &[Pe]) -> Option<&'a Value> {
        let mut cur = obj;
        let mut tp = String::new();
        for pe in path {
            cur = match (pe, cur) {
                (Pe::Field(f), Value::Object(m)) => {
                    tp = join(&tp, f);
                    m.get(f)?
                }
                (_, Value::Array(items)) => &items[find_item(items, pe, &tp)?],
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Remove the field or item at `path` from `obj`; parents left empty are removed too.
    pub fn remove_at(obj: &mut Value, path: &[Pe]) {
        fn go(cur: &mut Value, path: &[Pe], tp: &str) -> bool {
            let Some((first, rest)) = path.split_first() else {
                return false;
            };
            match (first, cur) {
                (Pe::Field(f), Value::Object(m)) => {
                    let ctp = join(tp, f);
                    if rest.is_empty() {
                        m.remove(f);
                    } else if let Some(child) = m.get_mut(f)
                        && go(child, rest, &ctp)
                    {
                        m.remove(f);
                    }
                    m.is_empty()
                }
                (pe, Value::Array(items)) => {
                    if let Some(i) = find_item(items, pe, tp) {
                        if rest.is_empty() {
                            items.remove(i);
                        } else {
                            go(&mut items[i], rest, tp);
                        }
                    }
                    items.is_empty()
                }
                _ => false,
            }
        }
        go(obj, path, "");
    }

    /// Merge an apply configuration into the live object: maps merge per field, list-maps per key,
    /// sets by value; atomic lists, atomic maps and scalars are replaced.
    pub fn merge(live: &mut Value, config: &Value, tp: &str) {
        match (live, config) {
            (Value::Object(l), Value::Object(c)) if !atomic_object(tp) => {
                for (k, cv) in c {
                    if cv.is_null() {
                        continue;
                    }
                    let ctp = join(tp, k);
                    match l.get_mut(k) {
                        Some(lv) => merge(lv, cv, &ctp),
                        None => {
                            l.insert(k.clone(), cv.clone());
                        }
                    }
                }
            }
            (Value::Array(l), Value::Array(c)) => match list_type(tp) {
                ListType::Atomic => *l = c.clone(),
                ListType::Set => {
                    for v in c {
                        if !l.contains(v) {
                            l.push(v.clone());
                        }
                    }
                }
                ListType::Map(keys) => {
                    for ci in c {
                        let k = key_of(ci, keys);
                        match l.iter_mut().find(|li| key_of(li, keys) == k) {
                            Some(li) => merge(li, ci, tp),
                            None => l.push(ci.clone()),
                        }
                    }
                }
            },
            (l, c) => *l = c.clone(),
        }
    }

    /// Encode a field set as `FieldsV1`.
    pub fn to_fields_v1(set: &FieldSet) -> Value {
        let mut root = json!({});
        for path in set {
            let mut node = &mut root;
            for pe in path {
                let key = match pe {
                    Pe::Field(f) => format!("f:{f}"),
                    Pe::Key(k) => format!("k:{k}"),
                    Pe::Value(v) => format!("v:{v}"),
                };
                node = node
                    .as_object_mut()
                    .expect("trie node")
                    .entry(key)
                    .or_insert_with(|| json!({}));
            }
            node.as_object_mut()
                .expect("trie node")
                .insert(".".into(), json!({}));
        }
        // A leaf is spelled `{}`; "." stays only where the node also has children.
        fn tidy(v: &mut Value) {
            if let Value::Object(m) = v {
                for (k, c) in m.iter_mut() {
                    if k != "." {
                        tidy(c);
                    }
                }
                if m.len() == 1 && m.contains_key(".") {
                    m.clear();
                }
            }
        }
        tidy(&mut root);
        if let Value::Object(m) = &mut root {
            m.remove(".");
        }
        root
    }

    /// Decode `FieldsV1` into a field set.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        fn go(v: &Value, prefix: &Path, out: &mut FieldSet) {
            let Value::Object(m) = v else { return };
            for (k, c) in m {
                if k == "." {
                    out.insert(prefix.clone());
                    continue;
                }
                let pe = if let Some(f) = k.strip_prefix("f:") {
                    Pe::Field(f.to_string())
                } else if let Some(key) = k.strip_prefix("k:") {
                    Pe::Key(key.to_string())
                } else if let Some(val) = k.strip_prefix("v:") {
                    Pe::Value(val.to_string())
                } else {
                    continue;
                };
                let mut p = prefix.clone();
                p.push(pe);
                if c.as_object().is_some_and(|o| o.is_empty()) {
                    out.insert(p);
                } else {
                    go(c, &p, out);
                }
            }
        }
        let mut out = FieldSet::new();
        go(v, &Vec::new(), &mut out);
        out
    }

    /// Human spelling of a path, as in the API server's conflict messages (`.spec.replicas`).
    pub fn display(path: &[Pe]) -> String {
        path.iter()
            .map(|pe| match pe {
                Pe::Field(f) => format!(".{f}"),
                Pe::Key(k) => format!("[{}]", k.trim_matches(|c| c == '{' || c == '}').replace(':', "=")),
                Pe::Value(v) => format!("[{v}]"),
            })
            .collect()
    }

    /// One `managedFields` entry.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Entry {
        pub manager: String,
        pub operation: String,
        pub subresource: String,
        pub api_version: String,
        pub set: FieldSet,
    }

    pub fn read_entries(obj: &Value) -> Vec<Entry> {
        obj["metadata"]["managedFields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| Entry {
                        manager: e["manager"].as_str().unwrap_or("").to_string(),
                        operation: e["operation"].as_str().unwrap_or("").to_string(),
                        subresource: e["subresource"].as_str().unwrap_or("").to_string(),
                        api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                        set: from_fields_v1(&e["fieldsV1"]),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
        let list: Vec<Value> = entries
            .iter()
            .filter(|e| !e.set.is_empty())
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                    "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.set),
                });
                if !e.subresource.is_empty() {
                    v["subresource"] = json!(e.subresource);
                }
                v
            })
            .collect();
        let meta = obj
            .as_object_mut()
            .expect("object")
            .entry("metadata")
            .or_insert_with(|| json!({}));
        if list.is_empty() {
            if let Some(m) = meta.as_object_mut() {
                m.remove("managedFields");
            }
        } else {
            meta["managedFields"] = Value::Array(list);
        }
    }

    /// The part of an object that field management covers: no identity, server-set metadata or
    /// managedFields; only `status` on the status subresource, everything but `status` otherwise.
    pub fn managed_part(obj: &Value, status_sub: bool) -> Value {
        let mut v = obj.clone();
        if let Value::Object(m) = &mut v {
            m.remove("apiVersion");
            m.remove("kind");
            if status_sub {
                m.retain(|k, _| k == "status");
            } else {
                m.remove("status");
                if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                    for k in [
                        "name",
                        "namespace",
                        "uid",
                        "resourceVersion",
                        "generation",
                        "creationTimestamp",
                        "managedFields",
                        "deletionTimestamp",
                        "selfLink",
                    ] {
                        meta.remove(k);
                    }
                    if meta.is_empty() {
                        m.remove("metadata");
                    }
                }
            }
        }
        v
    }

    /// A conflict: the path and the manager that owns it.
    pub type Conflict = (String, String);

    /// Apply `config` as `manager` to `live` (the whole object; `None` when it does not exist yet).
    /// Returns the new object, or the conflicts when not forced.
    pub fn apply(
        live: Option<&Value>,
        config: &Value,
        manager: &str,
        force: bool,
        status_sub: bool,
    ) -> Result<Value, Vec<Conflict>> {
        let subresource = if status_sub { "status" } else { "" };
        let mut obj = live.cloned().unwrap_or_else(|| json!({}));
        let mut entries = read_entries(&obj);
        let part = managed_part(config, status_sub);
        let new_set = fields(&part, "");

        // Conflicts: a field another manager owns whose value would change.
        let mut conflicts = Vec::new();
        for e in entries.iter_mut() {
            if e.manager == manager && e.operation == "Apply" {
                continue;
            }
            let clash: Vec<Path> = e
                .set
                .intersection(&new_set)
                .filter(|p| {
                    let want = value_at(&part, p);
                    let is_leaf = !matches!(p.last(), Some(Pe::Key(_)));
                    is_leaf && want.is_some() && value_at(&obj, p) != want
                })
                .cloned()
                .collect();
            for p in clash {
                conflicts.push((display(&p), e.manager.clone()));
                if force {
                    e.set.remove(&p);
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(conflicts);
        }

        // Fields this manager applied before and no longer sends, owned by nobody else: removed.
        let prev = entries
            .iter()
            .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
            .map(|e| e.set.clone())
            .unwrap_or_default();
        let others: FieldSet = entries
            .iter()
            .filter(|e| !(e.manager == manager && e.operation == "Apply" && e.subresource == subresource))
            .flat_map(|e| e.set.iter().cloned())
            .collect();
        let mut gone: Vec<&Path> = prev
            .difference(&new_set)
            .filter(|p| !others.contains(*p))
            .collect();
        // Shallowest first: a removed list item takes its fields with it.
        gone.sort_by_key(|p| p.len());
        for p in gone {
            let shared_below = others
                .iter()
                .chain(new_set.iter())
                .any(|o| o.len() > p.len() && o.starts_with(p));
            if !shared_below {
                remove_at(&mut obj, p);
            }
        }

        merge(&mut obj, &part, "");
        match entries
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
        {
            Some(e) => e.set = new_set,
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Apply".into(),
                subresource: subresource.into(),
                api_version: config["apiVersion"].as_str().unwrap_or("").to_string(),
                set: new_set,
            }),
        }
        write_entries(&mut obj, &entries);
        Ok(obj)
    }

    /// Record an update (create, replace, merge patch) by `manager` from `old` to `new`: the fields it
    /// changed become its own and leave every other manager; fields it removed leave every manager.
    pub fn record_update(old: Option<&Value>, new: &mut Value, manager: &str, status_sub: bool) {
        let subresource = if status_sub { "status" } else { "" };
        let mut entries = old.map(read_entries).unwrap_or_default();
        let old_part = old
            .map(|o| managed_part(o, status_sub))
            .unwrap_or_else(|| json!({}));
        let new_part = managed_part(new, status_sub);
        let old_set = fields(&old_part, "");
        let new_set = fields(&new_part, "");
        let changed: FieldSet = new_set
            .iter()
            .filter(|p| value_at(&old_part, p) != value_at(&new_part, p))
            .cloned()
            .collect();
        let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
        for e in entries.iter_mut() {
            e.set.retain(|p| !changed.contains(p) && !removed.contains(p));
        }
        if !changed.is_empty() {
            match entries
                .iter_mut()
                .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == subresource)
            {
                Some(e) => e.set.extend(changed),
                None => entries.push(Entry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    subresource: subresource.into(),
                    api_version: new["apiVersion"].as_str().unwrap_or("").to_string(),
                    set: changed,
                }),
            }
        }
        write_entries(new, &entries);
    }
}

/// Validation of names and labels, as the API server does it (k8s.io/apimachinery/pkg/util/validation).
pub mod names {
    use serde_json::Value;

    fn dns_label_chars(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    }

    /// RFC 1035 label: at most 63 characters, `[a-z]([-a-z0-9]*[a-z0-9])?`.
    pub fn dns1035_label(s: &str) -> Result<(), String> {
        if s.len() > 63 {
            return Err("must be no more than 63 characters".into());
        }
        if !dns_label_chars(s) || !s.as_bytes()[0].is_ascii_lowercase() {
            return Err("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into());
        }
        Ok(())
    }

    /// RFC 1123 subdomain: at most 253 characters, dot-separated RFC 1123 labels.
    pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
        if s.len() > 253 {
            return Err("must be no more than 253 characters".into());
        }
        if s.is_empty() || !s.split('.').all(dns_label_chars) {
            return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
        }
        Ok(())
    }

    fn qualified_name_part(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    }

    /// Label value: empty, or at most 63 characters of `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`.
    pub fn label_value(s: &str) -> Result<(), String> {
        if s.len() > 63 {
            return Err("must be no more than 63 characters".into());
        }
        if !s.is_empty() && !qualified_name_part(s) {
            return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into());
        }
        Ok(())
    }

    /// Label key: an optional DNS subdomain prefix and '/', then a name part of at most 63 characters.
    pub fn label_key(s: &str) -> Result<(), String> {
        let (prefix, name) = match s.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, s),
        };
        if let Some(p) = prefix {
            dns1123_subdomain(p).map_err(|e| format!("prefix part {e}"))?;
        }
        if !qualified_name_part(name) {
            return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with at most 63 characters".into());
        }
        Ok(())
    }

    fn check_labels(v: &Value, field: &str, errs: &mut Vec<String>) {
        if let Some(m) = v.as_object() {
            for (k, val) in m {
                if let Err(e) = label_key(k) {
                    errs.push(format!("{field}: Invalid value: \"{k}\": {e}"));
                }
                let val = val.as_str().unwrap_or("");
                if let Err(e) = label_value(val) {
                    errs.push(format!("{field}: Invalid value: \"{val}\": {e}"));
                }
            }
        }
    }

    /// Errors of `obj` of kind `plural`, in the API server's wording; empty when valid.
    pub fn validate(plural: &str, obj: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let check = if plural == "services" {
            dns1035_label(name)
        } else {
            dns1123_subdomain(name)
        };
        if let Err(e) = check {
            errs.push(format!("metadata.name: Invalid value: \"{name}\": {e}"));
        }
        check_labels(&obj["metadata"]["labels"], "metadata.labels", &mut errs);
        check_labels(
            &obj["spec"]["template"]["metadata"]["labels"],
            "spec.template.metadata.labels",
            &mut errs,
        );
        check_labels(
            &obj["spec"]["selector"]["matchLabels"],
            "spec.selector.matchLabels",
            &mut errs,
        );
        check_labels(
            &obj["spec"]["podSelector"]["matchLabels"],
            "spec.podSelector.matchLabels",
            &mut errs,
        );
        if plural == "services" {
            check_labels(&obj["spec"]["selector"], "spec.selector", &mut errs);
        }
        errs
    }

    /// Kind name for messages (`Service "x" is invalid: ...`).
    pub fn kind_of(plural: &str) -> &'static str {
        match plural {
            "services" => "Service",
            "deployments" => "Deployment",
            "serviceaccounts" => "ServiceAccount",
            "networkpolicies" => "NetworkPolicy",
            "poddisruptionbudgets" => "PodDisruptionBudget",
            "lumenoreconnectors" => "LumenoreConnector",
            "leases" => "Lease",
            "secrets" => "Secret",
            "events" => "Event",
            _ => "Object",
        }
    }
}
