//! The Kubernetes node source: a watcher over `Node` objects (list, then
//! watch from the listed `resourceVersion`, with bookmarks; a watch error
//! or a 410 Gone relists with bounded exponential backoff). Each node's pod
//! subnet comes from `spec.podCIDRs` (or `spec.podCIDR`), its underlay
//! address from its `InternalIP`. A relist replaces the set only once it is
//! complete, so routes of nodes that still exist are never withdrawn.
//!
//! flannel's node annotations are read and written as flanneld's own
//! Kubernetes subnet manager does (flannel's `pkg/subnet/kube`): a node
//! that carries them (a flannel node, or a knet node) is reached at its
//! `public-ip` with its `VtepMAC` as the inner destination, and the agent
//! publishes its own, so flannel nodes program it as one of theirs.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::{
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::watcher,
    Api, Client, ResourceExt,
};

use super::Publisher;
use crate::{
    cluster::{NodeSet, NodeSpec},
    config::parse_pod_cidr,
    mac::MacAddr,
    sources::file::parse_vtep_mac,
};

/// flannel's annotations (its default prefix `flannel.alpha.coreos.com`).
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
/// flanneld takes a Node as a peer only when this is "true".
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";

/// Events taken together before the set is published again: a burst of
/// changes (a relist, a thousand nodes joining) costs one publication.
const BATCH: usize = 4096;

/// A client from `kubeconfig` if given, else inferred: in-cluster
/// (`KUBERNETES_SERVICE_HOST` and the service account token), then
/// `$KUBECONFIG` or `~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes API configuration: not in a cluster (KUBERNETES_SERVICE_HOST) and no kubeconfig; set kubeconfig",
        )?,
    };
    Client::try_from(config).context("cannot build a Kubernetes client")
}

/// Why a node is left out of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    NoPodCidr,
    NoInternalIp,
    Invalid(String),
    /// Its flannel annotations say something knet cannot use.
    Flannel(String),
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::NoPodCidr => write!(f, "it has no IPv4 pod CIDR (spec.podCIDRs) yet"),
            Skipped::NoInternalIp => write!(f, "it has no IPv4 InternalIP in status.addresses"),
            Skipped::Invalid(why) => write!(f, "{why}"),
            Skipped::Flannel(why) => write!(f, "its flannel annotations: {why}"),
        }
    }
}

/// A peer's `Node` as knet needs it.
pub fn node_spec(node: &Node) -> Result<NodeSpec, Skipped> {
    read_node(node, true)
}

/// This node's own `Node`: its flannel annotations are the agent's to
/// write, or left by the flanneld this agent replaced (another MAC, maybe
/// another backend), so they never decide how the node is programmed: its
/// address is its `InternalIP`.
pub fn own_node_spec(node: &Node) -> Result<NodeSpec, Skipped> {
    read_node(node, false)
}

fn read_node(node: &Node, flannel: bool) -> Result<NodeSpec, Skipped> {
    // A node is known by its name (the store's key, the set's): without
    // one it could be neither added nor removed.
    let name = node
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Skipped::Invalid("it has no metadata.name".into()))?;
    let spec = node.spec.as_ref();
    let cidrs: Vec<&str> = match spec.and_then(|s| s.pod_cidrs.as_ref()).filter(|c| !c.is_empty()) {
        Some(list) => list.iter().map(String::as_str).collect(),
        None => spec.and_then(|s| s.pod_cidr.as_deref()).into_iter().collect(),
    };
    // Dual-stack nodes list an IPv4 and an IPv6 CIDR; knet takes the IPv4 one.
    let v4 = cidrs.iter().find(|c| !c.contains(':')).ok_or(Skipped::NoPodCidr)?;
    let pod_cidr = parse_pod_cidr(v4).map_err(|e| Skipped::Invalid(format!("spec.podCIDRs: {e}")))?;
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    let underlay_ip = addresses
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
        .ok_or(Skipped::NoInternalIp);
    let annotations = node.metadata.annotations.as_ref().filter(|_| flannel);
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
    match flannel_vtep(get(BACKEND_TYPE), get(BACKEND_DATA), get(PUBLIC_IP)).map_err(Skipped::Flannel)? {
        // flanneld sends to a peer's public-ip, whatever its InternalIP.
        Some(vtep) => Ok(NodeSpec { name, underlay_ip: vtep.public_ip, pod_cidr, vtep_mac: Some(vtep.mac) }),
        None => Ok(NodeSpec { name, underlay_ip: underlay_ip?, pod_cidr, vtep_mac: None }),
    }
}

/// A node's VXLAN endpoint as flannel publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlannelVtep {
    pub public_ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// flannel's vxlan `BackendData`, as flanneld marshals it (Go's
/// `json.Marshal` of `vxlanLeaseAttrs`: `{"VNI":1,"VtepMAC":"..."}`).
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct BackendData {
    #[serde(rename = "VNI")]
    vni: u32,
    #[serde(rename = "VtepMAC")]
    vtep_mac: String,
}

/// A node's flannel annotations: none at all is a node that does not
/// publish them (`None`); otherwise they must describe a vxlan endpoint
/// whole, or the node is skipped with the reason (never taken with half
/// of them).
pub fn flannel_vtep(
    backend_type: Option<&str>,
    backend_data: Option<&str>,
    public_ip: Option<&str>,
) -> Result<Option<FlannelVtep>, String> {
    if backend_type.is_none() && backend_data.is_none() && public_ip.is_none() {
        return Ok(None);
    }
    match backend_type {
        Some("vxlan") => {}
        Some(other) => return Err(format!("{BACKEND_TYPE} is {other:?}; knet reaches only vxlan nodes")),
        None => return Err(format!("{BACKEND_TYPE} is missing")),
    }
    let data = backend_data.ok_or_else(|| format!("{BACKEND_DATA} is missing"))?;
    let data: BackendData = serde_json::from_str(data)
        .map_err(|e| format!("{BACKEND_DATA} is not flannel's vxlan data ({{\"VNI\":1,\"VtepMAC\":\"...\"}}): {e}"))?;
    let mac = parse_vtep_mac(&data.vtep_mac).map_err(|e| format!("{BACKEND_DATA}: {e}"))?;
    let ip = public_ip.ok_or_else(|| format!("{PUBLIC_IP} is missing"))?;
    let public_ip = ip.parse().map_err(|_| format!("{PUBLIC_IP} {ip:?} is not an IPv4 address"))?;
    Ok(Some(FlannelVtep { public_ip, mac }))
}

/// The annotations flanneld's vxlan backend writes on its own Node, with
/// this node's VTEP: what a flannel node needs to program a route,
/// neighbour and FDB entry toward it.
pub fn flannel_annotations(vtep: FlannelVtep, vni: u32) -> BTreeMap<String, String> {
    let data = BackendData { vni, vtep_mac: vtep.mac.to_string() };
    BTreeMap::from([
        (BACKEND_TYPE.to_string(), "vxlan".to_string()),
        (BACKEND_DATA.to_string(), serde_json::to_string(&data).expect("plain struct")),
        (PUBLIC_IP.to_string(), vtep.public_ip.to_string()),
        (KUBE_SUBNET_MANAGER.to_string(), "true".to_string()),
    ])
}

/// Writes this node's flannel annotations (a strategic-merge patch of its
/// Node's metadata, as flanneld makes it; other annotations stay).
pub async fn publish_flannel_annotations(client: Client, name: &str, vtep: FlannelVtep, vni: u32) -> Result<()> {
    let api: Api<Node> = Api::all(client);
    let patch = serde_json::json!({"metadata": {"annotations": flannel_annotations(vtep, vni)}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("cannot patch the flannel annotations of node {name}"))?;
    Ok(())
}

/// The nodes seen so far by the agent of node `me`, by name, each usable
/// or skipped with a reason.
#[derive(Debug, Default, Clone)]
pub struct NodeStore {
    me: String,
    nodes: BTreeMap<String, Result<NodeSpec, Skipped>>,
}

impl NodeStore {
    pub fn new(me: &str) -> Self {
        NodeStore { me: me.to_string(), nodes: BTreeMap::new() }
    }

    /// The same node, with no nodes seen (a relist starts from it).
    fn empty(&self) -> Self {
        NodeStore::new(&self.me)
    }

    pub fn apply(&mut self, node: &Node) {
        let Some(name) = node.metadata.name.clone() else { return };
        let new = if name == self.me { own_node_spec(node) } else { node_spec(node) };
        if let Err(why) = &new {
            if self.nodes.get(&name).is_none_or(|old| old.as_ref().err() != Some(why)) {
                tracing::warn!(node = %name, reason = %why, "node skipped");
            }
        }
        self.nodes.insert(name, new);
    }

    pub fn delete(&mut self, node: &Node) {
        if let Some(name) = &node.metadata.name {
            self.nodes.remove(name);
        }
    }

    /// The usable nodes as a validated set, or why there is none: this node
    /// missing or skipped, or two nodes clashing.
    pub fn desired(&self) -> Result<NodeSet, String> {
        let me = &self.me;
        match self.nodes.get(me) {
            None => return Err(format!("this node ({me}) has no Node object in the Kubernetes API")),
            Some(Err(why)) => return Err(format!("this node ({me}) cannot be programmed: {why}")),
            Some(Ok(_)) => {}
        }
        let usable: Vec<NodeSpec> = self.nodes.values().filter_map(|n| n.as_ref().ok().cloned()).collect();
        NodeSet::validate(usable.clone()).map_err(|e| {
            let other = e.other.map(|o| format!(" (node {})", usable[o].name)).unwrap_or_default();
            format!("node {}: {}{other}", usable[e.index].name, e.msg)
        })
    }
}

/// After a watch error the watcher starts again this long later, doubling
/// to the cap, and from the start once it has listed in full again.
const RESTART_FIRST: Duration = Duration::from_millis(800);
const RESTART_CAP: Duration = Duration::from_secs(30);

/// Watches `Node` objects until no one listens, publishing the full set
/// after every batch of events. After an error the watch starts over with
/// a list: kube's watcher would resume the watch instead, and a resumed
/// watch with nothing new to say never tells the source it is in step
/// again (the agent would stay not ready until some node changed).
pub async fn watch(client: Client, me: String, publisher: Publisher) {
    let api: Api<Node> = Api::all(client);
    let mut store = NodeStore::new(&me);
    let mut pause = RESTART_FIRST;
    loop {
        match follow(&api, &publisher, &mut store).await {
            Followed::Closed => return,
            Followed::Failed { listed } => {
                if listed {
                    pause = RESTART_FIRST;
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RESTART_CAP);
    }
}

enum Followed {
    /// The agent stopped listening.
    Closed,
    /// The watch failed; `listed`: after a full list.
    Failed { listed: bool },
}

/// One watcher, from its list until its first error.
async fn follow(api: &Api<Node>, publisher: &Publisher, store: &mut NodeStore) -> Followed {
    let events = watcher(api.clone(), watcher::Config::default()).ready_chunks(BATCH);
    futures::pin_mut!(events);
    // A relist fills this; it replaces `store` only once complete.
    let mut relisting: Option<NodeStore> = None;
    let mut listed = false;
    while let Some(batch) = events.next().await {
        if publisher.is_closed() {
            return Followed::Closed;
        }
        let mut causes = Causes::default();
        let mut error = None;
        for event in batch {
            match event {
                Ok(watcher::Event::Init) => relisting = Some(store.empty()),
                Ok(watcher::Event::InitApply(node)) => relisting.get_or_insert_with(|| store.empty()).apply(&node),
                Ok(watcher::Event::InitDone) => {
                    *store = relisting.take().unwrap_or_else(|| store.empty());
                    causes.push("Kubernetes Node list".into());
                    listed = true;
                }
                Ok(watcher::Event::Apply(node)) => {
                    store.apply(&node);
                    causes.push(format!("Kubernetes Node {} updated", node.name_any()));
                }
                Ok(watcher::Event::Delete(node)) => {
                    store.delete(&node);
                    causes.push(format!("Kubernetes Node {} deleted", node.name_any()));
                }
                Err(e) => error = Some(format!("watching Nodes failed (listing again with backoff): {e}")),
            }
        }
        // Whatever came before the error in this batch is taken first.
        if !causes.0.is_empty() {
            match store.desired() {
                Ok(set) => publisher.nodes(set, causes.summary()),
                Err(e) => {
                    tracing::error!(error = %e, "Kubernetes nodes not taken; keeping the running state");
                    publisher.failed(e);
                }
            }
        }
        if let Some(e) = error {
            tracing::warn!(error = %e, "Kubernetes watch");
            publisher.failed(e);
            return Followed::Failed { listed };
        }
    }
    Followed::Failed { listed }
}

/// The events of one batch, for the log: each named when there are a few.
#[derive(Default)]
struct Causes(Vec<String>);

impl Causes {
    fn push(&mut self, cause: String) {
        self.0.push(cause);
    }

    fn summary(&self) -> String {
        match self.0.len() {
            0..=3 => self.0.join(", "),
            n => format!("{}, and {} more Kubernetes Node events", self.0[..3].join(", "), n - 3),
        }
    }
}

/// Clears this node's `NetworkUnavailable` condition (as flannel and Calico
/// do once their network is up), with a strategic-merge patch of
/// `nodes/status` that touches no other condition.
pub async fn mark_network_available(client: Client, name: &str) -> Result<()> {
    let api: Api<Node> = Api::all(client);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = serde_json::json!({
        "status": {"conditions": [{
            "type": "NetworkUnavailable",
            "status": "False",
            "reason": "KnetIsUp",
            "message": "knet programmed this node's pod network",
            "lastTransitionTime": now,
            "lastHeartbeatTime": now,
        }]}
    });
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .with_context(|| format!("cannot patch the NetworkUnavailable condition of node {name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Node as an API server returns it (shape from the Kubernetes API
    /// reference, trimmed of fields knet does not read).
    fn node(name: &str, cidrs: &[&str], internal_ip: Option<&str>) -> Node {
        let mut addresses = vec![serde_json::json!({"type": "Hostname", "address": name})];
        if let Some(ip) = internal_ip {
            addresses.insert(0, serde_json::json!({"type": "InternalIP", "address": ip}));
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "uid": "6d1c4b0e-0000-4000-8000-000000000001", "resourceVersion": "4711",
                         "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs},
            "status": {"addresses": addresses,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastHeartbeatTime": "2026-11-30T10:00:00Z",
                                       "lastTransitionTime": "2026-11-30T10:00:00Z"}]}
        }))
        .unwrap()
    }

    #[test]
    fn reads_the_ipv4_pod_cidr_and_internal_ip() {
        let n = node_spec(&node("a", &["fd00:1::/64", "10.244.3.0/24"], Some("192.168.77.13"))).unwrap();
        assert_eq!(n.pod_cidr.to_string(), "10.244.3.0/24");
        assert_eq!(n.underlay_ip, Ipv4Addr::new(192, 168, 77, 13));
        // Only podCIDR (older API servers).
        let mut old = node("b", &[], Some("192.168.77.14"));
        old.spec.as_mut().unwrap().pod_cidr = Some("10.244.4.0/24".into());
        assert_eq!(node_spec(&old).unwrap().pod_cidr.to_string(), "10.244.4.0/24");
    }

    #[test]
    fn nodes_knet_cannot_program_are_skipped_with_a_reason() {
        assert_eq!(node_spec(&node("a", &[], Some("192.168.77.13"))), Err(Skipped::NoPodCidr));
        assert_eq!(node_spec(&node("a", &["10.244.3.0/24"], None)), Err(Skipped::NoInternalIp));
        assert_eq!(node_spec(&node("a", &["fd00::/64"], Some("192.168.77.13"))), Err(Skipped::NoPodCidr));
        assert!(matches!(node_spec(&node("a", &["10.244.3.7/24"], Some("1.2.3.4"))), Err(Skipped::Invalid(_))));
        // Found by the fuzz target: a Node without a name was read as "".
        let nameless = Skipped::Invalid("it has no metadata.name".into());
        assert_eq!(node_spec(&node("", &["10.244.3.0/24"], Some("192.168.77.13"))), Err(nameless.clone()));
        let mut unnamed = node("a", &["10.244.3.0/24"], Some("192.168.77.13"));
        unnamed.metadata.name = None;
        assert_eq!(node_spec(&unnamed), Err(nameless));
    }

    /// `node` with annotations, as flanneld leaves them on its Node.
    fn annotated(name: &str, cidr: &str, internal_ip: &str, annotations: &[(&str, &str)]) -> Node {
        let mut n = node(name, &[cidr], Some(internal_ip));
        n.metadata.annotations = Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        n
    }

    /// The annotations as flanneld writes them: the keys of flannel's
    /// `pkg/subnet/kube/annotations.go`, the data as its vxlan backend
    /// marshals it (`pkg/backend/vxlan/vxlan.go`).
    const FLANNEL: [(&str, &str); 4] = [
        (BACKEND_DATA, r#"{"VNI":1,"VtepMAC":"9a:3f:5c:1e:77:02"}"#),
        (BACKEND_TYPE, "vxlan"),
        (KUBE_SUBNET_MANAGER, "true"),
        (PUBLIC_IP, "192.168.77.12"),
    ];

    #[test]
    fn a_flannel_node_is_reached_at_its_public_ip_with_its_vtep_mac() {
        let n = node_spec(&annotated("f", "10.244.2.0/24", "10.0.0.9", &FLANNEL)).unwrap();
        assert_eq!(n.underlay_ip, Ipv4Addr::new(192, 168, 77, 12));
        assert_eq!(n.vtep_mac.unwrap().to_string(), "9a:3f:5c:1e:77:02");
        // Without flannel's annotations: InternalIP, no MAC.
        let plain = node_spec(&node("k", &["10.244.3.0/24"], Some("192.168.77.13"))).unwrap();
        assert_eq!((plain.underlay_ip, plain.vtep_mac), (Ipv4Addr::new(192, 168, 77, 13), None));
        // Other annotations are none of knet's business.
        let other =
            node_spec(&annotated("k", "10.244.3.0/24", "192.168.77.13", &[("node.alpha.kubernetes.io/ttl", "0")]));
        assert_eq!(other.unwrap().vtep_mac, None);
    }

    #[test]
    fn hostile_flannel_annotations_skip_the_node_with_the_reason() {
        let with = |key: &str, value: Option<&str>| {
            let mut a: Vec<(&str, &str)> = FLANNEL.iter().copied().filter(|(k, _)| *k != key).collect();
            if let Some(v) = value {
                a.push((key, v));
            }
            node_spec(&annotated("f", "10.244.2.0/24", "192.168.77.12", &a)).unwrap_err().to_string()
        };
        for (key, value, needle) in [
            (BACKEND_TYPE, Some("host-gw"), "backend-type is \"host-gw\"; knet reaches only vxlan nodes"),
            (BACKEND_TYPE, None, "backend-type is missing"),
            (BACKEND_DATA, None, "backend-data is missing"),
            (BACKEND_DATA, Some("null"), "backend-data is not flannel's vxlan data"),
            (BACKEND_DATA, Some(r#"{"VNI":1}"#), "missing field `VtepMAC`"),
            (BACKEND_DATA, Some(r#"{"VNI":-1,"VtepMAC":"9a:3f:5c:1e:77:02"}"#), "backend-data is not flannel's"),
            (
                BACKEND_DATA,
                Some(r#"{"VNI":1,"VtepMAC":"9a:3f:5c:1e:77"}"#),
                "VTEP MAC: \"9a:3f:5c:1e:77\" is not a MAC",
            ),
            (BACKEND_DATA, Some(r#"{"VNI":1,"VtepMAC":"ff:ff:ff:ff:ff:ff"}"#), "is not a unicast address"),
            (BACKEND_DATA, Some(&"x".repeat(100_000)), "backend-data is not flannel's"),
            (PUBLIC_IP, None, "public-ip is missing"),
            (PUBLIC_IP, Some("fd00::1"), "public-ip \"fd00::1\" is not an IPv4 address"),
            (PUBLIC_IP, Some("192.168.77.12 "), "is not an IPv4 address"),
        ] {
            let why = with(key, value);
            assert!(why.starts_with("its flannel annotations: "), "{why}");
            assert!(why.contains(needle), "{key}={value:?}: {why}");
        }
    }

    #[test]
    fn this_nodes_own_flannel_annotations_never_decide_how_it_is_programmed() {
        // Left by the flanneld this agent replaced: a host-gw backend.
        let stale = [(BACKEND_TYPE, "host-gw"), (PUBLIC_IP, "10.0.0.9")];
        let mut store = NodeStore::new("me");
        store.apply(&annotated("me", "10.244.0.0/24", "192.168.77.10", &stale));
        store.apply(&annotated("f", "10.244.2.0/24", "192.168.77.12", &FLANNEL));
        let set = store.desired().unwrap();
        let me = set.get("me").unwrap();
        assert_eq!((me.underlay_ip, me.vtep_mac), (Ipv4Addr::new(192, 168, 77, 10), None));
        assert!(set.get("f").unwrap().vtep_mac.is_some(), "a peer's annotations are read");
        // The same Node as a peer's is skipped.
        assert!(matches!(
            node_spec(&annotated("me", "10.244.0.0/24", "192.168.77.10", &stale)),
            Err(Skipped::Flannel(_))
        ));
    }

    #[test]
    fn this_nodes_annotations_are_flannels_byte_for_byte() {
        let vtep = FlannelVtep {
            public_ip: Ipv4Addr::new(192, 168, 77, 10),
            mac: MacAddr::vtep_for([192, 168, 77, 10].into()),
        };
        let a = flannel_annotations(vtep, 1);
        assert_eq!(a[BACKEND_DATA], r#"{"VNI":1,"VtepMAC":"02:6b:c0:a8:4d:0a"}"#);
        assert_eq!((a[BACKEND_TYPE].as_str(), a[PUBLIC_IP].as_str()), ("vxlan", "192.168.77.10"));
        assert_eq!(a[KUBE_SUBNET_MANAGER], "true");
        // And they read back as the same endpoint.
        let got = flannel_vtep(Some(&a[BACKEND_TYPE]), Some(&a[BACKEND_DATA]), Some(&a[PUBLIC_IP])).unwrap();
        assert_eq!(got, Some(vtep));
    }

    #[test]
    fn the_store_needs_this_node_and_leaves_out_skipped_ones() {
        let nodes = [node("a", &["10.244.0.0/24"], Some("192.168.77.10")), node("b", &[], Some("192.168.77.11"))];
        let store_of = |me: &str| {
            let mut store = NodeStore::new(me);
            nodes.iter().for_each(|n| store.apply(n));
            store
        };
        assert!(store_of("c").desired().unwrap_err().contains("this node (c) has no Node object"));
        assert!(store_of("b").desired().unwrap_err().contains("no IPv4 pod CIDR"));
        let mut store = store_of("a");
        let set = store.desired().unwrap();
        assert_eq!(set.len(), 1);
        store.apply(&node("c", &["10.244.0.0/24"], Some("192.168.77.12")));
        assert!(store.desired().unwrap_err().contains("overlaps node a's"));
        store.delete(&node("c", &[], None));
        assert_eq!(store.desired().unwrap().len(), 1);
    }
}
