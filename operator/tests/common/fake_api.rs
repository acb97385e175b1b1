//! An in-memory Kubernetes API server, as a tower `Service` plugged into `kube::Client::new`.
//!
//! It stores objects as JSON and answers what the operator sends: GET (one object or a list), POST
//! (create), PUT (replace, with resourceVersion conflicts), PATCH (server-side apply, merge patch;
//! on the main resource or the `status` subresource) and DELETE. Faults can be injected (a status
//! code for the next N matching requests) and every request is logged.
//!
//! Server-side apply is approximated: the applied fields are deep-merged into the stored object
//! (objects merge, lists and scalars are replaced), so fields the applier does not send keep
//! whatever another manager set — which is what server-side apply guarantees for fields owned by
//! others. Field ownership itself is not tracked; `applied` keeps the last body each field manager
//! applied, so tests can assert what the operator claims.
//!
//! Shared by the reconcile scenarios and the benchmark (`#[path]`-included), so it stays dependency
//! light: kube, http, http-body-util, serde_json, tower.
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

#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Method,
    pub path_contains: String,
    pub status: u16,
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
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "Unknown",
    }
}

/// Deep merge `patch` into `target`: objects merge key by key (null deletes), everything else replaces.
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

    /// A kube client talking to this fake.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let svc = tower::service_fn(move |req: Request<kube::client::Body>| {
            let api = api.clone();
            async move {
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
                let (code, body) =
                    api.handle(&parts.method, parts.uri.path(), parts.uri.query(), &ct, &bytes);
                let resp = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(kube::client::Body::from(body))
                    .expect("valid response");
                Ok::<_, Infallible>(resp)
            }
        });
        kube::Client::new(svc, "default")
    }

    /// Answer one request: (status code, JSON body).
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let mut s = self.state.lock().unwrap();
        let manager = query_param(query, "fieldManager").map(str::to_string);
        let (code, value) = s.handle(method, path, query, content_type, body, manager.as_deref());
        if s.record {
            s.log.push(Logged {
                method: method.clone(),
                path: path.to_string(),
                field_manager: manager,
                status: code,
            });
        }
        (code, serde_json::to_vec(&value).unwrap_or_default())
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

    /// Store (create or replace) an object, as another client would.
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

    /// Change a stored object in place (as another client would), bumping its resourceVersion.
    pub fn edit<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv.to_string();
        let obj = s
            .objects
            .get_mut(&Self::key_of::<K>())
            .and_then(|m| m.get_mut(&(ns.to_string(), name.to_string())))
            .expect("object to edit exists");
        let before = without_meta_and_status(obj);
        f(obj);
        if without_meta_and_status(obj) != before {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        obj["metadata"]["resourceVersion"] = json!(rv);
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
        self.edit::<k8s_openapi::api::apps::v1::Deployment>(ns, name, |d| {
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
        self.state.lock().unwrap().faults.push(Fault {
            method,
            path_contains: path_contains.to_string(),
            status,
            remaining: times,
        });
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

    fn take_fault(&mut self, method: &Method, path: &str) -> Option<u16> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.method == *method && path.contains(&f.path_contains))?;
        f.remaining -= 1;
        Some(f.status)
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
        if let Some(code) = self.take_fault(method, path) {
            return (code, status_body(code, reason_for(code), "injected fault"));
        }
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

        match (method.clone(), t.name.clone()) {
            (Method::GET, None) => {
                let items: Vec<Value> = self
                    .objects
                    .get(&t.collection)
                    .map(|m| {
                        m.iter()
                            .filter(|((n, _), _)| t.namespace.is_none() || *n == ns)
                            .map(|(_, v)| v.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    200,
                    json!({"apiVersion": t.api_version, "kind": "List", "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
                )
            }
            (Method::GET, Some(name)) => match self
                .objects
                .get(&t.collection)
                .and_then(|m| m.get(&(ns.clone(), name.clone())))
            {
                Some(v) => (200, v.clone()),
                None => not_found(&name),
            },
            (Method::POST, None) => {
                let Some(mut v) = parsed else {
                    return (400, status_body(400, "BadRequest", "no body"));
                };
                let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
                if self
                    .objects
                    .get(&t.collection)
                    .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())))
                {
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
                let Some(existing) = self
                    .objects
                    .get(&t.collection)
                    .and_then(|m| m.get(&(ns.clone(), name.clone())))
                    .cloned()
                else {
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
                let existing = self
                    .objects
                    .get(&t.collection)
                    .and_then(|m| m.get(&(ns.clone(), name.clone())))
                    .cloned();
                let status_sub = t.subresource.as_deref() == Some("status");
                let mut obj = match (&existing, is_apply && !status_sub) {
                    (Some(e), _) => e.clone(),
                    (None, true) => {
                        json!({"apiVersion": patch["apiVersion"], "kind": patch["kind"], "metadata": {"name": name, "namespace": ns}})
                    }
                    (None, false) => return not_found(&name),
                };
                if is_apply
                    && self.keep_applied
                    && let Some(m) = manager
                {
                    self.applied.insert(
                        (t.collection.clone(), ns.clone(), name.clone(), m.to_string()),
                        patch.clone(),
                    );
                }
                if status_sub {
                    match (is_apply, patch.get("status")) {
                        // One manager applies the whole status: what it no longer sends is removed.
                        (true, Some(st)) => obj["status"] = st.clone(),
                        (false, Some(st)) => merge(&mut obj["status"], st),
                        _ => {}
                    }
                } else {
                    let mut p = patch.clone();
                    if let Some(o) = p.as_object_mut() {
                        o.remove("status");
                    }
                    let before = without_meta_and_status(&obj);
                    let old_meta = obj["metadata"].clone();
                    merge(&mut obj, &p);
                    if !old_meta.is_null() {
                        // Server-owned metadata is not changed by a patch.
                        for k in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
                            if !old_meta[k].is_null() {
                                obj["metadata"][k] = old_meta[k].clone();
                            }
                        }
                    }
                    if existing.is_some() && without_meta_and_status(&obj) != before {
                        let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
                        obj["metadata"]["generation"] = json!(g + 1);
                    }
                }
                if existing.as_ref() == Some(&obj) {
                    // A no-op patch does not change the resourceVersion.
                    return (200, obj);
                }
                let gen_ = obj["metadata"]["generation"].clone();
                self.stamp(&mut obj, existing.as_ref());
                if existing.is_some() {
                    obj["metadata"]["generation"] = gen_;
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
