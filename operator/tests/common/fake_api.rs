//! An in-memory Kubernetes API server, as a tower `Service` plugged into `kube::Client::new`.
//!
//! It stores objects as JSON and answers what the operator sends: GET (one object, or a list, paged
//! with `limit`/`continue`, see [`paging`], filtered by `labelSelector`/`fieldSelector`), WATCH (see
//! [`watch`]), POST (create), PUT (replace, with resourceVersion conflicts), PATCH (server-side
//! apply, merge patch; on the main resource or the `status` subresource) and DELETE. Faults can be
//! injected per request (a status code and message, a hang that never answers, a delay) and every
//! request is logged; every write is recorded ([`FakeApi::writes`], [`FakeApi::on_write`]).
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
//! without `spec.replicas` is defaulted to 1, as the API server does. Immutable fields (see
//! [`immutable`]): a Deployment's `spec.selector` and a Service's allocated cluster IP.
//!
//! Misbehaviour on demand, per client identity (the bearer token of an HTTP request, the `name` of
//! [`FakeApi::service_named`] in-process): [`FakeApi::partition`]/[`FakeApi::heal`],
//! [`FakeApi::stall_watches`], [`FakeApi::cut_watches`], [`FakeApi::compact`],
//! [`FakeApi::delay_requests`], [`FakeApi::uninstall`]/[`FakeApi::install`] (a CRD not installed).
//!
//! Shared by the reconcile scenarios and the benchmark (`#[path]`-included), so it stays dependency
//! light and in one file: kube, http, http-body-util, serde_json, tower, axum, tokio, futures, url,
//! hex.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
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

/// One write request (POST, PUT, PATCH, DELETE; subresources included) as the fake answered it,
/// accepted or refused, in the order the fake handled them.
#[derive(Clone, Debug)]
pub struct Write {
    /// 1, 2, 3 ... in the order the writes were handled.
    pub seq: u64,
    /// The client: the bearer token of an HTTP request, the `name` of
    /// [`service_named`](FakeApi::service_named); `None` when there is none (an HTTP request without
    /// a token, [`FakeApi::service`], a direct [`FakeApi::handle`] call).
    pub identity: Option<String>,
    pub field_manager: Option<String>,
    pub method: Method,
    /// Collection, e.g. `deployments` (empty when the path is not a resource path).
    pub plural: String,
    /// `None` for a cluster-scoped path.
    pub namespace: Option<String>,
    /// The object's name (for a POST, the one in the body).
    pub name: String,
    pub subresource: Option<String>,
    /// Status code answered; 0 for an injected hang (never answered).
    pub status: u16,
    /// The global resourceVersion after the write.
    pub resource_version: u64,
    /// The object as stored after the write; `None` when refused or deleted.
    pub object: Option<Value>,
}

/// A hook called after every write (see [`FakeApi::on_write`]).
pub type WriteHook = Arc<dyn Fn(&Write, &FakeApi) + Send + Sync>;

/// The body of the fake's responses: a whole JSON document, or a watch stream.
pub type FakeBody = axum::body::Body;

/// The fake as a tower service (see [`FakeApi::service_named`]).
pub type FakeService =
    tower::util::BoxCloneService<Request<kube::client::Body>, Response<FakeBody>, Infallible>;

#[derive(Clone, Debug)]
struct Delay {
    path_contains: String,
    delay: Duration,
    remaining: usize,
}

/// One answer of [`FakeApi::handle_inner`].
struct Reply {
    code: u16,
    body: Vec<u8>,
    content_type: &'static str,
}

impl Reply {
    fn json(code: u16, v: &Value) -> Reply {
        Reply {
            code,
            body: serde_json::to_vec(v).unwrap_or_default(),
            content_type: "application/json",
        }
    }

    /// What the API server answers for a resource it does not serve (a CRD not installed): its
    /// NotFound handler is Go's `http.NotFound`, a plain-text body, not a JSON Status
    /// (k8s.io/apiserver pkg/util/notfoundhandler/not_found_handler.go; apiextensions-apiserver
    /// pkg/apiserver/customresource_handler.go hands unknown CRD resources to it). Clients make up
    /// the Status themselves: client-go "the server could not find the requested resource", kube
    /// `Status { code: 404, message: "404 page not found", reason: "Failed to parse error data" }`.
    fn not_served() -> Reply {
        Reply {
            code: 404,
            body: b"404 page not found\n".to_vec(),
            content_type: "text/plain; charset=utf-8",
        }
    }

    fn into_response(self) -> Response<FakeBody> {
        let mut b = Response::builder()
            .status(StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(http::header::CONTENT_TYPE, self.content_type);
        if self.content_type.starts_with("text/plain") {
            b = b.header("X-Content-Type-Options", "nosniff");
        }
        b.body(FakeBody::from(self.body)).expect("valid response")
    }
}

/// Admission of writes to custom resources: (apiVersion, plural, object as validated, old object)
/// → `Err(422 message)`. [`FakeApi::new`] evaluates the CRDs' CEL rules (see `cel_admission.rs`).
pub type Admission = Arc<dyn Fn(&str, &str, &Value, Option<&Value>) -> Result<(), String> + Send + Sync>;

// The CRDs' CEL rules, as kube-apiserver evaluates them (creation, update, status update, ratcheting).
// By `#[path]` so the benchmark's `#[path]` include of this file finds it too.
#[path = "cel_admission.rs"]
pub mod cel_admission;

#[derive(Default)]
struct State {
    /// CEL admission of custom resources; `None` admits everything (the benchmark's quiet fake).
    admission: Option<Admission>,
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
    partitioned: HashSet<String>,
    /// Watch history and open watches.
    hub: watch::Hub,
    writes: Vec<Write>,
    write_seq: u64,
    hooks: Vec<WriteHook>,
    /// Collections (keys as in [`Store`]) answered 404, as when their CRD is not installed.
    uninstalled: HashSet<String>,
    delays: Vec<Delay>,
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
            s.admission = Some(Arc::new(cel_admission::admit));
        }
        api
    }

    /// Replace how custom resource writes are admitted (`None`: no CEL at all). Writes through the
    /// test helpers (`put`, `edit` ...) are never admitted: they stand for objects stored before a
    /// rule existed.
    pub fn set_admission(&self, admission: Option<Admission>) {
        self.state.lock().unwrap().admission = admission;
    }

    /// A fake for large runs: no request log, no applied-body history.
    pub fn quiet() -> Self {
        FakeApi::default()
    }

    /// Answer one HTTP request with a whole body (no watch streams: use [`service`](Self::service) or
    /// [`router`](Self::router) for those); `None` when an injected hang says never to answer.
    pub async fn respond(&self, req: Request<kube::client::Body>) -> Option<Response<Vec<u8>>> {
        let (parts, body) = req.into_parts();
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Default::default(),
        };
        let header = |h| {
            parts
                .headers
                .get(h)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (ct, accept) = (header(http::header::CONTENT_TYPE), header(http::header::ACCEPT));
        let reply = self.handle_inner(
            "",
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            &ct,
            &accept,
            &bytes,
        )?;
        Some(
            Response::builder()
                .status(StatusCode::from_u16(reply.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                .header(http::header::CONTENT_TYPE, reply.content_type)
                .body(reply.body)
                .expect("valid response"),
        )
    }

    /// The fake as a tower service (a hang is a response future that never completes).
    pub fn service(&self) -> FakeService {
        self.service_named("")
    }

    /// The fake as seen by the client called `name` (its identity, see [`partition`](Self::partition),
    /// [`stall_watches`](Self::stall_watches), [`Write::identity`]). Watches are answered with a
    /// streamed body.
    pub fn service_named(&self, name: &str) -> FakeService {
        let api = self.clone();
        let name = name.to_string();
        tower::util::BoxCloneService::new(tower::service_fn(move |req: Request<kube::client::Body>| {
            let api = api.clone();
            let name = name.clone();
            let cut_off = api.is_partitioned(&name);
            async move {
                if cut_off {
                    return std::future::pending().await;
                }
                let (parts, body) = req.into_parts();
                let bytes = match body.collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => Default::default(),
                };
                match api.dispatch(&name, parts, bytes).await {
                    Some(resp) => Ok::<_, Infallible>(resp),
                    None => std::future::pending().await,
                }
            }
        }))
    }

    /// A kube client called `name`, without timeouts of its own.
    pub fn client_named(&self, name: &str) -> kube::Client {
        kube::Client::new(self.service_named(name), "default")
    }

    /// From now on, requests of the client called `name` never get an answer, and its open watch
    /// streams deliver nothing (they stay open: a network partition). `name` is the in-process
    /// client's name or, over HTTP, the bearer token. Undone by [`heal`](Self::heal).
    pub fn partition(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        s.partitioned.insert(name.to_string());
        s.hub.set_mode(Some(name), watch::Mode::Open, watch::Mode::Held);
    }

    /// Undo [`partition`](Self::partition): new requests of `name` are answered again, and its watch
    /// streams held by the partition deliver what happened meanwhile, in order (as a TCP connection
    /// does once the network is back). Requests sent during the partition stay unanswered.
    pub fn heal(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        s.partitioned.remove(name);
        s.hub.set_mode(Some(name), watch::Mode::Held, watch::Mode::Open);
    }

    fn is_partitioned(&self, name: &str) -> bool {
        self.state.lock().unwrap().partitioned.contains(name)
    }

    /// Serve the fake over loopback HTTP (for the operator binary and the benchmark); a hang keeps
    /// the connection open without an answer.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        axum::serve(listener, self.router())
            .await
            .expect("serve the fake API");
    }

    /// The fake as an HTTP application: every path is answered by the fake (watches streamed, the
    /// rest by [`handle`](Self::handle)'s rules), the client's identity being its bearer token.
    /// Routes added to it are answered first (the benchmark's Deployment controller).
    pub fn router(self) -> axum::Router {
        axum::Router::new().fallback(move |req: axum::extract::Request| {
            let api = self.clone();
            async move {
                let (parts, body) = req.into_parts();
                let identity = parts
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if api.is_partitioned(&identity) {
                    return std::future::pending::<Response<FakeBody>>().await;
                }
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                match api.dispatch(&identity, parts, bytes).await {
                    Some(resp) => resp,
                    None => std::future::pending().await,
                }
            }
        })
    }

    /// A kube client talking to this fake (no timeouts of its own).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.service(), "default")
    }

    /// Answer one request of `identity` ("" for none), watches included; `None`: never answer.
    async fn dispatch(
        &self,
        identity: &str,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Option<Response<FakeBody>> {
        let header = |h| {
            parts
                .headers
                .get(h)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (ct, accept) = (header(http::header::CONTENT_TYPE), header(http::header::ACCEPT));
        let path = parts.uri.path();
        let query = parts.uri.query();
        let delay = self.state.lock().unwrap().take_delay(path, query);
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if parts.method == Method::GET && query_param(query, "watch").is_some_and(watch::is_true) {
            return self.watch(identity, path, query, &accept);
        }
        self.handle_inner(identity, &parts.method, path, query, &ct, &accept, &body)
            .map(Reply::into_response)
    }

    /// Answer one request: (status code, body; JSON but for a kind that is not served), or `None`
    /// for an injected hang. Watches are refused here (405): they are streamed by
    /// [`service`](Self::service) and [`router`](Self::router).
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Option<(u16, Vec<u8>)> {
        self.handle_inner("", method, path, query, content_type, "", body)
            .map(|r| (r.code, r.body))
    }

    /// [`handle`](Self::handle) for the client `identity`, with the request's `Accept` header
    /// (metadata-only answers). Records writes and calls the write hooks after the state lock is
    /// released.
    #[allow(clippy::too_many_arguments)]
    fn handle_inner(
        &self,
        identity: &str,
        method: &Method,
        path: &str,
        query: Option<&str>,
        content_type: &str,
        accept: &str,
        body: &[u8],
    ) -> Option<Reply> {
        let mut s = self.state.lock().unwrap();
        let manager = query_param(query, "fieldManager").map(str::to_string);
        let fault = s.take_fault(method, path);
        let (reply, stored) = match fault {
            Some(Fault { status: None, .. }) => {
                if s.record {
                    s.log.push(Logged {
                        method: method.clone(),
                        path: path.to_string(),
                        field_manager: manager.clone(),
                        status: 0,
                    });
                }
                let hooked = s.record_write(identity, method, path, body, manager, 0, None);
                drop(s);
                self.run_hooks(hooked);
                return None;
            }
            Some(Fault {
                status: Some(code),
                message,
                ..
            }) => (
                Reply::json(code, &status_body(code, reason_for(code), &message)),
                None,
            ),
            None if s.is_uninstalled(path) => (Reply::not_served(), None),
            None => {
                let (code, value) = s.handle(method, path, query, content_type, body, manager.as_deref());
                let is_write = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
                let stored = (is_write && code < 300).then(|| value.clone());
                let value = if code < 300 && accept.contains("as=PartialObjectMetadata") {
                    watch::partial_metadata(&value)
                } else {
                    value
                };
                (Reply::json(code, &value), stored)
            }
        };
        if s.record {
            s.log.push(Logged {
                method: method.clone(),
                path: path.to_string(),
                field_manager: manager.clone(),
                status: reply.code,
            });
        }
        let hooked = s.record_write(identity, method, path, body, manager, reply.code, stored);
        drop(s);
        self.run_hooks(hooked);
        Some(reply)
    }

    fn run_hooks(&self, hooked: Option<(Write, Vec<WriteHook>)>) {
        if let Some((w, hooks)) = hooked {
            for h in hooks {
                h(&w, self);
            }
        }
    }

    /// Open a watch: a 200 with a streamed body of watch events (see [`watch`]), or the error the API
    /// server gives before streaming.
    fn watch(
        &self,
        identity: &str,
        path: &str,
        query: Option<&str>,
        accept: &str,
    ) -> Option<Response<FakeBody>> {
        let mut s = self.state.lock().unwrap();
        let fault = s.take_fault(&Method::GET, path);
        let early = match fault {
            Some(Fault { status: None, .. }) => {
                if s.record {
                    s.log.push(Logged {
                        method: Method::GET,
                        path: path.to_string(),
                        field_manager: None,
                        status: 0,
                    });
                }
                return None;
            }
            Some(Fault {
                status: Some(code),
                message,
                ..
            }) => Some(Reply::json(code, &status_body(code, reason_for(code), &message))),
            None if s.is_uninstalled(path) => Some(Reply::not_served()),
            None => None,
        };
        let opened = match early {
            Some(r) => Err(r),
            None => match parse_path(path) {
                None => Err(Reply::json(404, &status_body(404, "NotFound", "unknown path"))),
                Some(t) => match watch::WatchRequest::parse(&t, query, accept) {
                    Err((code, msg)) => Err(Reply::json(code, &status_body(code, reason_for(code), &msg))),
                    Ok(req) => {
                        let rv = s.rv;
                        Ok(s.hub.open(&t, identity, req, rv))
                    }
                },
            },
        };
        if s.record {
            s.log.push(Logged {
                method: Method::GET,
                path: path.to_string(),
                field_manager: None,
                status: match &opened {
                    Ok(_) => 200,
                    Err(r) => r.code,
                },
            });
        }
        drop(s);
        match opened {
            Err(reply) => Some(reply.into_response()),
            Ok(opened) => {
                let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
                tokio::spawn(watch::pump(self.clone(), opened, tx));
                let body = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<Bytes, Infallible>(b), rx))
                });
                Some(
                    Response::builder()
                        .status(StatusCode::OK)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(FakeBody::from_stream(body))
                        .expect("valid response"),
                )
            }
        }
    }

    // ---- misbehaviour on demand ----

    /// End every open watch stream now, cleanly, as a restarted API server or load balancer does:
    /// each client watches again from the last resourceVersion it saw.
    pub fn cut_watches(&self) {
        self.state.lock().unwrap().hub.cut(|_, _| true);
    }

    /// Every watch stream open now (of the client `identity`, or of all clients) stops delivering
    /// anything, bookmarks included, but stays open: a silently dropped, half-open connection. The
    /// client only notices by its own idle timeout (kube-runtime's watcher: `timeoutSeconds` + 5 s).
    /// Watches opened afterwards work. [`cut_watches`](Self::cut_watches) ends stalled streams too.
    pub fn stall_watches(&self, identity: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        s.hub.set_mode(identity, watch::Mode::Open, watch::Mode::Dead);
        s.hub.set_mode(identity, watch::Mode::Held, watch::Mode::Dead);
    }

    /// An etcd compaction and watch-cache eviction at the current resourceVersion: all watch history
    /// is dropped, so a watch from any older resourceVersion gets `410 Expired` ("too old resource
    /// version"), and every continue token issued so far expires (as
    /// [`expire_continue_tokens`](Self::expire_continue_tokens)). Open watches go on.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        let rv = s.rv;
        s.hub.compact(rv);
        s.compacted_rv = rv + 1;
    }

    /// Bookmarks are sent to watches that allow them every `interval` (the API server: about every
    /// minute, and once before the watch's timeout; the fake's default is 1 s so tests see them).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.state.lock().unwrap().hub.bookmark_interval = interval;
    }

    /// Watch history kept per collection (the watch cache's capacity; the API server sizes it
    /// dynamically, up to 100 * 1024 events, `defaultUpperBoundCapacity` in k8s.io/apiserver
    /// pkg/storage/cacher/watch_cache.go, which is the default here). Older events are dropped and a
    /// watch from before them gets 410.
    pub fn set_watch_history_capacity(&self, events: usize) {
        let mut s = self.state.lock().unwrap();
        s.hub.capacity = events.max(1);
        s.hub.trim_all();
    }

    /// The next `times` requests (any method, watches included) whose `path?query` contains
    /// `path_contains` are answered only after `delay` (a slow LIST: caches fill slowly).
    pub fn delay_requests(&self, path_contains: &str, delay: Duration, times: usize) {
        self.state.lock().unwrap().delays.push(Delay {
            path_contains: path_contains.to_string(),
            delay,
            remaining: times,
        });
    }

    /// Every path of `K`'s collection answers 404 (see `Reply::not_served`), LISTs and watches
    /// included, as when its CRD is not installed; open watches of it end. Stored objects are kept
    /// (hidden) and served again by [`install`](Self::install).
    pub fn uninstall<K: Resource<DynamicType = ()>>(&self) {
        let key = Self::key_of::<K>();
        let mut s = self.state.lock().unwrap();
        s.hub.cut(|coll, _| coll == key);
        s.uninstalled.insert(key);
    }

    /// Serve `K`'s collection again (the CRD appears).
    pub fn install<K: Resource<DynamicType = ()>>(&self) {
        self.state
            .lock()
            .unwrap()
            .uninstalled
            .remove(&Self::key_of::<K>());
    }

    /// Every write so far (see [`Write`]), oldest first. Empty for [`quiet`](Self::quiet) fakes.
    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    /// Call `f` after every write request is handled (stored or refused), synchronously, before the
    /// client gets its answer. It is called without the fake's lock held, so it may call any method
    /// of the `&FakeApi` it gets (writes through [`handle`](Self::handle) call the hooks again).
    /// Concurrent requests may call hooks concurrently, not necessarily in `seq` order. The test
    /// helpers' writes (`put`, `edit`, `delete` ...) are not requests and are not recorded.
    pub fn on_write(&self, f: WriteHook) {
        self.state.lock().unwrap().hooks.push(f);
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.lock().unwrap().rv
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
        s.store(&key, &ns, &name, v.clone());
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
        let key = Self::key_of::<K>();
        let mut obj = s
            .objects
            .get(&key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .expect("object to edit exists");
        let old = obj.clone();
        let before = without_meta_and_status(&obj);
        f(&mut obj);
        if without_meta_and_status(&obj) != before {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        ssa::record_update(Some(&old), &mut obj, manager, false);
        let mut old_with_main = old;
        old_with_main["metadata"]["managedFields"] = obj["metadata"]["managedFields"].clone();
        ssa::record_update(Some(&old_with_main), &mut obj, manager, true);
        obj["metadata"]["resourceVersion"] = json!(rv);
        s.store(&key, ns, name, obj);
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
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) if code < 300 => Ok(v),
            Ok(v) => Err((code, v["message"].as_str().unwrap_or("").to_string())),
            // Not JSON: a kind that is not served (see `uninstall`).
            Err(_) => Err((code, String::from_utf8_lossy(&body).trim().to_string())),
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

    /// Delete a stored object, as another client would (watches see it go); the object as it was.
    pub fn remove<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str) -> Option<Value> {
        self.state.lock().unwrap().delete(&Self::key_of::<K>(), ns, name)
    }

    /// Same as [`remove`](Self::remove) (`kubectl delete`, immediate: no finalizers).
    pub fn delete<K: Resource<DynamicType = ()>>(&self, ns: &str, name: &str) -> Option<Value> {
        self.remove::<K>(ns, name)
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
        let mut orphans = Vec::new();
        for (coll, m) in &s.objects {
            for ((ns, name), v) in m {
                let owners = v["metadata"]["ownerReferences"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let orphan = !owners.is_empty()
                    && owners
                        .iter()
                        .all(|o| !uids.contains(o["uid"].as_str().unwrap_or("")));
                if orphan {
                    orphans.push((coll.clone(), ns.clone(), name.clone()));
                }
            }
        }
        for (coll, ns, name) in &orphans {
            s.delete(coll, ns, name);
        }
        orphans.len()
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

    /// Store `v` (stamped) as `coll`'s `(ns, name)`; the write goes to the watch history and to the
    /// open watches.
    fn store(&mut self, coll: &str, ns: &str, name: &str, v: Value) {
        let rv = v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or(self.rv);
        let key = (ns.to_string(), name.to_string());
        let m = self.objects.entry(coll.to_string()).or_default();
        let existed = m.insert(key.clone(), v).is_some();
        let typ = if existed {
            watch::EventType::Modified
        } else {
            watch::EventType::Added
        };
        let stored = &m[&key];
        self.hub.record(coll, typ, ns, name, stored, rv);
    }

    /// Delete `coll`'s `(ns, name)` at a new resourceVersion; the object as it was (the DELETED watch
    /// event carries it with the deletion's resourceVersion, as etcd3's watcher and the watch cache
    /// send it).
    fn delete(&mut self, coll: &str, ns: &str, name: &str) -> Option<Value> {
        let v = self
            .objects
            .get_mut(coll)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let mut gone = v.clone();
        gone["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.hub
            .record(coll, watch::EventType::Deleted, ns, name, &gone, self.rv);
        Some(v)
    }

    fn take_delay(&mut self, path: &str, query: Option<&str>) -> Option<Duration> {
        let full = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let d = self
            .delays
            .iter_mut()
            .find(|d| d.remaining > 0 && full.contains(&d.path_contains))?;
        d.remaining -= 1;
        Some(d.delay)
    }

    fn is_uninstalled(&self, path: &str) -> bool {
        !self.uninstalled.is_empty()
            && parse_path(path).is_some_and(|t| self.uninstalled.contains(&t.collection))
    }

    /// Record a write request (nothing for reads); the write and the hooks to call with it.
    #[allow(clippy::too_many_arguments)]
    fn record_write(
        &mut self,
        identity: &str,
        method: &Method,
        path: &str,
        body: &[u8],
        field_manager: Option<String>,
        status: u16,
        object: Option<Value>,
    ) -> Option<(Write, Vec<WriteHook>)> {
        if !matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            return None;
        }
        self.write_seq += 1;
        if !self.record && self.hooks.is_empty() {
            return None;
        }
        let t = parse_path(path);
        let name = match t.as_ref().and_then(|t| t.name.clone()) {
            Some(n) => n,
            None => serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v["metadata"]["name"].as_str().map(str::to_string))
                .unwrap_or_default(),
        };
        let w = Write {
            seq: self.write_seq,
            identity: (!identity.is_empty()).then(|| identity.to_string()),
            field_manager,
            method: method.clone(),
            plural: t.as_ref().map(|t| t.plural.clone()).unwrap_or_default(),
            namespace: t.as_ref().and_then(|t| t.namespace.clone()),
            name,
            subresource: t.as_ref().and_then(|t| t.subresource.clone()),
            status,
            resource_version: self.rv,
            object,
        };
        if self.record {
            self.writes.push(w.clone());
        }
        Some((w, self.hooks.clone()))
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
    /// CEL admission of a write to a custom resource: the object as the real strategy validates it
    /// (`status_update` keeps the stored object and takes the request's status; an update of the
    /// main resource keeps the stored status), against the stored one.
    fn admit(&self, t: &Target, obj: &Value, old: Option<&Value>, status_sub: bool) -> Option<(u16, Value)> {
        let admission = self.admission.as_ref()?;
        let new = match old {
            Some(o) if status_sub => cel_admission::status_update(o, obj),
            Some(o) => cel_admission::main_update(o, obj),
            None => obj.clone(),
        };
        admission(&t.api_version, &t.plural, &new, old)
            .err()
            .map(|msg| (422, status_body(422, "Invalid", &msg)))
    }

    fn invalid(t: &Target, obj: &Value) -> Option<(u16, Value)> {
        let errs: Vec<(String, String)> = names::validate(&t.plural, obj)
            .into_iter()
            .map(|e| match e.split_once(": ") {
                Some((field, body)) => (field.to_string(), body.to_string()),
                None => (String::new(), e),
            })
            .collect();
        Self::invalid_status(t, obj, errs)
    }

    /// 422 for an update the API server would refuse: names and labels, and immutable fields
    /// (see [`immutable`]); the status subresource only checks names and labels.
    fn invalid_update(t: &Target, old: &Value, obj: &Value, status_sub: bool) -> Option<(u16, Value)> {
        let mut errs: Vec<(String, String)> = names::validate(&t.plural, obj)
            .into_iter()
            .map(|e| match e.split_once(": ") {
                Some((field, body)) => (field.to_string(), body.to_string()),
                None => (String::new(), e),
            })
            .collect();
        if !status_sub {
            errs.extend(immutable::check(&t.plural, old, obj));
        }
        Self::invalid_status(t, obj, errs)
    }

    /// The API server's 422 Invalid Status for `errs` ((field, error body) pairs), as
    /// k8s.io/apimachinery pkg/api/errors/errors.go `NewInvalid` builds it: message `<Kind>[.<group>]
    /// "<name>" is invalid: <field>: <body>` (several errors in `[..., ...]`), `details.causes` one
    /// per error (`FieldValueInvalid`).
    fn invalid_status(t: &Target, obj: &Value, errs: Vec<(String, String)>) -> Option<(u16, Value)> {
        if errs.is_empty() {
            return None;
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let kind = names::kind_of(&t.plural);
        let group = t.api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list: Vec<String> = errs
            .iter()
            .map(|(f, b)| {
                if f.is_empty() {
                    b.clone()
                } else {
                    format!("{f}: {b}")
                }
            })
            .collect();
        let msg = format!(
            "{qualified} \"{name}\" is invalid: {}",
            if list.len() == 1 {
                list[0].clone()
            } else {
                format!("[{}]", list.join(", "))
            }
        );
        let mut st = status_body(422, "Invalid", &msg);
        let causes: Vec<Value> = errs
            .iter()
            .map(|(f, b)| json!({"reason": "FieldValueInvalid", "message": b, "field": f}))
            .collect();
        let mut details = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        st["details"] = details;
        Some((422, st))
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
        let filter = match watch::Filter::from_query(t, query) {
            Ok(f) => f,
            Err((code, msg)) => return (code, status_body(code, reason_for(code), &msg)),
        };
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
            .filter(|(k, v)| in_scope(k) && filter.matches_object(&k.0, &k.1, v));
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
            // As etcd3's store: no count when a selector filters the list.
            if filter.selects_all_in_scope() {
                metadata["remainingItemCount"] = json!(remaining);
            }
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
                if let Some(err) = self.admit(&t, &v, None, false) {
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
                self.store(&t.collection, &ns, &name, v.clone());
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
                apply_defaults(&t.plural, &mut v);
                if !status_sub {
                    immutable::keep_allocated(&t.plural, &existing, &mut v);
                }
                if let Some(err) = Self::invalid_update(&t, &existing, &v, status_sub) {
                    return err;
                }
                if let Some(err) = self.admit(&t, &v, Some(&existing), status_sub) {
                    return err;
                }
                ssa::record_update(Some(&existing), &mut v, updater, false);
                if without_meta_and_status(&v) != without_meta_and_status(&existing) {
                    let g = existing["metadata"]["generation"].as_i64().unwrap_or(1);
                    self.stamp(&mut v, Some(&existing));
                    v["metadata"]["generation"] = json!(g + 1);
                } else {
                    self.stamp(&mut v, Some(&existing));
                }
                self.store(&t.collection, &ns, &name, v.clone());
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
                // A resourceVersion in a patch (apply included) is a precondition: the update is
                // refused with a conflict when the object changed since (k8s.io/apiserver
                // pkg/endpoints/handlers/patch.go: the patched object keeps the sent resourceVersion,
                // and the storage's GuaranteedUpdate compares it).
                if let (Some(sent), Some(e)) = (
                    patch.pointer("/metadata/resourceVersion").and_then(Value::as_str),
                    existing.as_ref(),
                ) && !sent.is_empty()
                    && Some(sent) != e["metadata"]["resourceVersion"].as_str()
                {
                    let msg = format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        t.plural
                    );
                    return (409, status_body(409, "Conflict", &msg));
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
                let invalid = match &existing {
                    Some(e) => {
                        if !status_sub {
                            immutable::keep_allocated(&t.plural, e, &mut obj);
                        }
                        Self::invalid_update(&t, e, &obj, status_sub)
                    }
                    None => Self::invalid(&t, &obj),
                };
                if let Some(err) = invalid {
                    return err;
                }
                if let Some(err) = self.admit(&t, &obj, existing.as_ref(), status_sub) {
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
                self.store(&t.collection, &ns, &name, obj.clone());
                (if existing.is_some() { 200 } else { 201 }, obj)
            }
            (Method::DELETE, Some(name)) => {
                // DeleteOptions.preconditions (k8s.io/apiserver pkg/registry/generic/registry/store.go,
                // Delete → checkPreconditions; apimachinery meta/v1 Preconditions).
                let pre = parsed.as_ref().and_then(|b| b.get("preconditions"));
                if let (Some(pre), Some(existing)) = (pre, self.get_obj(&t, &ns, &name)) {
                    for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                        if let Some(want) = pre.get(field).and_then(Value::as_str) {
                            let have = existing["metadata"][field].as_str().unwrap_or("");
                            if want != have {
                                let msg = format!(
                                    "Operation cannot be fulfilled on {}: Precondition failed: {what} in precondition: {want}, {what} in object meta: {have}",
                                    t.plural
                                );
                                return (409, status_body(409, "Conflict", &msg));
                            }
                        }
                    }
                }
                match self.delete(&t.collection, &ns, &name) {
                    Some(v) => (200, v),
                    None => not_found(&name),
                }
            }
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
            "lumenorefleetrollouts" => "LumenoreFleetRollout",
            "configmaps" => "ConfigMap",
            "pods" => "Pod",
            "namespaces" => "Namespace",
            "replicasets" => "ReplicaSet",
            "customresourcedefinitions" => "CustomResourceDefinition",
            _ => "Object",
        }
    }
}

/// Immutable fields of the kinds the operator writes: an update (PUT, merge patch, apply) that
/// changes one is refused with 422 Invalid, worded as the API server words it. Bad values are
/// rendered as `field.Error.ErrorBody` does (JSON, k8s.io/apimachinery
/// pkg/util/validation/field/errors.go).
///
/// - Deployment `spec.selector` (apps/v1): k8s.io/kubernetes pkg/registry/apps/deployment/strategy.go
///   `ValidateUpdate` appends `ValidateImmutableField(new.Spec.Selector, old.Spec.Selector,
///   spec.selector)`: `spec.selector: Invalid value: {"matchLabels":{...}}: field is immutable`
///   (apimachinery's `FieldImmutableErrorMsg`). Compared as `Semantic.DeepEqual` does: empty and
///   absent `matchLabels`/`matchExpressions` are equal.
/// - Service cluster IP (once allocated): pkg/apis/core/validation/validation.go
///   `ValidateServiceUpdate` -> `validateUpgradeDowngradeClusterIPs`: `spec.clusterIPs[0]: Invalid
///   value: ["10.0.0.2"]: may not change once set`. Before validating, the Service registry
///   (pkg/registry/core/service/storage/storage.go, `patchAllocatedValues`, `normalizeClusterIPs`)
///   keeps the allocated IP when the update leaves `clusterIP` out, and a changed `clusterIP` with
///   unchanged `clusterIPs` is read as `clusterIPs: [clusterIP]`. ExternalName Services and headless
///   to headless are exempt. The fake allocates no cluster IP itself: the rule applies once a
///   client (a test) has set one.
pub mod immutable {
    use serde_json::Value;

    fn is_external_name(svc: &Value) -> bool {
        svc["spec"]["type"] == "ExternalName"
    }

    fn strings(v: &Value) -> Option<Vec<String>> {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
    }

    /// The Service's cluster IPs: `clusterIPs`, else `[clusterIP]`.
    fn cluster_ips(svc: &Value) -> Vec<String> {
        if let Some(ips) = strings(&svc["spec"]["clusterIPs"]).filter(|a| !a.is_empty()) {
            return ips;
        }
        match svc["spec"]["clusterIP"].as_str() {
            Some(ip) if !ip.is_empty() => vec![ip.to_string()],
            _ => Vec::new(),
        }
    }

    /// The registry's update preparation: allocated values the update leaves out are kept.
    pub fn keep_allocated(plural: &str, old: &Value, new: &mut Value) {
        if plural != "services" || is_external_name(old) || is_external_name(new) {
            return;
        }
        let old_ip = old["spec"]["clusterIP"].as_str().unwrap_or("");
        if old_ip.is_empty() {
            return;
        }
        let new_ip = new["spec"]["clusterIP"].as_str().unwrap_or("");
        let new_ips = strings(&new["spec"]["clusterIPs"]).unwrap_or_default();
        if new_ip.is_empty() && new_ips.is_empty() {
            new["spec"]["clusterIP"] = Value::String(old_ip.to_string());
            if !old["spec"]["clusterIPs"].is_null() {
                new["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
            }
        }
    }

    /// The cluster IPs the update asks for, after `normalizeClusterIPs`.
    fn requested_ips(old: &Value, new: &Value) -> Vec<String> {
        let old_ip = old["spec"]["clusterIP"].as_str().unwrap_or("");
        let new_ip = new["spec"]["clusterIP"].as_str().unwrap_or("");
        let old_ips = strings(&old["spec"]["clusterIPs"]).unwrap_or_default();
        let new_ips = strings(&new["spec"]["clusterIPs"]).unwrap_or_default();
        if new_ip != old_ip && !new_ip.is_empty() && (new_ips.is_empty() || new_ips == old_ips) {
            return vec![new_ip.to_string()];
        }
        if new_ips.is_empty() && new_ip == old_ip && !old_ips.is_empty() {
            return old_ips;
        }
        cluster_ips(new)
    }

    fn go_string(s: &str) -> String {
        Value::String(s.to_string()).to_string()
    }

    fn go_strings(a: &[String]) -> String {
        format!(
            "[{}]",
            a.iter().map(|s| go_string(s)).collect::<Vec<_>>().join(",")
        )
    }

    /// A `metav1.LabelSelector` as Go's `json.Marshal` writes it: fields in declaration order
    /// (`matchLabels`, `matchExpressions`), map keys sorted, empty fields omitted.
    pub fn go_json_selector(sel: &Value) -> String {
        if sel.is_null() {
            return "null".into();
        }
        let mut parts = Vec::new();
        if let Some(ml) = sel["matchLabels"].as_object().filter(|m| !m.is_empty()) {
            let mut kv: Vec<(&String, &Value)> = ml.iter().collect();
            kv.sort_by(|a, b| a.0.cmp(b.0));
            let inner: Vec<String> = kv
                .iter()
                .map(|(k, v)| format!("{}:{}", go_string(k), go_string(v.as_str().unwrap_or(""))))
                .collect();
            parts.push(format!("\"matchLabels\":{{{}}}", inner.join(",")));
        }
        if let Some(me) = sel["matchExpressions"].as_array().filter(|a| !a.is_empty()) {
            let items: Vec<String> = me
                .iter()
                .map(|r| {
                    let mut f = vec![
                        format!("\"key\":{}", go_string(r["key"].as_str().unwrap_or(""))),
                        format!("\"operator\":{}", go_string(r["operator"].as_str().unwrap_or(""))),
                    ];
                    if let Some(vals) = strings(&r["values"]).filter(|v| !v.is_empty()) {
                        f.push(format!("\"values\":{}", go_strings(&vals)));
                    }
                    format!("{{{}}}", f.join(","))
                })
                .collect();
            parts.push(format!("\"matchExpressions\":[{}]", items.join(",")));
        }
        format!("{{{}}}", parts.join(","))
    }

    /// `Semantic.DeepEqual` of two selectors: empty and absent fields are equal.
    fn normalized_selector(sel: &Value) -> Value {
        let mut s = sel.clone();
        if let Some(m) = s.as_object_mut() {
            m.retain(|k, v| {
                !(matches!(k.as_str(), "matchLabels" | "matchExpressions")
                    && (v.is_null()
                        || v.as_object().is_some_and(|o| o.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty())))
            });
        }
        s
    }

    /// The immutable-field errors of updating `old` to `new`: (field, error body) pairs.
    pub fn check(plural: &str, old: &Value, new: &Value) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        match plural {
            "deployments" => {
                let (o, n) = (&old["spec"]["selector"], &new["spec"]["selector"]);
                if normalized_selector(o) != normalized_selector(n) {
                    errs.push((
                        "spec.selector".to_string(),
                        format!("Invalid value: {}: field is immutable", go_json_selector(n)),
                    ));
                }
            }
            "services" => {
                if is_external_name(old) || is_external_name(new) {
                    return errs;
                }
                let old_ips = cluster_ips(old);
                let new_ips = requested_ips(old, new);
                let headless = |ips: &[String]| ips.len() == 1 && ips[0] == "None";
                if old_ips.is_empty() || (headless(&old_ips) && headless(&new_ips)) {
                    return errs;
                }
                if new_ips.is_empty() {
                    errs.push((
                        "spec.clusterIPs[0]".to_string(),
                        "Invalid value: null: primary clusterIP can not be unset".to_string(),
                    ));
                } else if old_ips[0] != new_ips[0] {
                    errs.push((
                        "spec.clusterIPs[0]".to_string(),
                        format!("Invalid value: {}: may not change once set", go_strings(&new_ips)),
                    ));
                }
            }
            _ => {}
        }
        errs
    }
}

/// Watches, as the API server serves them from its watch cache.
///
/// Every write (create, update, patch, status, delete; the test helpers' writes included) appends an
/// event to its collection's history: ADDED, MODIFIED or DELETED, the object as stored after the
/// write, at the global resourceVersion of the write (a DELETED event carries the deleted object at
/// the deletion's resourceVersion). `GET <collection>?watch=true` answers 200 with a streamed body of
/// newline-delimited `{"type":...,"object":...}` events (k8s.io/apiserver
/// pkg/endpoints/handlers/watch.go: one JSON-framed `metav1.WatchEvent` per line, flushed per
/// event), where the resourceVersion asks for (k8s.io/apiserver pkg/storage/cacher/watch_cache.go
/// `getAllEventsSinceLocked`, watch_cache_history.go `GetIntervalLocked`):
///
/// - `resourceVersion=N` (N > 0): the history events after N, in order, then live events. N older
///   than the history (after [`FakeApi::compact`], or beyond the history capacity) is answered with
///   one ERROR event, a Status `410 Expired` "too old resource version: N (M)", M being the last
///   resourceVersion dropped, and the stream closes (cacher.go answers a watch it cannot serve with
///   `newErrWatcher`, i.e. an event, not an HTTP error). N beyond the current resourceVersion gets
///   the ERROR "Too large resource version: N, current: M" (504 Timeout, k8s.io/apiserver
///   pkg/storage/errors.go), without the API server's 3 s wait for its cache to catch up.
/// - absent or `0`: synthetic ADDED events for every current object, then live events;
///   with `sendInitialEvents=false`: live events only.
/// - `sendInitialEvents=true` (streaming lists, kube's `Config::streaming_lists`): ADDED for every
///   current object, then a BOOKMARK annotated `k8s.io/initial-events-end: "true"` at the current
///   resourceVersion (when bookmarks are allowed), then live events.
///
/// Events are filtered by the path's namespace, `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`,
/// `k in (a,b)`, `k notin (a,b)`) and `fieldSelector` (`metadata.name`, `metadata.namespace`; `=`,
/// `==`, `!=`; any other field is a 400 "field label not supported"). An update that makes an object
/// match (stop matching) the selector is sent as ADDED (DELETED, with the previous object at the
/// event's resourceVersion), as cache_watcher.go `convertToWatchEvent` does. With
/// `Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1` (kube's `watch_metadata`,
/// `metadata_watcher`) objects are `PartialObjectMetadata` (only `metadata`), as are GETs and LISTs
/// with that Accept header (`PartialObjectMetadataList`).
///
/// `allowWatchBookmarks=true`: a BOOKMARK (`{"kind":K,"apiVersion":V,"metadata":{"resourceVersion":R}}`)
/// every [`FakeApi::set_bookmark_interval`] (1 s by default; the API server sends them about every
/// minute, `defaultBookmarkFrequency` in cacher.go, and right before the watch's deadline, which the
/// fake also does). A bookmark's R covers every event delivered before it. `timeoutSeconds` ends the
/// stream cleanly after that long (absent: 1800 s, the API server's `minRequestTimeout`).
///
/// Not modelled: the watch cache lagging behind etcd, `resourceVersionMatch` validation (the API
/// server requires `NotOlderThan` and bookmarks with `sendInitialEvents`), progress-notify
/// bookmarks, per-watcher buffer overflow (the API server closes a watcher that falls too far
/// behind), protobuf and gzip.
pub mod watch {
    use std::borrow::Cow;
    use std::collections::{BTreeMap, HashMap, VecDeque};
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Bytes;
    use serde_json::{Value, json};
    use tokio::sync::mpsc;

    use super::{FakeApi, Target};

    pub type Labels = BTreeMap<String, String>;

    /// A watch without `timeoutSeconds` lasts the API server's `minRequestTimeout` (1800 s; it
    /// randomizes up to twice that).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

    /// Go's `strconv.ParseBool` true values.
    pub fn is_true(v: &str) -> bool {
        matches!(v, "true" | "1" | "t" | "T" | "TRUE" | "True")
    }

    /// A query parameter, percent-decoded.
    pub fn decoded(query: Option<&str>, key: &str) -> Option<String> {
        url::form_urlencoded::parse(query?.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    pub fn labels_of(obj: &Value) -> Labels {
        obj["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An object (or a list of them) as `PartialObjectMetadata` (`PartialObjectMetadataList`).
    pub fn partial_metadata(v: &Value) -> Value {
        fn one(v: &Value) -> Value {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v["metadata"]})
        }
        match v["items"].as_array() {
            Some(items) => json!({
                "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": v["metadata"], "items": items.iter().map(one).collect::<Vec<_>>(),
            }),
            None => one(v),
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum EventType {
        Added,
        Modified,
        Deleted,
    }

    /// One write in a collection's history.
    pub struct HistEvent {
        pub rv: u64,
        pub typ: EventType,
        pub ns: String,
        pub name: String,
        /// The object after the write, serialized (shared with the next event's `prev`).
        pub obj: Arc<str>,
        pub labels: Arc<Labels>,
        /// The object before the write.
        pub prev: Option<(Arc<str>, Arc<Labels>)>,
    }

    /// What an open watch stream does.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Mode {
        /// Delivers events.
        Open,
        /// Delivers nothing for now, keeps what happens ([`FakeApi::partition`]).
        Held,
        /// Delivers nothing ever, stays open ([`FakeApi::stall_watches`]).
        Dead,
        /// Ends ([`FakeApi::cut_watches`]).
        Cut,
    }

    struct Watcher {
        identity: String,
        tx: mpsc::UnboundedSender<Arc<HistEvent>>,
        mode: tokio::sync::watch::Sender<Mode>,
    }

    #[derive(Default)]
    struct Collection {
        events: VecDeque<Arc<HistEvent>>,
        /// A watch from a resourceVersion before this one is too old.
        floor: u64,
        /// Every current object, serialized.
        latest: BTreeMap<(String, String), (Arc<str>, Arc<Labels>)>,
        watchers: Vec<Watcher>,
        kind: String,
        api_version: String,
    }

    impl Collection {
        fn trim(&mut self, capacity: usize) {
            while self.events.len() > capacity {
                if let Some(e) = self.events.pop_front() {
                    self.floor = self.floor.max(e.rv);
                }
            }
        }
    }

    /// Watch history of every collection, and the open watches.
    pub struct Hub {
        colls: HashMap<String, Collection>,
        /// Compacted up to here (every collection).
        floor: u64,
        pub capacity: usize,
        pub bookmark_interval: Duration,
    }

    impl Default for Hub {
        fn default() -> Self {
            Hub {
                colls: HashMap::new(),
                floor: 0,
                capacity: 100 * 1024,
                bookmark_interval: Duration::from_secs(1),
            }
        }
    }

    impl Hub {
        /// A write of `obj` at `rv`: into the history, and to every open watch of `coll`.
        pub fn record(&mut self, coll: &str, typ: EventType, ns: &str, name: &str, obj: &Value, rv: u64) {
            let text: Arc<str> = Arc::from(serde_json::to_string(obj).unwrap_or_default());
            let labels = Arc::new(labels_of(obj));
            let capacity = self.capacity;
            let c = self.colls.entry(coll.to_string()).or_default();
            if let Some(k) = obj["kind"].as_str().filter(|k| !k.is_empty() && *k != c.kind) {
                c.kind = k.to_string();
            }
            if let Some(v) = obj["apiVersion"]
                .as_str()
                .filter(|v| !v.is_empty() && *v != c.api_version)
            {
                c.api_version = v.to_string();
            }
            let key = (ns.to_string(), name.to_string());
            let prev = if typ == EventType::Deleted {
                c.latest.remove(&key)
            } else {
                c.latest.insert(key, (text.clone(), labels.clone()))
            };
            let ev = Arc::new(HistEvent {
                rv,
                typ,
                ns: ns.to_string(),
                name: name.to_string(),
                obj: text,
                labels,
                prev,
            });
            c.events.push_back(ev.clone());
            c.trim(capacity);
            c.watchers.retain(|w| !w.tx.is_closed());
            for w in &c.watchers {
                if *w.mode.borrow() != Mode::Dead {
                    let _ = w.tx.send(ev.clone());
                }
            }
        }

        /// Drop all history up to `rv` (a compaction).
        pub fn compact(&mut self, rv: u64) {
            self.floor = self.floor.max(rv);
            for c in self.colls.values_mut() {
                c.events.clear();
                c.floor = c.floor.max(rv);
            }
        }

        pub fn trim_all(&mut self) {
            let capacity = self.capacity;
            for c in self.colls.values_mut() {
                c.trim(capacity);
            }
        }

        /// Watches of `identity` (all with `None`) in mode `from` go to mode `to`.
        pub fn set_mode(&mut self, identity: Option<&str>, from: Mode, to: Mode) {
            for c in self.colls.values_mut() {
                for w in &c.watchers {
                    if identity.is_none_or(|i| i == w.identity) && *w.mode.borrow() == from {
                        w.mode.send_replace(to);
                    }
                }
            }
        }

        /// End the watches `(collection, identity)` selects.
        pub fn cut(&mut self, select: impl Fn(&str, &str) -> bool) {
            for (coll, c) in self.colls.iter_mut() {
                c.watchers.retain(|w| {
                    if select(coll, &w.identity) {
                        w.mode.send_replace(Mode::Cut);
                        false
                    } else {
                        true
                    }
                });
            }
        }

        /// Open a watch on `t` for `identity` at the current resourceVersion `current`.
        pub(super) fn open(&mut self, t: &Target, identity: &str, req: WatchRequest, current: u64) -> Opened {
            let global_floor = self.floor;
            let c = self.colls.entry(t.collection.clone()).or_default();
            let spec = Spec {
                kind: if c.kind.is_empty() {
                    super::names::kind_of(&t.plural).to_string()
                } else {
                    c.kind.clone()
                },
                api_version: if c.api_version.is_empty() {
                    t.api_version.clone()
                } else {
                    c.api_version.clone()
                },
                filter: req.filter,
                meta_only: req.meta_only,
                bookmarks: req.bookmarks,
                timeout: req.timeout,
            };
            let mut opened = Opened {
                spec,
                error: None,
                initial: Vec::new(),
                initial_end: None,
                ev_rx: None,
                mode_rx: None,
            };
            let from_store = req.send_initial == Some(true) || (req.rv == 0 && req.send_initial.is_none());
            if from_store {
                for ((ns, name), (text, labels)) in &c.latest {
                    if opened.spec.filter.matches(ns, name, labels) {
                        opened.initial.push(Initial::Added(text.clone()));
                    }
                }
                if req.send_initial == Some(true) && req.bookmarks {
                    opened.initial_end = Some(current);
                }
            } else if req.rv > 0 {
                let floor = c.floor.max(global_floor);
                if req.rv < floor {
                    opened.error = Some(super::status_body(
                        410,
                        "Expired",
                        &format!("too old resource version: {} ({floor})", req.rv),
                    ));
                    return opened;
                }
                if req.rv > current {
                    let mut st = super::status_body(
                        504,
                        "Timeout",
                        &format!("Too large resource version: {}, current: {current}", req.rv),
                    );
                    st["details"] = json!({
                        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                        "retryAfterSeconds": 1,
                    });
                    opened.error = Some(st);
                    return opened;
                }
                let start = c.events.partition_point(|e| e.rv <= req.rv);
                opened
                    .initial
                    .extend(c.events.range(start..).cloned().map(Initial::Event));
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let (mode_tx, mode_rx) = tokio::sync::watch::channel(Mode::Open);
            c.watchers.push(Watcher {
                identity: identity.to_string(),
                tx,
                mode: mode_tx,
            });
            opened.ev_rx = Some(rx);
            opened.mode_rx = Some(mode_rx);
            opened
        }
    }

    /// A watch request's parameters.
    pub struct WatchRequest {
        pub rv: u64,
        pub send_initial: Option<bool>,
        pub bookmarks: bool,
        pub timeout: Duration,
        pub filter: Filter,
        pub meta_only: bool,
    }

    impl WatchRequest {
        pub(super) fn parse(
            t: &Target,
            query: Option<&str>,
            accept: &str,
        ) -> Result<WatchRequest, (u16, String)> {
            let rv_s = decoded(query, "resourceVersion").unwrap_or_default();
            let rv = if rv_s.is_empty() {
                0
            } else {
                rv_s.parse::<u64>()
                    .map_err(|_| (400, format!("invalid resource version: {rv_s}")))?
            };
            let mut filter = Filter::from_query(t, query)?;
            if let Some(name) = &t.name {
                // A watch on one object's path (deprecated): a metadata.name field selector.
                filter.fields.push(FieldReq {
                    namespace: false,
                    equal: true,
                    value: name.clone(),
                });
            }
            Ok(WatchRequest {
                rv,
                send_initial: decoded(query, "sendInitialEvents").map(|v| is_true(&v)),
                bookmarks: decoded(query, "allowWatchBookmarks").is_some_and(|v| is_true(&v)),
                timeout: decoded(query, "timeoutSeconds")
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_TIMEOUT),
                filter,
                meta_only: accept.contains("as=PartialObjectMetadata"),
            })
        }
    }

    #[derive(Clone, Debug)]
    enum LabelReq {
        Eq(String, String),
        NotEq(String, String),
        In(String, Vec<String>),
        NotIn(String, Vec<String>),
        Exists(String),
        NotExists(String),
    }

    #[derive(Clone, Debug)]
    struct FieldReq {
        /// `metadata.namespace`, else `metadata.name`.
        namespace: bool,
        equal: bool,
        value: String,
    }

    /// Which objects a LIST or watch selects: namespace, label and field selectors.
    #[derive(Clone, Debug, Default)]
    pub struct Filter {
        namespace: Option<String>,
        labels: Vec<LabelReq>,
        fields: Vec<FieldReq>,
    }

    /// Split at the commas outside parentheses.
    fn split_top(s: &str) -> Vec<&str> {
        let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    out.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(&s[start..]);
        out
    }

    fn parse_set(s: &str) -> Result<Vec<String>, String> {
        let inner = s
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("unable to parse requirement: found '{s}', expected: '('"))?;
        Ok(inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect())
    }

    fn parse_labels(s: &str) -> Result<Vec<LabelReq>, String> {
        let mut out = Vec::new();
        for term in split_top(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let req = if let Some(k) = term.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else if let Some((k, set)) = term.split_once(" notin ") {
                LabelReq::NotIn(k.trim().to_string(), parse_set(set)?)
            } else if let Some((k, set)) = term.split_once(" in ") {
                LabelReq::In(k.trim().to_string(), parse_set(set)?)
            } else if let Some((k, v)) = term.split_once("!=") {
                LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = term.split_once("==") {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = term.split_once('=') {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else {
                LabelReq::Exists(term.to_string())
            };
            out.push(req);
        }
        Ok(out)
    }

    fn parse_fields(s: &str) -> Result<Vec<FieldReq>, String> {
        let mut out = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{term}'"));
            };
            let namespace = match field.trim() {
                "metadata.name" => false,
                "metadata.namespace" => true,
                other => return Err(format!("field label not supported: {other}")),
            };
            out.push(FieldReq {
                namespace,
                equal,
                value: value.trim().to_string(),
            });
        }
        Ok(out)
    }

    impl Filter {
        /// The filter of a request on `t` with `query` (a 400 for a selector the API server refuses).
        pub(super) fn from_query(t: &Target, query: Option<&str>) -> Result<Filter, (u16, String)> {
            let labels = match decoded(query, "labelSelector") {
                Some(s) => parse_labels(&s).map_err(|e| (400, e))?,
                None => Vec::new(),
            };
            let fields = match decoded(query, "fieldSelector") {
                Some(s) => parse_fields(&s).map_err(|e| (400, e))?,
                None => Vec::new(),
            };
            Ok(Filter {
                namespace: t.namespace.clone(),
                labels,
                fields,
            })
        }

        /// No selector: everything in the namespace scope.
        pub fn selects_all_in_scope(&self) -> bool {
            self.labels.is_empty() && self.fields.is_empty()
        }

        fn matches_with<'a>(&self, ns: &str, name: &str, label: impl Fn(&str) -> Option<&'a str>) -> bool {
            if self.namespace.as_deref().is_some_and(|want| want != ns) {
                return false;
            }
            let fields_ok = self.fields.iter().all(|f| {
                let have = if f.namespace { ns } else { name };
                (have == f.value) == f.equal
            });
            fields_ok
                && self.labels.iter().all(|r| match r {
                    LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
                    LabelReq::NotEq(k, v) => label(k) != Some(v.as_str()),
                    LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
                    LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
                    LabelReq::Exists(k) => label(k).is_some(),
                    LabelReq::NotExists(k) => label(k).is_none(),
                })
        }

        pub fn matches(&self, ns: &str, name: &str, labels: &Labels) -> bool {
            self.matches_with(ns, name, |k| labels.get(k).map(String::as_str))
        }

        pub fn matches_object(&self, ns: &str, name: &str, obj: &Value) -> bool {
            let labels = &obj["metadata"]["labels"];
            self.matches_with(ns, name, |k| labels.get(k).and_then(Value::as_str))
        }
    }

    /// How an open watch renders its events.
    struct Spec {
        kind: String,
        api_version: String,
        filter: Filter,
        meta_only: bool,
        bookmarks: bool,
        timeout: Duration,
    }

    impl Spec {
        fn line(typ: &str, object: &str) -> Bytes {
            Bytes::from(format!("{{\"type\":\"{typ}\",\"object\":{object}}}\n"))
        }

        fn object<'a>(&self, text: &'a str) -> Cow<'a, str> {
            if self.meta_only {
                let v: Value = serde_json::from_str(text).unwrap_or_default();
                Cow::Owned(partial_metadata(&v).to_string())
            } else {
                Cow::Borrowed(text)
            }
        }

        /// The event this watch sees for `ev`, if any (cache_watcher.go `convertToWatchEvent`).
        fn render(&self, ev: &HistEvent) -> Option<Bytes> {
            let cur = ev.typ != EventType::Deleted && self.filter.matches(&ev.ns, &ev.name, &ev.labels);
            let old = match &ev.prev {
                Some((_, l)) => self.filter.matches(&ev.ns, &ev.name, l),
                None => ev.typ == EventType::Deleted && self.filter.matches(&ev.ns, &ev.name, &ev.labels),
            };
            let (typ, text): (&str, Cow<str>) = match (cur, old) {
                (false, false) => return None,
                (true, false) => ("ADDED", Cow::Borrowed(&ev.obj)),
                (true, true) => ("MODIFIED", Cow::Borrowed(&ev.obj)),
                (false, true) if ev.typ == EventType::Deleted => ("DELETED", Cow::Borrowed(&ev.obj)),
                (false, true) => {
                    // No longer selected: DELETED, the previous object at this event's resourceVersion.
                    let prev = ev.prev.as_ref().map(|(p, _)| p.as_ref()).unwrap_or("{}");
                    let mut v: Value = serde_json::from_str(prev).unwrap_or_default();
                    v["metadata"]["resourceVersion"] = json!(ev.rv.to_string());
                    ("DELETED", Cow::Owned(v.to_string()))
                }
            };
            Some(Self::line(typ, &self.object(&text)))
        }

        fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
            let (kind, api_version) = if self.meta_only {
                ("PartialObjectMetadata", "meta.k8s.io/v1")
            } else {
                (self.kind.as_str(), self.api_version.as_str())
            };
            let mut metadata = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            let obj = json!({"kind": kind, "apiVersion": api_version, "metadata": metadata});
            Self::line("BOOKMARK", &obj.to_string())
        }
    }

    enum Initial {
        /// A current object, sent as ADDED (already filtered).
        Added(Arc<str>),
        /// A history event to replay.
        Event(Arc<HistEvent>),
    }

    /// An opened watch, for [`pump`].
    pub struct Opened {
        spec: Spec,
        /// Sent as the only event (a watch the API server cannot serve).
        error: Option<Value>,
        initial: Vec<Initial>,
        initial_end: Option<u64>,
        ev_rx: Option<mpsc::UnboundedReceiver<Arc<HistEvent>>>,
        mode_rx: Option<tokio::sync::watch::Receiver<Mode>>,
    }

    impl FakeApi {
        fn bookmark_interval(&self) -> Duration {
            self.state.lock().unwrap().hub.bookmark_interval
        }
    }

    /// Feed one watch stream to `out` until it ends (timeout, cut, error, the client gone).
    pub async fn pump(api: FakeApi, opened: Opened, out: mpsc::Sender<Bytes>) {
        let Opened {
            spec,
            error,
            initial,
            initial_end,
            ev_rx,
            mode_rx,
        } = opened;
        if let Some(st) = error {
            let _ = out.send(Spec::line("ERROR", &st.to_string())).await;
            return;
        }
        let (Some(mut ev_rx), Some(mut mode_rx)) = (ev_rx, mode_rx) else {
            return;
        };
        let mut last_rv = 0u64;
        for item in initial {
            let line = match item {
                Initial::Added(text) => Some(Spec::line("ADDED", &spec.object(&text))),
                Initial::Event(ev) => {
                    last_rv = last_rv.max(ev.rv);
                    spec.render(&ev)
                }
            };
            if let Some(l) = line
                && out.send(l).await.is_err()
            {
                return;
            }
        }
        if let Some(rv) = initial_end {
            last_rv = last_rv.max(rv);
            if out.send(spec.bookmark(rv, true)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(spec.timeout);
        tokio::pin!(deadline);
        let mut next_bookmark = tokio::time::Instant::now() + api.bookmark_interval();
        // Events received, delivered one by one while the stream is open.
        let mut pending: VecDeque<Arc<HistEvent>> = VecDeque::new();
        // A bookmark to send once `pending` is delivered: every write up to this resourceVersion was
        // queued (under the fake's lock) before it was read.
        let mut bookmark_due: Option<u64> = None;
        let mut finishing = false;
        loop {
            let mode = *mode_rx.borrow_and_update();
            match mode {
                Mode::Cut => return,
                Mode::Held | Mode::Dead => {
                    if mode == Mode::Dead {
                        pending.clear();
                        bookmark_due = None;
                        while ev_rx.try_recv().is_ok() {}
                    }
                    tokio::select! {
                        _ = out.closed() => return,
                        r = mode_rx.changed() => if r.is_err() { return },
                    }
                    continue;
                }
                Mode::Open => {}
            }
            if let Some(ev) = pending.pop_front() {
                last_rv = last_rv.max(ev.rv);
                if let Some(l) = spec.render(&ev)
                    && out.send(l).await.is_err()
                {
                    return;
                }
                continue;
            }
            if let Some(rv) = bookmark_due.take() {
                last_rv = last_rv.max(rv);
                if out.send(spec.bookmark(last_rv, false)).await.is_err() {
                    return;
                }
                continue;
            }
            if finishing {
                return;
            }
            tokio::select! {
                _ = out.closed() => return,
                r = mode_rx.changed() => if r.is_err() { return },
                ev = ev_rx.recv() => match ev {
                    Some(ev) => pending.push_back(ev),
                    None => return,
                },
                // timeoutSeconds: a last bookmark (when allowed), then the end.
                _ = &mut deadline => {
                    if spec.bookmarks {
                        bookmark_due = Some(api.resource_version());
                        while let Ok(ev) = ev_rx.try_recv() {
                            pending.push_back(ev);
                        }
                    }
                    finishing = true;
                }
                _ = tokio::time::sleep_until(next_bookmark), if spec.bookmarks => {
                    bookmark_due = Some(api.resource_version());
                    while let Ok(ev) = ev_rx.try_recv() {
                        pending.push_back(ev);
                    }
                    next_bookmark = tokio::time::Instant::now() + api.bookmark_interval();
                }
            }
        }
    }
}
