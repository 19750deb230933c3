//! A Kubernetes API server for `Node` objects, speaking the real wire
//! format, for the Kubernetes node source's tests (no real API server can
//! run here). What it does as kube-apiserver does:
//! - `GET /api/v1/nodes` lists with `metadata.resourceVersion`, `limit` and
//!   `continue`;
//! - `?watch=true&resourceVersion=N` streams `ADDED`/`MODIFIED`/`DELETED`
//!   events after N as chunked JSON lines, with `BOOKMARK` events when asked
//!   (`allowWatchBookmarks`), and an `ERROR` event with a 410 `Expired`
//!   Status when N is older than the compacted history;
//! - `PATCH /api/v1/nodes/NAME/status` with a strategic-merge patch merges
//!   conditions by type (and is recorded);
//! - `PATCH /api/v1/nodes/NAME` with a strategic-merge or merge patch
//!   merges `metadata.annotations` (a null value removes one; recorded
//!   apart, `metadata_patches`);
//! - every request must carry the bearer token, else 401 with a Status.
//!
//! Node bodies have the shape the API reference shows for a kubelet's
//! node. It listens inside a test namespace (the nodes reach it over the
//! underlay, as they reach a real control plane).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{cni::TempDir, netns::unique_name, Netns};

pub const PORT: u16 = 6443;
/// How often an open watch looks for news or for the server stopping.
const TICK: Duration = Duration::from_millis(50);
/// How often an idle watch gets a bookmark.
const BOOKMARK_EVERY: Duration = Duration::from_secs(2);

/// A request the server answered, for tests to look at.
#[derive(Debug, Clone)]
pub struct Patch {
    pub node: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    revision: u64,
    nodes: BTreeMap<String, Value>,
    /// (revision, type, object) of every change since `compacted`.
    events: Vec<(u64, &'static str, Value)>,
    /// Watches from a revision below this get 410 Gone.
    compacted: u64,
    /// Bumped to end every open watch (with a 410 event).
    epoch: u64,
    patches: Vec<Patch>,
    metadata_patches: Vec<Patch>,
    lists: u64,
    watches: u64,
    unauthorized: u64,
}

struct Shared {
    state: Mutex<State>,
    news: Condvar,
    stop: AtomicBool,
    /// Connections are reset and open watches end (`set_reachable`).
    unreachable: AtomicBool,
    token: String,
    /// HTTPS, as in-cluster clients require.
    tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct KubeApi {
    shared: Arc<Shared>,
    address: SocketAddrV4,
    accept: Option<JoinHandle<()>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    dir: TempDir,
}

impl KubeApi {
    /// Listens on `address:6443` inside `ns`, plain HTTP.
    pub fn start(ns: &Netns, address: Ipv4Addr) -> Result<Self> {
        Self::listen(ns, address, None)
    }

    /// Listens on `address:6443` inside `ns` with HTTPS, under a CA of its
    /// own; `service_account()` holds what a pod's service account mount
    /// holds (token, ca.crt, namespace).
    pub fn start_tls(ns: &Netns, address: Ipv4Addr) -> Result<Self> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "knet-test-ca");
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["kubernetes.default.svc".to_string()])?;
        params.subject_alt_names.push(rcgen::SanType::IpAddress(address.into()));
        let cert = params.signed_by(&key, &issuer)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )?;
        let api = Self::listen(ns, address, Some(Arc::new(config)))?;
        let sa = api.service_account();
        std::fs::create_dir_all(&sa)?;
        std::fs::write(sa.join("ca.crt"), ca.pem())?;
        std::fs::write(sa.join("token"), &api.shared.token)?;
        std::fs::write(sa.join("namespace"), "kube-system")?;
        std::fs::write(api.dir.0.join("ca.crt"), ca.pem())?;
        api.write_kubeconfig(&api.shared.token.clone())?;
        Ok(api)
    }

    /// A directory laid out as /var/run/secrets/kubernetes.io/serviceaccount
    /// (with `start_tls`).
    pub fn service_account(&self) -> PathBuf {
        self.dir.0.join("serviceaccount")
    }

    pub fn address(&self) -> SocketAddrV4 {
        self.address
    }

    fn listen(ns: &Netns, address: Ipv4Addr, tls: Option<Arc<rustls::ServerConfig>>) -> Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { revision: 1, ..State::default() }),
            news: Condvar::new(),
            stop: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            token: unique_name("token"),
            tls,
        });
        let netns = std::fs::File::open(format!("/run/netns/{}", ns.name()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (s, conns) = (shared.clone(), connections.clone());
        let accept = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a valid namespace fd;
            // the listener created after it lives in that namespace.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            let listener = if rc == 0 {
                TcpListener::bind((address, PORT)).context("bind")
            } else {
                Err(std::io::Error::last_os_error()).context("setns")
            };
            let listener = match listener.and_then(|l| l.set_nonblocking(true).map(|_| l).context("nonblocking")) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s = s.clone();
                        conns.lock().unwrap().push(std::thread::spawn(move || {
                            let _ = accept(&s, stream);
                        }));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(TICK),
                    Err(_) => std::thread::sleep(TICK),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(10)).context("the API server thread did not start")??;
        let dir = TempDir::new("kubeconfig")?;
        let api = KubeApi { shared, address: SocketAddrV4::new(address, PORT), accept: Some(accept), connections, dir };
        let token = api.shared.token.clone();
        api.write_kubeconfig(&token)?;
        Ok(api)
    }

    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// A kubeconfig with this server and its token.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.0.join("kubeconfig")
    }

    /// Rewrites the kubeconfig with another token (to be refused).
    pub fn write_kubeconfig(&self, token: &str) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n{}users:\n- name: knet\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: knet\ncurrent-context: test\n",
            self.url(),
            if self.shared.tls.is_some() {
                format!("    certificate-authority: {}\n", self.dir.0.join("ca.crt").display())
            } else {
                String::new()
            },
        );
        std::fs::write(self.kubeconfig(), text)?;
        Ok(())
    }

    fn change(&self, f: impl FnOnce(&mut State)) {
        let mut st = self.shared.state.lock().unwrap();
        f(&mut st);
        drop(st);
        self.shared.news.notify_all();
    }

    /// Adds or replaces a node as its kubelet and the node IPAM controller
    /// would have it: `MODIFIED` if it exists, else `ADDED`.
    pub fn set_node(&self, name: &str, internal_ip: Ipv4Addr, pod_cidr: Option<&str>) {
        self.set_nodes(&[(name.to_string(), internal_ip, pod_cidr.map(str::to_string))]);
    }

    /// Many nodes in one go (one event each).
    pub fn set_nodes(&self, nodes: &[(String, Ipv4Addr, Option<String>)]) {
        self.change(|st| Self::put_nodes(st, nodes));
    }

    fn put_nodes(st: &mut State, nodes: &[(String, Ipv4Addr, Option<String>)]) {
        for (name, ip, cidr) in nodes {
            st.revision += 1;
            let rv = st.revision;
            let mut node = node_object(name, *ip, cidr.as_deref());
            let kind = match st.nodes.get(name) {
                Some(old) => {
                    // Keep what others wrote (conditions patched by an agent).
                    node["metadata"]["uid"] = old["metadata"]["uid"].clone();
                    node["status"]["conditions"] = old["status"]["conditions"].clone();
                    node["metadata"]["annotations"] = old["metadata"]["annotations"].clone();
                    "MODIFIED"
                }
                None => "ADDED",
            };
            node["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.nodes.insert(name.clone(), node.clone());
            st.events.push((rv, kind, node));
        }
    }

    fn compact(st: &mut State) {
        st.revision += 1;
        st.compacted = st.revision;
        st.events.clear();
        st.epoch += 1;
    }

    /// Many nodes at once, as a restore would bring them: the history is
    /// compacted with them, so watchers get 410 Gone and take them all in
    /// one list.
    pub fn bulk_load(&self, nodes: &[(String, Ipv4Addr, Option<String>)]) {
        self.change(|st| {
            Self::put_nodes(st, nodes);
            Self::compact(st);
        });
    }

    /// Deletes many nodes at once, the history compacted with them.
    pub fn bulk_delete(&self, keep: impl Fn(&str) -> bool) {
        self.change(|st| {
            st.nodes.retain(|name, _| keep(name));
            Self::compact(st);
        });
    }

    pub fn delete_node(&self, name: &str) {
        self.change(|st| {
            if let Some(mut node) = st.nodes.remove(name) {
                st.revision += 1;
                node["metadata"]["resourceVersion"] = json!(st.revision.to_string());
                let rv = st.revision;
                st.events.push((rv, "DELETED", node));
            }
        });
    }

    /// `false`: the server ends the watches open now and resets every new
    /// connection, as a client sees an API server that is gone (a 503
    /// would not do: kube's client retries those for minutes before its
    /// caller sees an error); `true`: it serves again, its state as it was.
    pub fn set_reachable(&self, reachable: bool) {
        self.shared.unreachable.store(!reachable, Ordering::Relaxed);
        self.shared.news.notify_all();
    }

    /// Compacts the history, as etcd does: every open watch ends with a
    /// 410 Gone, and so does any watch from an older revision; clients must
    /// list again.
    pub fn expire(&self) {
        self.change(Self::compact);
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        self.shared.state.lock().unwrap().nodes.get(name).cloned()
    }

    /// Patches of `nodes/NAME/status`.
    pub fn patches(&self) -> Vec<Patch> {
        self.shared.state.lock().unwrap().patches.clone()
    }

    /// Patches of `nodes/NAME` (its metadata).
    pub fn metadata_patches(&self) -> Vec<Patch> {
        self.shared.state.lock().unwrap().metadata_patches.clone()
    }

    /// A node's annotations now.
    pub fn annotations(&self, name: &str) -> BTreeMap<String, String> {
        let node = self.node(name).unwrap_or_default();
        let map = node["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
        map.into_iter().filter_map(|(k, v)| Some((k, v.as_str()?.to_string()))).collect()
    }

    /// Sets annotations on an existing node, as another controller's patch
    /// (flanneld's, say) would: one `MODIFIED` event.
    pub fn set_annotations(&self, name: &str, annotations: &BTreeMap<String, String>) {
        self.change(|st| {
            let patch = json!({"metadata": {"annotations": annotations}});
            Self::merge_metadata(st, name, &patch);
        });
    }

    /// Merges `patch`'s `metadata.annotations` into node `name`; the node
    /// after it, or `None` if there is no such node.
    fn merge_metadata(st: &mut State, name: &str, patch: &Value) -> Option<Value> {
        let mut node = st.nodes.get(name).cloned()?;
        if !node["metadata"]["annotations"].is_object() {
            node["metadata"]["annotations"] = json!({});
        }
        for (k, v) in patch["metadata"]["annotations"].as_object().into_iter().flatten() {
            let annotations = node["metadata"]["annotations"].as_object_mut().expect("made an object above");
            if v.is_null() {
                annotations.remove(k);
            } else {
                annotations.insert(k.clone(), v.clone());
            }
        }
        st.revision += 1;
        let rv = st.revision;
        node["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.nodes.insert(name.to_string(), node.clone());
        st.events.push((rv, "MODIFIED", node.clone()));
        Some(node)
    }

    /// (lists, watches, unauthorized requests) served so far.
    pub fn counts(&self) -> (u64, u64, u64) {
        let st = self.shared.state.lock().unwrap();
        (st.lists, st.watches, st.unauthorized)
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.news.notify_all();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for t in self.connections.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

/// Where `bulk_nodes` put their underlay addresses: a node reaches them
/// through a router (the outside host).
pub const BULK_UNDERLAY: &str = "172.16.0.0/12";

/// `n` nodes named `bulk-I`, underlay addresses from 172.16.0.1 on, /24
/// pod subnets out of 10.0.0.0/10 (clear of the test clusters' 10.244/16).
pub fn bulk_nodes(n: u32) -> Vec<(String, Ipv4Addr, Option<String>)> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i);
            let net = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + (i << 8));
            (format!("bulk-{i}"), ip, Some(format!("{net}/24")))
        })
        .collect()
}

/// A node as `kubectl get node -o json` shows a kubelet's node.
fn node_object(name: &str, ip: Ipv4Addr, pod_cidr: Option<&str>) -> Value {
    let now = "2026-12-01T08:00:00Z";
    let mut spec = json!({});
    if let Some(c) = pod_cidr {
        spec = json!({"podCIDR": c, "podCIDRs": [c]});
    }
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": format!("{:08x}-5b1e-4c1e-9a5e-{:012x}", name.len(), name.bytes().map(u64::from).sum::<u64>()),
            "creationTimestamp": now,
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux"
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true"
            }
        },
        "spec": spec,
        "status": {
            "capacity": {"cpu": "2", "ephemeral-storage": "263174212Ki", "memory": "24564272Ki", "pods": "110"},
            "allocatable": {"cpu": "2", "ephemeral-storage": "242541353378", "memory": "24461872Ki", "pods": "110"},
            "conditions": [
                {"type": "NetworkUnavailable", "status": "True", "reason": "NoRouteCreated",
                 "message": "Node created without a route", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                 "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                 "message": "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
            ],
            "addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "6b1b1e0c8a7d4d8f9e5b3c2a1f0e9d8c", "systemUUID": "6b1b1e0c-8a7d-4d8f-9e5b-3c2a1f0e9d8c",
                "bootID": "0f2c8d43-6a3e-4f0e-9d55-1c7b2e8a9f10", "kernelVersion": "6.18.44",
                "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.6.20",
                "kubeletVersion": "v1.33.2", "kubeProxyVersion": "v1.33.2", "operatingSystem": "linux",
                "architecture": "amd64"
            }
        }
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

struct Request {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &mut dyn Conn) -> Result<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else { bail!("bad request line {line:?}") };
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2C", ","))))
        .collect();
    Ok(Request { method: method.into(), path: path.into(), query, headers, body })
}

fn respond(stream: &mut dyn Conn, code: u16, body: &Value) -> Result<()> {
    let text = body.to_string();
    let reason = if code < 300 { "OK" } else { "Error" };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    stream.write_all((head + &text).as_bytes())?;
    stream.flush()?;
    Ok(())
}

fn chunk(stream: &mut dyn Conn, event: &Value) -> Result<()> {
    let line = format!("{event}\n");
    // One write per chunk: a chunk split over segments waits for ACKs.
    stream.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())?;
    stream.flush()?;
    Ok(())
}

/// A connection, plain or TLS.
trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

fn accept(s: &Shared, tcp: TcpStream) -> Result<()> {
    if s.unreachable.load(Ordering::Relaxed) {
        // Linger 0: the close is a reset, not an orderly end.
        let reset = libc::linger { l_onoff: 1, l_linger: 0 };
        return Ok(nix::sys::socket::setsockopt(&tcp, nix::sys::socket::sockopt::Linger, &reset)?);
    }
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Watch events go out as they happen, not when Nagle lets them.
    tcp.set_nodelay(true)?;
    match &s.tls {
        None => serve(s, &mut { tcp }),
        Some(config) => {
            let conn = rustls::ServerConnection::new(config.clone())?;
            serve(s, &mut rustls::StreamOwned::new(conn, tcp))
        }
    }
}

fn serve(s: &Shared, stream: &mut dyn Conn) -> Result<()> {
    let req = read_request(stream)?;
    if req.headers.get("authorization") != Some(&format!("Bearer {}", s.token)) {
        s.state.lock().unwrap().unauthorized += 1;
        return respond(stream, 401, &status(401, "Unauthorized", "Unauthorized"));
    }
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "v1", "nodes"]) if req.query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(s, stream, &req)
        }
        ("GET", ["api", "v1", "nodes"]) => list(s, stream, &req),
        ("GET", ["api", "v1", "nodes", name]) => match s.state.lock().unwrap().nodes.get(*name).cloned() {
            Some(n) => respond(stream, 200, &n),
            None => respond(stream, 404, &status(404, "NotFound", &format!("nodes \"{name}\" not found"))),
        },
        ("PATCH", ["api", "v1", "nodes", name, "status"]) => patch_status(s, stream, &req, name),
        ("PATCH", ["api", "v1", "nodes", name]) => patch_metadata(s, stream, &req, name),
        _ => respond(stream, 404, &status(404, "NotFound", "the server could not find the requested resource")),
    }
}

fn list(s: &Shared, stream: &mut dyn Conn, req: &Request) -> Result<()> {
    let mut st = s.state.lock().unwrap();
    st.lists += 1;
    let offset: usize = req.query.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = req.query.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let items: Vec<Value> = st.nodes.values().skip(offset).take(limit).cloned().collect();
    let mut metadata = json!({"resourceVersion": st.revision.to_string()});
    let rest = st.nodes.len().saturating_sub(offset + items.len());
    if rest > 0 {
        metadata["continue"] = json!((offset + items.len()).to_string());
        metadata["remainingItemCount"] = json!(rest);
    }
    let body = json!({"kind": "NodeList", "apiVersion": "v1", "metadata": metadata, "items": items});
    drop(st);
    respond(stream, 200, &body)
}

fn watch(s: &Shared, stream: &mut dyn Conn, req: &Request) -> Result<()> {
    let from: u64 = req.query.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
    let bookmarks = req.query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = req.query.get("timeoutSeconds").and_then(|t| t.parse().ok()).map(Duration::from_secs);
    let deadline = Instant::now() + timeout.unwrap_or(Duration::from_secs(300));
    let (epoch, gone) = {
        let mut st = s.state.lock().unwrap();
        st.watches += 1;
        (st.epoch, from < st.compacted)
    };
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )?;
    let expired =
        || json!({"type": "ERROR", "object": status(410, "Expired", &format!("too old resource version: {from}"))});
    if gone {
        chunk(stream, &expired())?;
        return finish(stream);
    }
    let mut seen = from;
    let mut last_bookmark = Instant::now();
    let mut sent_initial_bookmark = false;
    while Instant::now() < deadline && !s.stop.load(Ordering::Relaxed) && !s.unreachable.load(Ordering::Relaxed) {
        let (news, rv, ended) = {
            let st = s.state.lock().unwrap();
            let st = if st.events.iter().all(|(r, _, _)| *r <= seen) && st.epoch == epoch {
                s.news.wait_timeout(st, TICK).unwrap().0
            } else {
                st
            };
            let news: Vec<Value> = st
                .events
                .iter()
                .filter(|(r, _, _)| *r > seen)
                .map(|(_, t, o)| json!({"type": t, "object": o}))
                .collect();
            (news, st.revision, st.epoch != epoch)
        };
        if ended {
            chunk(stream, &expired())?;
            return finish(stream);
        }
        for e in &news {
            chunk(stream, e)?;
        }
        seen = seen.max(rv);
        let due = !sent_initial_bookmark || last_bookmark.elapsed() >= BOOKMARK_EVERY;
        if bookmarks && due {
            let object = json!({"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": seen.to_string()}});
            chunk(stream, &json!({"type": "BOOKMARK", "object": object}))?;
            last_bookmark = Instant::now();
            sent_initial_bookmark = true;
        }
    }
    finish(stream)
}

fn finish(stream: &mut dyn Conn) -> Result<()> {
    write!(stream, "0\r\n\r\n")?;
    stream.flush()?;
    Ok(())
}

/// A PATCH's media type and body, or the API server's refusal: 400 for a
/// body that is not JSON, 415 for a patch type it does not take.
fn read_patch(req: &Request) -> Result<(String, Value), (u16, Value)> {
    let content_type = req.headers.get("content-type").cloned().unwrap_or_default();
    let body: Value =
        serde_json::from_slice(&req.body).map_err(|e| (400, status(400, "BadRequest", &e.to_string())))?;
    if content_type != "application/strategic-merge-patch+json" && content_type != "application/merge-patch+json" {
        return Err((415, status(415, "UnsupportedMediaType", &format!("{content_type} is not supported"))));
    }
    Ok((content_type, body))
}

fn patch_metadata(s: &Shared, stream: &mut dyn Conn, req: &Request, name: &str) -> Result<()> {
    let (content_type, body) = match read_patch(req) {
        Ok(patch) => patch,
        Err((code, refusal)) => return respond(stream, code, &refusal),
    };
    let mut st = s.state.lock().unwrap();
    st.metadata_patches.push(Patch { node: name.to_string(), content_type, body: body.clone() });
    let node = KubeApi::merge_metadata(&mut st, name, &body);
    drop(st);
    s.news.notify_all();
    match node {
        Some(node) => respond(stream, 200, &node),
        None => respond(stream, 404, &status(404, "NotFound", &format!("nodes \"{name}\" not found"))),
    }
}

fn patch_status(s: &Shared, stream: &mut dyn Conn, req: &Request, name: &str) -> Result<()> {
    let (content_type, body) = match read_patch(req) {
        Ok(patch) => patch,
        Err((code, refusal)) => return respond(stream, code, &refusal),
    };
    let mut st = s.state.lock().unwrap();
    st.patches.push(Patch { node: name.to_string(), content_type: content_type.clone(), body: body.clone() });
    let Some(mut node) = st.nodes.get(name).cloned() else {
        drop(st);
        return respond(stream, 404, &status(404, "NotFound", &format!("nodes \"{name}\" not found")));
    };
    // Strategic merge: conditions merge by their `type` key.
    let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let mut merged = conditions;
    for c in body["status"]["conditions"].as_array().into_iter().flatten() {
        match merged.iter_mut().find(|m| m["type"] == c["type"]) {
            Some(m) => {
                for (k, v) in c.as_object().into_iter().flatten() {
                    m[k] = v.clone();
                }
            }
            None => merged.push(c.clone()),
        }
    }
    node["status"]["conditions"] = Value::Array(merged);
    st.revision += 1;
    let rv = st.revision;
    node["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.nodes.insert(name.to_string(), node.clone());
    st.events.push((rv, "MODIFIED", node.clone()));
    drop(st);
    s.news.notify_all();
    respond(stream, 200, &node)
}
