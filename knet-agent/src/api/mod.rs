//! The local endpoint API: HTTP/JSON on a Unix socket that only root may
//! open (mode 0600 from the moment it exists: bound in a private directory,
//! then moved into place). The CNI plugin and operators are its clients;
//! the agent behind it is the only writer of BPF state. At most
//! `MAX_CONNECTIONS` connections are served at once (more get 503 without
//! being read); headers must arrive within `HEADER_TIMEOUT`, a request is
//! answered within `REQUEST_TIMEOUT` (else 408), bodies above `MAX_BODY`
//! are 413.
//!
//! | method and path            | does                                   |
//! |----------------------------|----------------------------------------|
//! | `POST /v1/endpoints`       | add an endpoint (`AddEndpoint` JSON)   |
//! | `DELETE /v1/endpoints/IP`  | delete the endpoint with that IP       |
//! | `GET /v1/endpoints`        | list endpoints                         |
//! | `GET /v1/datapath`         | what the kernel map holds right now    |
//! | `GET /v1/datapath/links/IF` | programs on the tcx ingress of IF     |
//! | `GET /v1/stats`            | `STATS` summed over CPUs               |
//! | `GET /v1/node`             | this node: pod CIDR, mode, route MTU   |
//! | `GET /v1/nodes`            | the cluster's nodes, mode, route MTU   |
//! | `GET /v1/status`           | the same without the node list         |
//! | `GET /healthz`             | liveness                               |
//! | `GET /readyz`              | readiness: first reconcile done, source in sync |
//!
//! Errors are `{"error": "..."}` with 400 (malformed or invalid), 404
//! (unknown endpoint), 408 (too slow), 409 (conflict), 413 (body too
//! large), 422 (host veth missing, or not a pod's veth: loopback, the
//! underlay, a veth whose peer is in the node's namespace), 503 (not ready:
//! this node's pod CIDR not known yet; or at the connection cap), 507 (the
//! endpoint map is full) or 500.

pub mod client;
mod server;

pub(crate) use server::probes;
pub use server::{serve, Shared};

pub use crate::serving::{HEADER_TIMEOUT, MAX_BODY, MAX_CONNECTIONS, REQUEST_TIMEOUT};

/// The CNI plugin names the CNI command it is running (`ADD`, `DEL`,
/// `CHECK`) in this header on each of its calls, so the agent can count
/// them (`knet_cni_requests_total`); other clients leave it out.
pub const CNI_COMMAND_HEADER: &str = "x-knet-cni-command";

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatEntry {
    pub name: String,
    pub drop: bool,
    pub packets: u64,
    pub bytes: u64,
}

impl From<(knet_common::Stat, knet_common::Counter)> for StatEntry {
    fn from((stat, c): (knet_common::Stat, knet_common::Counter)) -> Self {
        StatEntry { name: stat.name().into(), drop: stat.is_drop(), packets: c.packets, bytes: c.bytes }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathView {
    /// Keys of the kernel's `ENDPOINTS` map.
    pub endpoint_map_ips: Vec<std::net::Ipv4Addr>,
    /// Entries of `NODE_SUBNETS`, as "subnet via node-ip (local)" or
    /// "subnet via node-ip vtep MAC", sorted.
    pub node_subnets: Vec<String>,
    /// Keys of `NODES`: the tunnel sources accepted.
    pub tunnel_sources: Vec<std::net::Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPrograms {
    /// Names of the programs the kernel runs on the link's tcx ingress.
    pub tcx_ingress: Vec<String>,
    /// The same programs' kernel ids and tags (the hash of their code).
    pub tcx_ingress_ids: Vec<ProgramId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramId {
    pub id: u32,
    /// As bpftool prints it: 16 hex digits.
    pub tag: String,
}

impl ProgramId {
    /// A program's kernel id and tag (the hash of its code), the tag as
    /// bpftool prints it.
    pub fn new(id: u32, tag: u64) -> Self {
        ProgramId { id, tag: format!("{tag:016x}") }
    }
}

/// This node as a CNI plugin needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node_name: String,
    pub pod_cidr: ipnet::Ipv4Net,
    /// `vxlan` or `native`; absent without a node source (no cross-node path).
    pub mode: Option<crate::config::Mode>,
    /// MTU for pod routes that leave the node (pods' own subnet keeps the
    /// device MTU); absent without a node source.
    pub route_mtu: Option<u32>,
    /// This node's VTEP MAC, the inner destination its peers must use (a
    /// flannel node programmed by hand needs it); VXLAN mode only, once
    /// programmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<crate::mac::MacAddr>,
    /// The IPv4 GSO and GRO size a new pod's veth gets: BIG TCP, in native
    /// mode when the underlay carries it; absent, the kernel's 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gso_max_size: Option<u32>,
}
