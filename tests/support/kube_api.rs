//! A test double of the Kubernetes API server, for the Kubernetes store's end-to-end tests: plain
//! HTTP on a random loopback port, served from a thread of the test process, so that real
//! processes of the binary go through the real `kube` client and HTTP path.
//!
//! It reproduces the API server exactly where the store depends on it — `resourceVersion` changes
//! on every write, a stale `resourceVersion` gets 409 Conflict with a `Status` body, create of an
//! existing name gets 409 AlreadyExists, missing objects 404 NotFound, list honours
//! `labelSelector`, Lease validation (name, annotation size) answers 422 — and offers switches to
//! inject faults: 403 for a verb on a resource, stop answering, refuse connections, edit objects
//! behind the client's back. It must never be smarter than a real API server: anything it accepts
//! a real one must accept too.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The API server enforces this on the sum of all annotation keys and values of one object.
const MAX_ANNOTATIONS: usize = 256 * 1024;

/// How the double answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal = 0,
    /// Accept connections and requests, never answer (a partitioned or hung API server).
    Stall = 1,
    /// Close every connection at once (API server down).
    Refuse = 2,
}

/// A write the double accepted: who can tell when a holder last renewed.
#[derive(Debug, Clone)]
pub struct Write {
    pub verb: &'static str,
    pub name: String,
    pub at: SystemTime,
    pub resource_version: String,
}

#[derive(Default)]
struct State {
    next_rv: u64,
    /// (namespace, name) → the object as stored (with kind and apiVersion).
    leases: BTreeMap<(String, String), Value>,
    events: Vec<Value>,
    forbidden: HashSet<(String, String)>,
    /// When set, like an RBAC Role: only these (verb, resource) pairs are allowed, all else 403.
    allowed: Option<HashSet<(String, String)>>,
    /// Every (verb, resource) pair requested.
    seen: HashSet<(String, String)>,
    requests: HashMap<String, u64>,
    writes: Vec<Write>,
}

impl State {
    fn bump(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }
}

struct Shared {
    state: Mutex<State>,
    mode: AtomicU8,
}

impl Shared {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Stall,
            2 => Mode::Refuse,
            _ => Mode::Normal,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct KubeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeApi {
    pub fn start() -> KubeApi {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_rv: 1000,
                ..State::default()
            }),
            mode: AtomicU8::new(Mode::Normal as u8),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("double runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback");
                addr_tx
                    .send(listener.local_addr().expect("local addr"))
                    .expect("send addr");
                let mut stop_rx = stop_rx;
                loop {
                    let (tcp, _) = tokio::select! {
                        r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                        _ = &mut stop_rx => break,
                    };
                    if sh.mode() == Mode::Refuse {
                        drop(tcp);
                        continue;
                    }
                    let sh = sh.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| serve(sh.clone(), req));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            });
            // Stalled handlers never finish on their own; do not wait for them.
            rt.shutdown_background();
        });
        let addr = addr_rx.recv().expect("double started");
        KubeApi {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Write a kubeconfig for this server into `dir`, with `namespace` as the context's default.
    pub fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        write_kubeconfig(dir, &self.url(), namespace)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Answer 403 to `verb` (get, list, create, update, delete) on `resource` (leases, events).
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.shared
            .state()
            .forbidden
            .insert((verb.to_string(), resource.to_string()));
    }

    /// Answer 403 to everything but these (verb, resource) pairs, as an RBAC Role would.
    pub fn allow_only(&self, pairs: impl IntoIterator<Item = (String, String)>) {
        self.shared.state().allowed = Some(pairs.into_iter().collect());
    }

    /// Every (verb, resource) pair requested so far.
    pub fn seen(&self) -> HashSet<(String, String)> {
        self.shared.state().seen.clone()
    }

    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .state()
            .leases
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn leases(&self, namespace: &str) -> Vec<Value> {
        self.shared
            .state()
            .leases
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn events(&self) -> Vec<Value> {
        self.shared.state().events.clone()
    }

    /// Every accepted write, oldest first.
    pub fn writes(&self) -> Vec<Write> {
        self.shared.state().writes.clone()
    }

    /// Requests seen per verb ("get", "list", "create", "update", …).
    pub fn requests(&self, verb: &str) -> u64 {
        self.shared.state().requests.get(verb).copied().unwrap_or(0)
    }

    /// Edit a stored object as another client would (a new resourceVersion).
    pub fn edit_lease(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut st = self.shared.state();
        let rv = st.bump();
        let obj = st
            .leases
            .get_mut(&(namespace.to_string(), name.to_string()))
            .expect("lease to edit exists");
        edit(obj);
        obj["metadata"]["resourceVersion"] = json!(rv);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn write_kubeconfig(dir: &Path, server: &str, namespace: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {server}\n\
         contexts:\n- name: double\n  context:\n    cluster: double\n    user: double\n    \
         namespace: {namespace}\ncurrent-context: double\nusers:\n- name: double\n  user:\n    \
         token: not-a-secret\n"
    );
    std::fs::write(&path, yaml).expect("write kubeconfig");
    path
}

type Resp = Response<Full<Bytes>>;

fn respond(code: StatusCode, body: &Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A `Status` failure body, as the API server sends it.
fn status(code: StatusCode, reason: &str, message: String, details: Value) -> Resp {
    respond(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code.as_u16(),
        }),
    )
}

fn group_resource(resource: &str) -> &'static str {
    match resource {
        "leases" => "leases.coordination.k8s.io",
        EVENTS_V1 => EVENTS_V1,
        _ => "events",
    }
}

fn not_found(resource: &str, name: &str) -> Resp {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", group_resource(resource)),
        json!({"name": name, "group": if resource == "leases" { "coordination.k8s.io" } else { "" }, "kind": resource}),
    )
}

fn invalid(resource: &str, name: &str, why: String) -> Resp {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!(
            "{} \"{name}\" is invalid: {why}",
            if resource == "leases" {
                "Lease.coordination.k8s.io"
            } else {
                "Event"
            }
        ),
        json!({"name": name, "kind": resource}),
    )
}

fn bad_request(message: String) -> Resp {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, json!({}))
}

async fn serve(sh: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, std::io::Error> {
    match sh.mode() {
        Mode::Normal => {}
        Mode::Refuse => return Err(std::io::Error::other("refusing")),
        Mode::Stall => {
            while sh.mode() == Mode::Stall {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return Err(std::io::Error::other("was stalled"));
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(std::io::Error::other(e)),
    };
    Ok(handle(&sh, &method, &path, &query, &body))
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated: the equality-based selector syntax.
fn selector_matches(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
            if let Some((k, v)) = term.split_once("!=") {
                get(k) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==") {
                get(k) == Some(v.trim())
            } else if let Some((k, v)) = term.split_once('=') {
                get(k) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                get(k).is_none()
            } else {
                get(term).is_some()
            }
        })
}

fn dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn validate_lease(obj: &Value, name: &str) -> Result<(), String> {
    if !dns1123_subdomain(name) {
        return Err(format!(
            "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
        ));
    }
    let ann_size: usize = obj["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum()
        })
        .unwrap_or(0);
    if ann_size > MAX_ANNOTATIONS {
        return Err(format!(
            "metadata.annotations: Too long: may not be more than {MAX_ANNOTATIONS} bytes"
        ));
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if v.as_str().is_none_or(|v| v.len() > 63) {
                return Err(format!("metadata.labels: Invalid value: {k}"));
            }
        }
    }
    let spec = &obj["spec"];
    if let Some(d) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        return Err("spec.leaseDurationSeconds: Invalid value: must be greater than 0".into());
    }
    if let Some(t) = spec.get("leaseTransitions").and_then(Value::as_i64)
        && t < 0
    {
        return Err(
            "spec.leaseTransitions: Invalid value: must be greater than or equal to 0".into(),
        );
    }
    Ok(())
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn handle(
    sh: &Shared,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Resp {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (ns, resource, name) = match segs.as_slice() {
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            ns,
            "leases",
        ] => (*ns, "leases", None),
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            ns,
            "leases",
            name,
        ] => (*ns, "leases", Some(*name)),
        ["api", "v1", "namespaces", ns, "events"] => (*ns, "events", None),
        // The same Events through events.k8s.io/v1; named `resource.group` for RBAC, as a Role
        // grants the two groups separately.
        ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => (*ns, EVENTS_V1, None),
        _ => {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
                json!({}),
            );
        }
    };
    let verb = match (method, name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            "watch"
        }
        (&Method::GET, None) => "list",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::PATCH, Some(_)) => "patch",
        _ => {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".into(),
                json!({}),
            );
        }
    };
    let mut st = sh.state();
    *st.requests.entry(verb.to_string()).or_default() += 1;
    let pair = (verb.to_string(), resource.to_string());
    st.seen.insert(pair.clone());
    if st.forbidden.contains(&pair) || st.allowed.as_ref().is_some_and(|a| !a.contains(&pair)) {
        let subject = match name {
            Some(n) => format!("{} \"{n}\"", group_resource(resource)),
            None => group_resource(resource).to_string(),
        };
        let (kind, group) = match resource {
            "leases" => ("leases", "coordination.k8s.io"),
            EVENTS_V1 => ("events", "events.k8s.io"),
            other => (other, ""),
        };
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"system:serviceaccount:{ns}:default\" cannot {verb} resource \"{kind}\" in API group \"{group}\" in the namespace \"{ns}\""
            ),
            json!({"name": name.unwrap_or(""), "group": group, "kind": kind}),
        );
    }
    let key = |n: &str| (ns.to_string(), n.to_string());
    match (resource, verb) {
        ("leases", "get") => {
            let n = name.unwrap_or_default();
            match st.leases.get(&key(n)) {
                Some(obj) => respond(StatusCode::OK, obj),
                None => not_found(resource, n),
            }
        }
        ("leases", "list") => {
            let selector = query.get("labelSelector").cloned().unwrap_or_default();
            let items: Vec<Value> = st
                .leases
                .iter()
                .filter(|((lns, _), obj)| {
                    lns == ns && selector_matches(&selector, &obj["metadata"]["labels"])
                })
                .map(|(_, obj)| {
                    // List items carry no kind/apiVersion, as from a real API server.
                    let mut o = obj.clone();
                    if let Some(m) = o.as_object_mut() {
                        m.remove("kind");
                        m.remove("apiVersion");
                    }
                    o
                })
                .collect();
            let rv = st.next_rv.to_string();
            respond(
                StatusCode::OK,
                &json!({
                    "kind": "LeaseList",
                    "apiVersion": "coordination.k8s.io/v1",
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                }),
            )
        }
        ("leases", "create") => {
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_request(format!("invalid JSON body: {e}")),
            };
            if let Some(err) = check_kind(&obj, "Lease", "coordination.k8s.io/v1") {
                return err;
            }
            let Some(n) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                return invalid(
                    resource,
                    "",
                    "metadata.name: Required value: name or generateName is required".into(),
                );
            };
            if obj["metadata"]
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|rv| !rv.is_empty())
            {
                return bad_request(
                    "resourceVersion should not be set on objects to be created".into(),
                );
            }
            if let Some(other) = obj["metadata"].get("namespace").and_then(Value::as_str)
                && other != ns
            {
                return bad_request("the namespace of the provided object does not match the namespace sent on the request".into());
            }
            if let Err(why) = validate_lease(&obj, &n) {
                return invalid(resource, &n, why);
            }
            if st.leases.contains_key(&key(&n)) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("leases.coordination.k8s.io \"{n}\" already exists"),
                    json!({"name": n, "group": "coordination.k8s.io", "kind": "leases"}),
                );
            }
            let rv = st.bump();
            let meta = &mut obj["metadata"];
            meta["namespace"] = json!(ns);
            meta["resourceVersion"] = json!(rv);
            meta["uid"] = json!(format!("{:032x}", rand::random::<u128>()));
            meta["creationTimestamp"] = json!(now_rfc3339());
            obj["kind"] = json!("Lease");
            obj["apiVersion"] = json!("coordination.k8s.io/v1");
            st.leases.insert(key(&n), obj.clone());
            st.writes.push(Write {
                verb: "create",
                name: n,
                at: SystemTime::now(),
                resource_version: rv,
            });
            respond(StatusCode::CREATED, &obj)
        }
        ("leases", "update") => {
            let n = name.unwrap_or_default();
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_request(format!("invalid JSON body: {e}")),
            };
            if let Some(err) = check_kind(&obj, "Lease", "coordination.k8s.io/v1") {
                return err;
            }
            if obj["metadata"]["name"].as_str() != Some(n) {
                return bad_request(
                    "the name of the object does not match the name on the URL".into(),
                );
            }
            let Some(stored) = st.leases.get(&key(n)).cloned() else {
                return not_found(resource, n);
            };
            let sent_rv = obj["metadata"]
                .get("resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            // Leases allow unconditional updates (no resourceVersion); a stale one conflicts.
            if !sent_rv.is_empty()
                && stored["metadata"]["resourceVersion"].as_str() != Some(&sent_rv)
            {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on leases.coordination.k8s.io \"{n}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                    json!({"name": n, "group": "coordination.k8s.io", "kind": "leases"}),
                );
            }
            if let Err(why) = validate_lease(&obj, n) {
                return invalid(resource, n, why);
            }
            let rv = st.bump();
            let meta = &mut obj["metadata"];
            meta["namespace"] = json!(ns);
            meta["resourceVersion"] = json!(rv);
            meta["uid"] = stored["metadata"]["uid"].clone();
            meta["creationTimestamp"] = stored["metadata"]["creationTimestamp"].clone();
            obj["kind"] = json!("Lease");
            obj["apiVersion"] = json!("coordination.k8s.io/v1");
            st.leases.insert(key(n), obj.clone());
            st.writes.push(Write {
                verb: "update",
                name: n.to_string(),
                at: SystemTime::now(),
                resource_version: rv,
            });
            respond(StatusCode::OK, &obj)
        }
        ("leases", "delete") => {
            let n = name.unwrap_or_default();
            match st.leases.remove(&key(n)) {
                Some(_) => respond(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": n, "group": "coordination.k8s.io", "kind": "leases"}}),
                ),
                None => not_found(resource, n),
            }
        }
        ("events", "create") => {
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_request(format!("invalid JSON body: {e}")),
            };
            if let Some(err) = check_kind(&obj, "Event", "v1") {
                return err;
            }
            let n = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if obj["involvedObject"]["namespace"]
                .as_str()
                .is_some_and(|o| o != ns)
            {
                return invalid(
                    resource,
                    &n,
                    "involvedObject.namespace: Invalid value: does not match event.namespace"
                        .into(),
                );
            }
            if obj["message"].as_str().is_some_and(|m| m.len() > 1024) {
                return invalid(resource, &n, "message: Too long".into());
            }
            let rv = st.bump();
            obj["metadata"]["resourceVersion"] = json!(rv);
            obj["metadata"]["namespace"] = json!(ns);
            st.events.push(obj.clone());
            respond(StatusCode::CREATED, &obj)
        }
        (EVENTS_V1, "create") => {
            let obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_request(format!("invalid JSON body: {e}")),
            };
            if let Some(err) = check_kind(&obj, "Event", "events.k8s.io/v1") {
                return err;
            }
            let n = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if let Some(why) = events_v1_invalid(&obj, ns) {
                return invalid(resource, &n, why);
            }
            let mut core = events_v1_as_core(&obj);
            let rv = st.bump();
            core["metadata"]["resourceVersion"] = json!(rv);
            core["metadata"]["namespace"] = json!(ns);
            st.events.push(core);
            let mut back = obj;
            back["metadata"]["resourceVersion"] = json!(rv);
            back["metadata"]["namespace"] = json!(ns);
            respond(StatusCode::CREATED, &back)
        }
        ("leases", "watch") => bad_request("this test double does not implement watch".into()),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            json!({}),
        ),
    }
}

/// kind/apiVersion, when sent, must name the resource of the URL.
/// events.k8s.io/v1 Events, by the name the double's RBAC knows them under.
pub const EVENTS_V1: &str = "events.events.k8s.io";

/// What the API server's strict validation of an events.k8s.io/v1 Event refuses
/// (`ValidateEventCreate` for that group), or `None`.
fn events_v1_invalid(obj: &Value, ns: &str) -> Option<String> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let micro = s(&obj["eventTime"]);
    // MicroTime: RFC 3339 with exactly six fractional digits.
    let frac = micro
        .strip_suffix('Z')
        .and_then(|t| t.rsplit_once('.'))
        .map(|(_, f)| f.len());
    if frac != Some(6) {
        return Some(format!(
            "eventTime: Required value or not a MicroTime: {micro:?}"
        ));
    }
    for field in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if s(&obj[field]).is_empty() {
            return Some(format!("{field}: Required value"));
        }
    }
    if s(&obj["reportingInstance"]).chars().count() > 128 {
        return Some("reportingInstance: Too long".into());
    }
    if !matches!(s(&obj["type"]).as_str(), "Normal" | "Warning") {
        return Some("type: Unsupported value".into());
    }
    for field in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
        "deprecatedSource",
    ] {
        if !obj[field].is_null() {
            return Some(format!("{field}: Invalid value: needs to be unset"));
        }
    }
    if obj["regarding"]["namespace"]
        .as_str()
        .is_some_and(|o| o != ns)
    {
        return Some("regarding.namespace: Invalid value: does not match event.namespace".into());
    }
    if obj["note"].as_str().is_some_and(|m| m.len() > 1024) {
        return Some("note: Too long".into());
    }
    None
}

/// An events.k8s.io/v1 Event as the core/v1 API serves it back (the server stores one object).
fn events_v1_as_core(obj: &Value) -> Value {
    json!({
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": obj["metadata"],
        "involvedObject": obj["regarding"],
        "reason": obj["reason"],
        "message": obj["note"],
        "type": obj["type"],
        "action": obj["action"],
        "eventTime": obj["eventTime"],
        "reportingComponent": obj["reportingController"],
        "reportingInstance": obj["reportingInstance"],
    })
}

fn check_kind(obj: &Value, kind: &str, api_version: &str) -> Option<Resp> {
    let k = obj.get("kind").and_then(Value::as_str);
    let a = obj.get("apiVersion").and_then(Value::as_str);
    if k.is_some_and(|k| k != kind) || a.is_some_and(|a| a != api_version) {
        return Some(bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({api_version})",
            a.unwrap_or("")
        )));
    }
    None
}
