//! A test double of the Kubernetes API server, for the Kubernetes store's end-to-end tests: plain
//! HTTP on a random loopback port, served from a thread of the test process, so that real
//! processes of the binary go through the real `kube` client and HTTP path.
//!
//! It reproduces the API server exactly where the store depends on it — `resourceVersion` changes
//! on every write that changes the object, and an update that changes nothing (ignoring
//! `resourceVersion` and `managedFields`) keeps it and is no event; a stale `resourceVersion` gets
//! 409 Conflict with a `Status` body, create of an existing name gets 409 AlreadyExists, missing
//! objects 404 NotFound, list honours `labelSelector` and the `metadata.name`/`metadata.namespace`
//! field selectors, Lease validation (name, annotation size) answers 422; watches stream
//! `ADDED`/`MODIFIED`/`DELETED` lines after the requested `resourceVersion` from a bounded history
//! (an `ERROR` line with a 410 `Expired` Status when the version is older than that history, as
//! the watch cache answers), `BOOKMARK`s when asked, and end at `timeoutSeconds` — and it offers
//! switches to inject faults: 403 for a verb on a resource (`watch` included), stop answering,
//! refuse connections, break watch streams, forget history, edit objects behind the client's back.
//! It must never be smarter than a real API server: anything it accepts a real one must accept too,
//! and a client must not depend on anything (bookmark timing, history length) a real one does not
//! promise.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// The API server enforces this on the sum of all annotation keys and values of one object.
const MAX_ANNOTATIONS: usize = 256 * 1024;
/// Lease changes kept for watches by default: the watch cache's default capacity is 100 too.
pub const WATCH_HISTORY: usize = 100;
/// A watch without `timeoutSeconds` lasts this long (the API server picks 30–60 min at random).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Default time between bookmarks on a watch that allows them (the watch cache's is about 1 min).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// How the double answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal = 0,
    /// Accept connections and requests, never answer (a partitioned or hung API server).
    Stall = 1,
    /// Close every connection at once (API server down).
    Refuse = 2,
}

/// How a watch from a `resourceVersion` older than the retained history is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expired {
    /// HTTP 200, then one `ERROR` event with a 410 `Expired` Status, then the end of the stream:
    /// what the API server's watch cache (and its etcd watch) answer once a watch was accepted.
    #[default]
    Event,
    /// An HTTP 410 `Expired` Status in place of the stream: what a client must also handle, e.g.
    /// from an aggregated API server or a proxy in front.
    Http,
}

/// A write the double accepted (one that changed the object): who can tell when a holder last
/// renewed.
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
    /// Updates accepted that changed nothing (resourceVersion kept, no event).
    noop_updates: u64,
    /// Lease changes, oldest first, at most `history_limit`: what watches are served from.
    history: VecDeque<Change>,
    history_limit: usize,
    /// resourceVersion of the newest change dropped from `history`: a watch from an older
    /// version could miss changes, so it gets 410 Expired.
    compacted: u64,
    expired: Expired,
    bookmark_every: Duration,
    /// Every watch stream breaks (connection dropped mid-stream) after this many events.
    break_watches_after: Option<usize>,
    watchers: Vec<Watcher>,
}

impl State {
    fn bump(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }

    /// Keep `change` for watches started later and send it to the open ones it matches.
    fn record_change(&mut self, change: Change) {
        self.watchers.retain(|w| match change.event_for(&w.filter) {
            Some(line) => w.tx.send(Msg::Line(line)).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push_back(change);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One change of a Lease, as the watch cache keeps it: the object before and after.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: ChangeKind,
    old: Option<Value>,
    new: Value,
}

impl Change {
    /// The watch line a watcher with `filter` gets for this change, if any. As the API server
    /// does, an object that starts to match a selector is ADDED, one that stops is DELETED.
    fn event_for(&self, filter: &Filter) -> Option<Value> {
        let now = filter.matches(&self.new);
        let before = self.old.as_ref().is_some_and(|o| filter.matches(o));
        let (kind, obj) = match self.kind {
            ChangeKind::Added if now => ("ADDED", self.new.clone()),
            ChangeKind::Deleted if now => ("DELETED", self.new.clone()),
            ChangeKind::Modified if now && before => ("MODIFIED", self.new.clone()),
            ChangeKind::Modified if now => ("ADDED", self.new.clone()),
            ChangeKind::Modified if before => {
                let mut o = self.old.clone().unwrap_or_default();
                o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                ("DELETED", o)
            }
            _ => return None,
        };
        Some(json!({"type": kind, "object": obj}))
    }
}

/// What a watch or list selects: its namespace, `fieldSelector` and `labelSelector`.
#[derive(Debug, Clone)]
struct Filter {
    namespace: String,
    /// (field, equal?, value) with field `metadata.name` or `metadata.namespace`.
    fields: Vec<(String, bool, String)>,
    labels: String,
}

impl Filter {
    /// The API server supports only `metadata.name` and `metadata.namespace` for Leases.
    fn parse(namespace: &str, query: &HashMap<String, String>) -> Result<Filter, String> {
        let mut fields = Vec::new();
        let selector = query.get("fieldSelector").map(String::as_str).unwrap_or("");
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{selector}'; can't understand '{term}'"
                ));
            };
            let k = k.trim();
            if k != "metadata.name" && k != "metadata.namespace" {
                return Err(format!("field label not supported: {k}"));
            }
            fields.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(Filter {
            namespace: namespace.to_string(),
            fields,
            labels: query.get("labelSelector").cloned().unwrap_or_default(),
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        meta["namespace"].as_str() == Some(self.namespace.as_str())
            && self.fields.iter().all(|(k, eq, v)| {
                let field = if k == "metadata.name" {
                    &meta["name"]
                } else {
                    &meta["namespace"]
                };
                (field.as_str() == Some(v.as_str())) == *eq
            })
            && selector_matches(&self.labels, &meta["labels"])
    }
}

enum Msg {
    Line(Value),
    /// Drop the connection mid-stream.
    Break,
}

/// An open watch: where its events go.
struct Watcher {
    filter: Filter,
    tx: mpsc::UnboundedSender<Msg>,
}

/// The stream of a watch that was accepted: what it starts with and how it goes on.
struct WatchStart {
    initial: Vec<Value>,
    rx: mpsc::UnboundedReceiver<Msg>,
    timeout: Duration,
    bookmarks: bool,
    bookmark_every: Duration,
    break_after: Option<usize>,
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
                // Like a watch cache filled at start-up: nothing older than that to replay.
                compacted: 1000,
                history_limit: WATCH_HISTORY,
                expired: Expired::Event,
                bookmark_every: BOOKMARK_EVERY,
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

    /// Answer 403 to `verb` (get, list, watch, create, update, delete) on `resource` (leases,
    /// events).
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

    /// Updates accepted that changed nothing, so kept their resourceVersion.
    pub fn noop_updates(&self) -> u64 {
        self.shared.state().noop_updates
    }

    /// Edit a stored object as another client would: a new resourceVersion and a watch event,
    /// unless the edit changed nothing.
    pub fn edit_lease(&self, namespace: &str, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut st = self.shared.state();
        let key = (namespace.to_string(), name.to_string());
        let old = st.leases.get(&key).cloned().expect("lease to edit exists");
        let mut obj = old.clone();
        edit(&mut obj);
        if same_object(&old, &obj) {
            return;
        }
        let rv = st.bump();
        obj["metadata"]["resourceVersion"] = json!(rv);
        st.leases.insert(key, obj.clone());
        let rv = st.next_rv;
        st.record_change(Change {
            rv,
            kind: ChangeKind::Modified,
            old: Some(old),
            new: obj,
        });
    }

    /// Keep only the last `n` Lease changes for watches (default `WATCH_HISTORY`); a watch from
    /// an older resourceVersion gets 410 Expired.
    pub fn set_watch_history(&self, n: usize) {
        let mut st = self.shared.state();
        st.history_limit = n;
        st.trim_history();
    }

    /// Forget every change so far, as after an etcd compaction: a watch from any resourceVersion
    /// older than the current one gets 410 Expired.
    pub fn compact(&self) {
        let mut st = self.shared.state();
        st.history.clear();
        st.compacted = st.next_rv;
    }

    /// How a too-old watch is refused (default: an `ERROR` event, as the API server does).
    pub fn set_expired(&self, how: Expired) {
        self.shared.state().expired = how;
    }

    /// Time between bookmarks on watches that allow them, for watches started from now on.
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.shared.state().bookmark_every = every;
    }

    /// Break every open watch stream now: the connection drops mid-stream, without the end of
    /// the chunked body.
    pub fn break_watches(&self) {
        let mut st = self.shared.state();
        for w in st.watchers.drain(..) {
            let _ = w.tx.send(Msg::Break);
        }
    }

    /// Break each watch started from now on after it has sent `n` events (`None`: never).
    pub fn break_watches_after(&self, n: Option<usize>) {
        self.shared.state().break_watches_after = n;
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        let mut st = self.shared.state();
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.len()
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

/// A response body: whole, or a watch stream fed by its pump (an `Err` drops the connection
/// mid-stream; the sender going away ends the chunked body cleanly).
pub enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Result<Bytes, std::io::Error>>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

type Resp = Response<Body>;

/// What `handle` decided: an answer now, or a watch to stream.
enum Reply {
    Now(Resp),
    Watch(WatchStart),
}

impl From<Resp> for Reply {
    fn from(r: Resp) -> Reply {
        Reply::Now(r)
    }
}

fn respond(code: StatusCode, body: &Value) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::from(body.to_string()))));
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
    match handle(&sh, &method, &path, &query, &body) {
        Reply::Now(r) => Ok(r),
        Reply::Watch(start) => {
            let (tx, rx) = mpsc::channel(STREAM_BUFFER);
            tokio::spawn(pump(sh.clone(), start, tx));
            let mut r = Response::new(Body::Stream(rx));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
    }
}

fn line(v: &Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

/// Lines a watch stream holds before hyper has written them.
const STREAM_BUFFER: usize = 64;

/// Drop the connection mid-stream, once every line sent before has been written out: hyper
/// flushes what it holds when the body has nothing for it, and a break right behind a line
/// would otherwise lose that line along with the connection.
async fn break_stream(out: &mpsc::Sender<Result<Bytes, std::io::Error>>) {
    while out.capacity() < out.max_capacity() && !out.is_closed() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = out
        .send(Err(std::io::Error::other(
            "watch stream broken by the test",
        )))
        .await;
}

/// Feed one watch stream: its initial events, then every change sent to it, a bookmark now and
/// then when allowed, until `timeoutSeconds` (clean end), a break, the client going away, or the
/// double going down (a refused or stalled server breaks its streams, as a lost connection).
async fn pump(
    sh: Arc<Shared>,
    mut start: WatchStart,
    out: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let deadline = tokio::time::Instant::now() + start.timeout;
    let mut sent = 0usize;
    let break_after = start.break_after;
    let send = async |v: &Value, sent: &mut usize| -> bool {
        if break_after.is_some_and(|n| *sent >= n) {
            break_stream(&out).await;
            return false;
        }
        *sent += 1;
        out.send(Ok(line(v))).await.is_ok()
    };
    for v in std::mem::take(&mut start.initial) {
        if !send(&v, &mut sent).await {
            return;
        }
    }
    let mut bookmark = tokio::time::interval_at(
        tokio::time::Instant::now() + start.bookmark_every,
        start.bookmark_every.max(Duration::from_millis(10)),
    );
    let mut look = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            msg = start.rx.recv() => match msg {
                Some(Msg::Line(v)) => if !send(&v, &mut sent).await { return },
                Some(Msg::Break) => { break_stream(&out).await; return }
                None => return,
            },
            _ = tokio::time::sleep_until(deadline) => return,
            _ = bookmark.tick(), if start.bookmarks => {
                let rv = sh.state().next_rv.to_string();
                let b = json!({"type": "BOOKMARK", "object": {
                    "kind": "Lease",
                    "apiVersion": "coordination.k8s.io/v1",
                    "metadata": {"resourceVersion": rv, "creationTimestamp": null},
                }});
                if !send(&b, &mut sent).await { return }
            }
            _ = look.tick() => match sh.mode() {
                Mode::Normal => {}
                Mode::Refuse => { break_stream(&out).await; return }
                Mode::Stall => {
                    while sh.mode() == Mode::Stall {
                        if out.is_closed() { return }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    break_stream(&out).await;
                    return;
                }
            },
            _ = out.closed() => return,
        }
    }
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
) -> Reply {
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
            )
            .into();
        }
    };
    let watching = query.get("watch").is_some_and(|w| truthy(w));
    let verb = match (method, name) {
        // `GET …/leases/NAME?watch=1` (deprecated, still served) is a watch of that one name.
        (&Method::GET, _) if watching => "watch",
        (&Method::GET, Some(_)) => "get",
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
            )
            .into();
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
        )
        .into();
    }
    let key = |n: &str| (ns.to_string(), n.to_string());
    Reply::Now(match (resource, verb) {
        ("leases", "get") => {
            let n = name.unwrap_or_default();
            match st.leases.get(&key(n)) {
                Some(obj) => respond(StatusCode::OK, obj),
                None => not_found(resource, n),
            }
        }
        ("leases", "list") => {
            let filter = match Filter::parse(ns, query) {
                Ok(f) => f,
                Err(why) => return bad_request(why).into(),
            };
            let items: Vec<Value> = st
                .leases
                .values()
                .filter(|obj| filter.matches(obj))
                .map(|obj| {
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
                Err(e) => return bad_request(format!("invalid JSON body: {e}")).into(),
            };
            if let Some(err) = check_kind(&obj, "Lease", "coordination.k8s.io/v1") {
                return err.into();
            }
            let Some(n) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                return invalid(
                    resource,
                    "",
                    "metadata.name: Required value: name or generateName is required".into(),
                )
                .into();
            };
            if obj["metadata"]
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|rv| !rv.is_empty())
            {
                return bad_request(
                    "resourceVersion should not be set on objects to be created".into(),
                )
                .into();
            }
            if let Some(other) = obj["metadata"].get("namespace").and_then(Value::as_str)
                && other != ns
            {
                return bad_request("the namespace of the provided object does not match the namespace sent on the request".into()).into();
            }
            if let Err(why) = validate_lease(&obj, &n) {
                return invalid(resource, &n, why).into();
            }
            if st.leases.contains_key(&key(&n)) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("leases.coordination.k8s.io \"{n}\" already exists"),
                    json!({"name": n, "group": "coordination.k8s.io", "kind": "leases"}),
                )
                .into();
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
            let rv = st.next_rv;
            st.record_change(Change {
                rv,
                kind: ChangeKind::Added,
                old: None,
                new: obj.clone(),
            });
            respond(StatusCode::CREATED, &obj)
        }
        ("leases", "update") => {
            let n = name.unwrap_or_default();
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_request(format!("invalid JSON body: {e}")).into(),
            };
            if let Some(err) = check_kind(&obj, "Lease", "coordination.k8s.io/v1") {
                return err.into();
            }
            if obj["metadata"]["name"].as_str() != Some(n) {
                return bad_request(
                    "the name of the object does not match the name on the URL".into(),
                )
                .into();
            }
            let Some(stored) = st.leases.get(&key(n)).cloned() else {
                return not_found(resource, n).into();
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
                )
                .into();
            }
            if let Err(why) = validate_lease(&obj, n) {
                return invalid(resource, n, why).into();
            }
            let meta = &mut obj["metadata"];
            meta["namespace"] = json!(ns);
            meta["uid"] = stored["metadata"]["uid"].clone();
            meta["creationTimestamp"] = stored["metadata"]["creationTimestamp"].clone();
            obj["kind"] = json!("Lease");
            obj["apiVersion"] = json!("coordination.k8s.io/v1");
            // Like the API server (etcd3 store's GuaranteedUpdate): an update whose object encodes
            // the same as the stored one is not written; the stored object, resourceVersion and
            // all, is the answer, and watchers see nothing.
            if same_object(&stored, &obj) {
                st.noop_updates += 1;
                return respond(StatusCode::OK, &stored).into();
            }
            let rv = st.bump();
            obj["metadata"]["resourceVersion"] = json!(rv);
            st.leases.insert(key(n), obj.clone());
            st.writes.push(Write {
                verb: "update",
                name: n.to_string(),
                at: SystemTime::now(),
                resource_version: rv,
            });
            let rv = st.next_rv;
            st.record_change(Change {
                rv,
                kind: ChangeKind::Modified,
                old: Some(stored),
                new: obj.clone(),
            });
            respond(StatusCode::OK, &obj)
        }
        ("leases", "delete") => {
            let n = name.unwrap_or_default();
            match st.leases.remove(&key(n)) {
                Some(mut gone) => {
                    // The DELETED event carries the object at the deletion's resourceVersion.
                    let rv = st.bump();
                    gone["metadata"]["resourceVersion"] = json!(rv);
                    st.writes.push(Write {
                        verb: "delete",
                        name: n.to_string(),
                        at: SystemTime::now(),
                        resource_version: rv,
                    });
                    let rv = st.next_rv;
                    st.record_change(Change {
                        rv,
                        kind: ChangeKind::Deleted,
                        old: Some(gone.clone()),
                        new: gone,
                    });
                    respond(
                        StatusCode::OK,
                        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": n, "group": "coordination.k8s.io", "kind": "leases"}}),
                    )
                }
                None => not_found(resource, n),
            }
        }
        ("events", "create") => {
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return bad_request(format!("invalid JSON body: {e}")).into(),
            };
            if let Some(err) = check_kind(&obj, "Event", "v1") {
                return err.into();
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
                )
                .into();
            }
            if obj["message"].as_str().is_some_and(|m| m.len() > 1024) {
                return invalid(resource, &n, "message: Too long".into()).into();
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
                Err(e) => return bad_request(format!("invalid JSON body: {e}")).into(),
            };
            if let Some(err) = check_kind(&obj, "Event", "events.k8s.io/v1") {
                return err.into();
            }
            let n = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if let Some(why) = events_v1_invalid(&obj, ns) {
                return invalid(resource, &n, why).into();
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
        ("leases", "watch") => return start_watch(&mut st, ns, name, query),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            json!({}),
        ),
    })
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// `v` without what the API server's encoding drops (nulls, empty maps and lists), and without
/// `metadata.resourceVersion` and `metadata.managedFields`, for telling a no-op update.
fn canonical(v: &Value, top: bool) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let out: serde_json::Map<String, Value> = m
                .iter()
                .filter_map(|(k, v)| {
                    let v = if top && k == "metadata" {
                        let mut meta = v.clone();
                        if let Some(mm) = meta.as_object_mut() {
                            mm.remove("resourceVersion");
                            mm.remove("managedFields");
                        }
                        canonical(&meta, false)
                    } else {
                        canonical(v, false)
                    };
                    v.map(|v| (k.clone(), v))
                })
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => Some(Value::Array(
            a.iter()
                .map(|v| canonical(v, false).unwrap_or(Value::Null))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// Whether an update from `stored` to `next` changes nothing the API server would store.
fn same_object(stored: &Value, next: &Value) -> bool {
    canonical(stored, true) == canonical(next, true)
}

/// Accept a watch (under the state lock, so no change falls between the replay and the
/// registration) or refuse it as the API server would.
fn start_watch(
    st: &mut State,
    ns: &str,
    name: Option<&str>,
    query: &HashMap<String, String>,
) -> Reply {
    let mut filter = match Filter::parse(ns, query) {
        Ok(f) => f,
        Err(why) => return bad_request(why).into(),
    };
    if let Some(n) = name {
        filter
            .fields
            .push(("metadata.name".into(), true, n.to_string()));
    }
    let timeout = match query.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
        None => DEFAULT_WATCH_TIMEOUT,
        Some(Ok(t)) => Duration::from_secs(t),
        Some(Err(_)) => {
            return bad_request("timeoutSeconds: Invalid value: must be an integer".into()).into();
        }
    };
    if query.get("sendInitialEvents").is_some_and(|v| truthy(v)) {
        // Streaming lists are not reproduced; refusing is safe (a client must fall back).
        return bad_request("sendInitialEvents is not implemented by this test double".into())
            .into();
    }
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let initial: Vec<Value> = match rv {
        // Unset: start at the most recent version, with the current objects as ADDED first;
        // "0": the same, at any version (here always the most recent).
        "" | "0" => st
            .leases
            .values()
            .filter(|o| filter.matches(o))
            .map(|o| json!({"type": "ADDED", "object": o}))
            .collect(),
        rv => {
            let Ok(from) = rv.parse::<u64>() else {
                return bad_request(format!("invalid resource version: {rv:?}")).into();
            };
            if from < st.compacted {
                let gone = json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": format!("too old resource version: {from} ({})", st.compacted + 1),
                    "reason": "Expired",
                    "code": 410,
                });
                return match st.expired {
                    Expired::Http => respond(StatusCode::GONE, &gone).into(),
                    Expired::Event => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        drop(tx);
                        Reply::Watch(WatchStart {
                            initial: vec![json!({"type": "ERROR", "object": gone})],
                            rx,
                            timeout,
                            bookmarks: false,
                            bookmark_every: st.bookmark_every,
                            break_after: None,
                        })
                    }
                };
            }
            st.history
                .iter()
                .filter(|c| c.rv > from)
                .filter_map(|c| c.event_for(&filter))
                .collect()
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    st.watchers.push(Watcher { filter, tx });
    Reply::Watch(WatchStart {
        initial,
        rx,
        timeout,
        bookmarks: query.get("allowWatchBookmarks").is_some_and(|v| truthy(v)),
        bookmark_every: st.bookmark_every,
        break_after: st.break_watches_after,
    })
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
