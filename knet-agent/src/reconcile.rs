//! The difference between the nodes a source wants and what the kernel
//! holds, applied as a transaction.
//!
//! 1. `resolve`: everything that can fail without writing anything — this
//!    node in the set, its underlay device, the next hop to every other
//!    node, native mode's same-segment rule, map capacity — becomes a
//!    `Target`: the kernel state wanted, entry by entry.
//! 2. `plan` (pure): the operations that turn the kernel's state into it.
//! 3. `apply`: the operations in order; if one fails, the ones done are
//!    undone in reverse, so the kernel is left exactly as it was.
//!
//! No source is the empty set: the target is then "this node's pods only".

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;
use knet_common::node::{DataplaneConfig, MAX_NODES, MODE_LOCAL_ONLY, VXLAN_OVERHEAD};

use crate::{
    cluster::{NodeSet, NodeSpec},
    config::Mode,
    dataplane::SubnetEntry,
    host::{Link, NodeRoute},
    mac::MacAddr,
    masquerade::Masquerade,
};

/// The programs on the underlay device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub link: Link,
    /// `to_netdev` too (VXLAN mode: the host's own traffic to remote pods).
    pub egress: bool,
    /// BIG TCP: native mode with `big_tcp` on.
    pub big_tcp: bool,
}

/// The kernel state knet owns, entry by entry: wanted (`Target`) or found
/// (`KernelState`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entries {
    pub subnets: BTreeMap<Ipv4Net, SubnetEntry>,
    pub tunnel_sources: BTreeSet<Ipv4Addr>,
    pub routes: BTreeMap<Ipv4Net, NodeRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub config: DataplaneConfig,
    pub entries: Entries,
    /// `None`: no masquerade table (no cluster).
    pub masquerade: Option<Masquerade>,
    pub underlay: Option<Underlay>,
}

/// What is programmed. `masquerade` and `underlay` start unknown (`None`
/// in `known_*`): the first plan rewrites them in full.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelState {
    pub config: Option<DataplaneConfig>,
    pub entries: Entries,
    pub masquerade: Option<Option<Masquerade>>,
    pub underlay: Option<Underlay>,
}

/// One change to the kernel. Each carries what it replaces, so that its
/// inverse is known before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    SetConfig {
        new: DataplaneConfig,
        old: Option<DataplaneConfig>,
    },
    SetSubnet {
        net: Ipv4Net,
        new: SubnetEntry,
        old: Option<SubnetEntry>,
    },
    RemoveSubnet {
        net: Ipv4Net,
        old: SubnetEntry,
    },
    AddTunnelSource(Ipv4Addr),
    RemoveTunnelSource(Ipv4Addr),
    SetRoute {
        dst: Ipv4Net,
        new: NodeRoute,
        old: Option<NodeRoute>,
    },
    RemoveRoute {
        dst: Ipv4Net,
        old: NodeRoute,
    },
    /// `old: None` means unknown: replace the table whole.
    Masquerade {
        new: Option<Masquerade>,
        old: Option<Option<Masquerade>>,
    },
    AttachUnderlay(Underlay),
    DetachUnderlay(Underlay),
}

impl Op {
    /// The operation that undoes this one.
    fn inverse(&self) -> Option<Op> {
        Some(match self.clone() {
            Op::SetConfig { new, old } => Op::SetConfig { new: old?, old: Some(new) },
            Op::SetSubnet { net, new, old: Some(old) } => Op::SetSubnet { net, new: old, old: Some(new) },
            Op::SetSubnet { net, new, old: None } => Op::RemoveSubnet { net, old: new },
            Op::RemoveSubnet { net, old } => Op::SetSubnet { net, new: old, old: None },
            Op::AddTunnelSource(ip) => Op::RemoveTunnelSource(ip),
            Op::RemoveTunnelSource(ip) => Op::AddTunnelSource(ip),
            Op::SetRoute { dst, new, old: Some(old) } => Op::SetRoute { dst, new: old, old: Some(new) },
            Op::SetRoute { dst, new, old: None } => Op::RemoveRoute { dst, old: new },
            Op::RemoveRoute { dst, old } => Op::SetRoute { dst, new: old, old: None },
            // An unknown table cannot be put back; the next plan rewrites it.
            Op::Masquerade { new, old } => Op::Masquerade { new: old?, old: Some(new) },
            Op::AttachUnderlay(u) => Op::DetachUnderlay(u),
            Op::DetachUnderlay(u) => Op::AttachUnderlay(u),
        })
    }

    /// The operation's effect on the recorded kernel state.
    fn record(&self, state: &mut KernelState) {
        let e = &mut state.entries;
        match self {
            Op::SetConfig { new, .. } => state.config = Some(*new),
            Op::SetSubnet { net, new, .. } => {
                e.subnets.insert(*net, *new);
            }
            Op::RemoveSubnet { net, .. } => {
                e.subnets.remove(net);
            }
            Op::AddTunnelSource(ip) => {
                e.tunnel_sources.insert(*ip);
            }
            Op::RemoveTunnelSource(ip) => {
                e.tunnel_sources.remove(ip);
            }
            Op::SetRoute { dst, new, .. } => {
                e.routes.insert(*dst, *new);
            }
            Op::RemoveRoute { dst, .. } => {
                e.routes.remove(dst);
            }
            Op::Masquerade { new, .. } => state.masquerade = Some(new.clone()),
            Op::AttachUnderlay(u) => state.underlay = Some(u.clone()),
            Op::DetachUnderlay(_) => state.underlay = None,
        }
    }
}

/// The operations that turn `kernel` into `target`, in a safe order: with
/// no cluster the mode goes first (pods stop leaving the node before their
/// routes go); otherwise new and changed entries go in before the mode
/// and the underlay programs that use them, and stale entries go last.
pub fn plan(kernel: &KernelState, target: &Target) -> Vec<Op> {
    let mut ops = Vec::new();
    let config_op =
        (kernel.config != Some(target.config)).then_some(Op::SetConfig { new: target.config, old: kernel.config });
    let local_only = target.config.mode == MODE_LOCAL_ONLY;
    if local_only {
        ops.extend(config_op.clone());
    }
    let (have, want) = (&kernel.entries, &target.entries);
    for (net, new) in &want.subnets {
        let old = have.subnets.get(net).copied();
        if old != Some(*new) {
            ops.push(Op::SetSubnet { net: *net, new: *new, old });
        }
    }
    ops.extend(want.tunnel_sources.difference(&have.tunnel_sources).map(|ip| Op::AddTunnelSource(*ip)));
    for (dst, new) in &want.routes {
        let old = have.routes.get(dst).copied();
        if old != Some(*new) {
            ops.push(Op::SetRoute { dst: *dst, new: *new, old });
        }
    }
    if !local_only {
        ops.extend(config_op);
    }
    if kernel.underlay != target.underlay {
        ops.extend(kernel.underlay.clone().map(Op::DetachUnderlay));
        ops.extend(target.underlay.clone().map(Op::AttachUnderlay));
    }
    for (net, old) in &have.subnets {
        if !want.subnets.contains_key(net) {
            ops.push(Op::RemoveSubnet { net: *net, old: *old });
        }
    }
    for (dst, old) in &have.routes {
        if !want.routes.contains_key(dst) {
            ops.push(Op::RemoveRoute { dst: *dst, old: *old });
        }
    }
    ops.extend(have.tunnel_sources.difference(&want.tunnel_sources).map(|ip| Op::RemoveTunnelSource(*ip)));
    if kernel.masquerade.as_ref() != Some(&target.masquerade) {
        ops.push(Op::Masquerade { new: target.masquerade.clone(), old: kernel.masquerade.clone() });
    }
    ops
}

/// Carries out one operation.
#[allow(async_fn_in_trait)]
pub trait Kernel {
    async fn run(&mut self, op: &Op) -> Result<()>;
}

/// Runs `ops` in order and records each in `state`. If one fails, the ones
/// done are undone in reverse and `state` is left as it was; the error says
/// which operation failed (and whether undoing it failed too).
pub async fn apply(kernel: &mut impl Kernel, state: &mut KernelState, ops: &[Op]) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = kernel.run(op).await {
            let mut undo_failures = Vec::new();
            for done in ops[..i].iter().rev() {
                if let Some(inverse) = done.inverse() {
                    if let Err(u) = kernel.run(&inverse).await {
                        undo_failures.push(format!("{u:#}"));
                    }
                }
                if matches!(done, Op::Masquerade { old: None, .. }) {
                    // Put back nothing we know: make the next plan rewrite it.
                    state.masquerade = None;
                }
            }
            if undo_failures.is_empty() {
                return Err(e.context(format!(
                    "change {} of {} failed; the {i} before it were undone",
                    i + 1,
                    ops.len()
                )));
            }
            return Err(e.context(format!(
                "change {} of {} failed, and undoing the earlier ones failed too ({}); the next change rewrites them",
                i + 1,
                ops.len(),
                undo_failures.join("; ")
            )));
        }
    }
    for op in ops {
        op.record(state);
    }
    Ok(())
}

/// What `resolve` needs to know about this node.
#[derive(Debug, Clone)]
pub struct Local {
    pub name: String,
    pub mode: Mode,
    pub vni: u32,
    /// The pod subnet this agent serves, when fixed already (configured,
    /// or taken from the source earlier): the source must agree.
    pub pod_cidr: Option<Ipv4Net>,
    /// `big_tcp`: pods get BIG TCP in native mode.
    pub big_tcp: bool,
}

/// The lookups `resolve` makes: netlink in the agent, a table in tests.
#[allow(async_fn_in_trait)]
pub trait Lookups {
    async fn link_with_address(&self, ip: Ipv4Addr) -> Result<Option<Link>>;
    /// (gateway, outgoing ifindex) of the kernel's route to `ip`.
    async fn route_to(&self, ip: Ipv4Addr) -> Result<(Option<Ipv4Addr>, Option<u32>)>;
}

/// Next hops resolved for nodes as they were last applied: a node whose
/// address did not change is not looked up again.
#[derive(Debug, Clone, Default)]
pub struct NextHops {
    by_node: BTreeMap<String, NextHop>,
}

/// How the host reaches a node, as resolved for its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NextHop {
    node_ip: Ipv4Addr,
    /// The router toward the node, or the node itself.
    via: Ipv4Addr,
    /// No router, and out of the underlay: a neighbour there.
    neighbour: bool,
}

/// A resolved target, with the next hops to remember once it is applied.
#[derive(Debug)]
pub struct Resolved {
    pub target: Target,
    pub local: Option<NodeSpec>,
    pub next_hops: NextHops,
}

pub fn route_mtu(mode: Mode, underlay_mtu: u32) -> u32 {
    match mode {
        Mode::Vxlan => underlay_mtu - VXLAN_OVERHEAD,
        Mode::Native => underlay_mtu,
    }
}

/// The kernel state for `desired`. Fails, naming the node, on anything
/// that would fail half-way through applying it.
pub async fn resolve(
    desired: &NodeSet,
    local: &Local,
    lookups: &impl Lookups,
    known: &NextHops,
    underlay_now: Option<&Underlay>,
) -> Result<Resolved> {
    if desired.is_empty() {
        let config =
            DataplaneConfig { mode: MODE_LOCAL_ONLY, vni: 0, underlay_ifindex: 0, underlay_mtu: 0, node_ip: 0 };
        let mut entries = Entries::default();
        if let Some(cidr) = local.pod_cidr {
            own_subnet(&mut entries, cidr, Ipv4Addr::UNSPECIFIED);
        }
        let target = Target { config, entries, masquerade: None, underlay: None };
        return Ok(Resolved { target, local: None, next_hops: NextHops::default() });
    }
    if desired.len() > MAX_NODES as usize {
        bail!("{} nodes exceed the data path's capacity of {MAX_NODES}", desired.len());
    }
    let me = desired
        .get(&local.name)
        .with_context(|| format!("this node ({}) is not among the source's nodes", local.name))?;
    crate::config::check_pod_cidr_capacity(me.pod_cidr).with_context(|| format!("node {}", me.name))?;
    if let Some(cidr) = local.pod_cidr {
        if me.pod_cidr != cidr {
            bail!(
                "this node's pod CIDR {} differs from the {cidr} this agent serves; restart the agent to move it",
                me.pod_cidr
            );
        }
    }
    let link = match (underlay_now, known.by_node.get(&me.name)) {
        (Some(u), Some(hop)) if hop.node_ip == me.underlay_ip => u.link.clone(),
        (Some(_), Some(_)) => {
            bail!("this node's underlay IP changed to {}; restart the agent to move it", me.underlay_ip)
        }
        _ => lookups
            .link_with_address(me.underlay_ip)
            .await?
            .with_context(|| format!("no interface on this node has its underlay address {}", me.underlay_ip))?,
    };
    let config = DataplaneConfig {
        mode: local.mode.code(),
        vni: local.vni,
        underlay_ifindex: link.index,
        underlay_mtu: link.mtu,
        node_ip: knet_common::ipv4_key(me.underlay_ip.octets()),
    };
    let mtu = (local.mode == Mode::Vxlan).then(|| route_mtu(local.mode, link.mtu));
    let mut entries = Entries::default();
    let (mut node_ips, mut subnets) = (BTreeSet::new(), BTreeSet::new());
    let mut next_hops = NextHops::default();
    for node in desired.iter() {
        subnets.insert(node.pod_cidr);
        node_ips.insert(node.underlay_ip);
        if node.name == me.name {
            own_subnet(&mut entries, node.pod_cidr, node.underlay_ip);
            let hop = NextHop { node_ip: node.underlay_ip, via: node.underlay_ip, neighbour: false };
            next_hops.by_node.insert(node.name.clone(), hop);
            continue;
        }
        entries.tunnel_sources.insert(node.underlay_ip);
        let hop = match known.by_node.get(&node.name) {
            Some(hop) if hop.node_ip == node.underlay_ip => *hop,
            _ => {
                let (gateway, oif) = lookups
                    .route_to(node.underlay_ip)
                    .await
                    .with_context(|| format!("node {} ({})", node.name, node.underlay_ip))?;
                if local.mode == Mode::Native && (gateway.is_some() || oif != Some(link.index)) {
                    bail!(
                        "native mode needs every node on the underlay's L2 segment, but node {} ({}) is reached {}; use mode = \"vxlan\"",
                        node.name,
                        node.underlay_ip,
                        match gateway {
                            Some(gw) => format!("through the router {gw}"),
                            None => "through another interface".to_string(),
                        }
                    );
                }
                // The host's own traffic to the subnet leaves by the same
                // next hop as traffic to the node (VXLAN: `to_netdev`
                // encapsulates it on the way out).
                let via = gateway.unwrap_or(node.underlay_ip);
                NextHop { node_ip: node.underlay_ip, via, neighbour: gateway.is_none() && oif == Some(link.index) }
            }
        };
        next_hops.by_node.insert(node.name.clone(), hop);
        entries.subnets.insert(
            node.pod_cidr,
            SubnetEntry {
                node_ip: node.underlay_ip,
                local: false,
                neighbour: hop.neighbour,
                vtep_mac: peer_vtep_mac(node),
            },
        );
        entries.routes.insert(node.pod_cidr, NodeRoute::Via { via: hop.via, oif: link.index, mtu });
    }
    let target = Target {
        config,
        entries,
        masquerade: Some(Masquerade { local: me.pod_cidr, nodes: node_ips, subnets }),
        underlay: Some(Underlay {
            link,
            egress: local.mode == Mode::Vxlan,
            big_tcp: local.mode == Mode::Native && local.big_tcp,
        }),
    };
    Ok(Resolved { target, local: Some(me.clone()), next_hops })
}

/// The inner destination MAC toward `node`: the one its source published
/// (a flannel node's `flannel.1` drops frames for any other), else the one
/// a knet node has (whose decapsulation ignores it anyway).
pub fn peer_vtep_mac(node: &NodeSpec) -> MacAddr {
    node.vtep_mac.unwrap_or_else(|| MacAddr::vtep_for(node.underlay_ip))
}

/// This node's own pod subnet: in the subnet map (the programs drop what
/// no pod of it has) and unreachable for the host stack.
fn own_subnet(entries: &mut Entries, cidr: Ipv4Net, node_ip: Ipv4Addr) {
    entries.subnets.insert(cidr, SubnetEntry { node_ip, local: true, neighbour: false, vtep_mac: MacAddr([0; 6]) });
    entries.routes.insert(cidr, NodeRoute::Unreachable);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn link() -> Link {
        Link { name: "eth0".into(), index: 2, mac: crate::mac::MacAddr([2, 0, 0, 0, 0, 1]), mtu: 1500 }
    }

    fn node(name: &str, addr: &str, net: &str) -> NodeSpec {
        NodeSpec { name: name.into(), underlay_ip: ip(addr), pod_cidr: cidr(net), vtep_mac: None }
    }

    fn set(nodes: &[NodeSpec]) -> NodeSet {
        NodeSet::validate(nodes.to_vec()).unwrap()
    }

    /// Routes: 192.168.77.0/24 on link 2, 172.31.0.0/16 via a router,
    /// nothing else.
    struct Table;

    impl Lookups for Table {
        async fn link_with_address(&self, a: Ipv4Addr) -> Result<Option<Link>> {
            Ok((a == ip("192.168.77.10")).then(link))
        }
        async fn route_to(&self, a: Ipv4Addr) -> Result<(Option<Ipv4Addr>, Option<u32>)> {
            match a.octets() {
                [192, 168, 77, _] => Ok((None, Some(2))),
                [172, 31, _, _] => Ok((Some(ip("192.168.77.1")), Some(2))),
                _ => bail!("no route to {a}"),
            }
        }
    }

    fn local(mode: Mode) -> Local {
        Local { name: "a".into(), mode, vni: 1, pod_cidr: Some(cidr("10.244.0.0/24")), big_tcp: true }
    }

    fn three() -> NodeSet {
        set(&[
            node("a", "192.168.77.10", "10.244.0.0/24"),
            node("b", "192.168.77.11", "10.244.1.0/24"),
            node("c", "172.31.0.5", "10.244.2.0/24"),
        ])
    }

    async fn target(nodes: &NodeSet, mode: Mode) -> Result<Target> {
        Ok(resolve(nodes, &local(mode), &Table, &NextHops::default(), None).await?.target)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn resolves_next_hops_mtu_and_masquerade() {
        let t = block_on(target(&three(), Mode::Vxlan)).unwrap();
        assert_eq!(t.config.mode, knet_common::node::MODE_VXLAN);
        assert_eq!(
            t.entries.subnets[&cidr("10.244.0.0/24")],
            SubnetEntry { node_ip: ip("192.168.77.10"), local: true, neighbour: false, vtep_mac: MacAddr([0; 6]) }
        );
        // b shares the underlay's segment: sent to without a route lookup;
        // c is behind a router: its route picks the next hop per packet.
        assert!(t.entries.subnets[&cidr("10.244.1.0/24")].neighbour);
        assert!(!t.entries.subnets[&cidr("10.244.2.0/24")].neighbour);
        assert_eq!(t.entries.routes.len(), 3);
        assert_eq!(t.entries.routes[&cidr("10.244.0.0/24")], NodeRoute::Unreachable, "our own subnet");
        assert_eq!(
            t.entries.routes[&cidr("10.244.1.0/24")],
            NodeRoute::Via { via: ip("192.168.77.11"), oif: 2, mtu: Some(1450) }
        );
        assert!(
            matches!(t.entries.routes[&cidr("10.244.2.0/24")], NodeRoute::Via { via, .. } if via == ip("192.168.77.1"))
        );
        assert_eq!(t.entries.tunnel_sources, [ip("172.31.0.5"), ip("192.168.77.11")].into());
        let m = t.masquerade.as_ref().unwrap();
        assert_eq!((m.nodes.len(), m.subnets.len()), (3, 3));
    }

    #[test]
    fn everything_that_can_fail_fails_before_any_change() {
        let mut nodes = three().iter().cloned().collect::<Vec<_>>();
        nodes.push(node("d", "203.0.113.9", "10.244.3.0/24"));
        let e = block_on(target(&set(&nodes), Mode::Vxlan)).unwrap_err();
        assert!(format!("{e:#}").contains("node d (203.0.113.9): no route to 203.0.113.9"), "{e:#}");
        let e = block_on(target(&three(), Mode::Native)).unwrap_err();
        assert!(e.to_string().contains("node c (172.31.0.5) is reached through the router 192.168.77.1"), "{e}");
        let mut other = local(Mode::Vxlan);
        other.pod_cidr = Some(cidr("10.244.9.0/24"));
        let e = block_on(resolve(&three(), &other, &Table, &NextHops::default(), None)).unwrap_err();
        assert!(e.to_string().contains("differs from the 10.244.9.0/24"), "{e}");
        other.name = "z".into();
        let e = block_on(resolve(&three(), &other, &Table, &NextHops::default(), None)).unwrap_err();
        assert!(e.to_string().contains("this node (z) is not among"), "{e}");
    }

    #[test]
    fn the_empty_set_is_this_nodes_pods_only() {
        let t = block_on(target(&NodeSet::default(), Mode::Vxlan)).unwrap();
        assert_eq!(t.config.mode, MODE_LOCAL_ONLY);
        // Only our own subnet: in the map (unassigned addresses dropped)
        // and unreachable for the stack.
        let own = cidr("10.244.0.0/24");
        assert_eq!(
            t.entries.subnets.into_iter().collect::<Vec<_>>(),
            [(
                own,
                SubnetEntry {
                    node_ip: Ipv4Addr::UNSPECIFIED,
                    local: true,
                    neighbour: false,
                    vtep_mac: MacAddr([0; 6])
                }
            )]
        );
        assert_eq!(t.entries.routes.into_iter().collect::<Vec<_>>(), [(own, NodeRoute::Unreachable)]);
        assert!(t.entries.tunnel_sources.is_empty());
        assert_eq!((t.masquerade, t.underlay), (None, None));
        // A Kubernetes agent that has not learnt its subnet yet has nothing.
        let mut unknown = local(Mode::Vxlan);
        unknown.pod_cidr = None;
        let t = block_on(resolve(&NodeSet::default(), &unknown, &Table, &NextHops::default(), None)).unwrap().target;
        assert_eq!(t.entries, Entries::default());
    }

    #[test]
    fn a_plan_from_what_is_there_changes_only_the_difference() {
        let t = block_on(target(&three(), Mode::Vxlan)).unwrap();
        let fresh = plan(&KernelState::default(), &t);
        // 3 subnets, 2 sources, 3 routes, config, underlay, masquerade.
        assert_eq!(fresh.len(), 11, "{fresh:#?}");
        let mut state = KernelState::default();
        for op in &fresh {
            op.record(&mut state);
        }
        assert!(plan(&state, &t).is_empty());
        // Node b moves: its subnet, route and tunnel source change, nothing else.
        let moved = set(&[
            node("a", "192.168.77.10", "10.244.0.0/24"),
            node("b", "192.168.77.12", "10.244.1.0/24"),
            node("c", "172.31.0.5", "10.244.2.0/24"),
        ]);
        let t2 = block_on(target(&moved, Mode::Vxlan)).unwrap();
        let ops = plan(&state, &t2);
        assert!(matches!(&ops[0], Op::SetSubnet { net, old: Some(_), .. } if *net == cidr("10.244.1.0/24")), "{ops:?}");
        assert!(ops.contains(&Op::AddTunnelSource(ip("192.168.77.12"))));
        assert!(ops.contains(&Op::RemoveTunnelSource(ip("192.168.77.11"))));
        assert!(matches!(ops.last(), Some(Op::Masquerade { .. })));
        assert_eq!(ops.len(), 5, "{ops:#?}");
    }

    #[test]
    fn a_peers_vtep_mac_goes_into_its_subnet_and_a_new_one_is_a_change() {
        let t = block_on(target(&three(), Mode::Vxlan)).unwrap();
        // A source that gave none: the MAC a knet node has.
        assert_eq!(t.entries.subnets[&cidr("10.244.1.0/24")].vtep_mac, MacAddr::vtep_for(ip("192.168.77.11")));
        let mut state = KernelState::default();
        for op in plan(&KernelState::default(), &t) {
            op.record(&mut state);
        }
        let flannel: MacAddr = "9a:3f:11:22:33:44".parse().unwrap();
        let mut nodes = three().iter().cloned().collect::<Vec<_>>();
        nodes[1].vtep_mac = Some(flannel);
        let t2 = block_on(target(&set(&nodes), Mode::Vxlan)).unwrap();
        let ops = plan(&state, &t2);
        // Only node b's subnet entry is rewritten: same node, new MAC.
        assert_eq!(
            ops,
            vec![Op::SetSubnet {
                net: cidr("10.244.1.0/24"),
                new: SubnetEntry { node_ip: ip("192.168.77.11"), local: false, neighbour: true, vtep_mac: flannel },
                old: Some(SubnetEntry {
                    node_ip: ip("192.168.77.11"),
                    local: false,
                    neighbour: true,
                    vtep_mac: MacAddr::vtep_for(ip("192.168.77.11"))
                }),
            }]
        );
    }

    #[test]
    fn going_to_no_cluster_sets_the_mode_first() {
        let t = block_on(target(&three(), Mode::Vxlan)).unwrap();
        let mut state = KernelState::default();
        for op in plan(&KernelState::default(), &t) {
            op.record(&mut state);
        }
        state.underlay = None; // pinned links are pruned, not detached
        let empty = block_on(target(&NodeSet::default(), Mode::Vxlan)).unwrap();
        let ops = plan(&state, &empty);
        assert!(matches!(&ops[0], Op::SetConfig { new, .. } if new.mode == MODE_LOCAL_ONLY), "{ops:?}");
        // Our own subnet stays (its node address goes); nothing else is set.
        let own = cidr("10.244.0.0/24");
        assert!(
            ops.iter().all(|o| match o {
                Op::SetSubnet { net, .. } => *net == own,
                Op::SetRoute { .. } => false,
                _ => true,
            }),
            "{ops:?}"
        );
        assert!(!ops
            .iter()
            .any(|o| matches!(o, Op::RemoveRoute { dst, .. } | Op::RemoveSubnet { net: dst, .. } if *dst == own)));
        assert!(matches!(ops.last(), Some(Op::Masquerade { new: None, .. })));
    }

    /// A kernel in memory that fails the `fail_at`-th operation.
    struct Fake {
        state: KernelState,
        fail_at: Option<usize>,
        ran: usize,
    }

    impl Kernel for Fake {
        async fn run(&mut self, op: &Op) -> Result<()> {
            self.ran += 1;
            if Some(self.ran) == self.fail_at {
                bail!("injected failure");
            }
            op.record(&mut self.state);
            Ok(())
        }
    }

    #[test]
    fn a_failing_change_leaves_the_kernel_as_it_was() {
        let t = block_on(target(&three(), Mode::Vxlan)).unwrap();
        let mut before = KernelState::default();
        let first = plan(&before, &t);
        for op in &first {
            op.record(&mut before);
        }
        let mut nodes = three().iter().cloned().collect::<Vec<_>>();
        nodes.retain(|n| n.name != "b");
        nodes.push(node("d", "192.168.77.13", "10.244.3.0/24"));
        nodes.push(node("e", "192.168.77.14", "10.244.4.0/24"));
        let t2 = block_on(target(&set(&nodes), Mode::Vxlan)).unwrap();
        let ops = plan(&before, &t2);
        for fail_at in 1..=ops.len() {
            let mut fake = Fake { state: before.clone(), fail_at: Some(fail_at), ran: 0 };
            let mut recorded = before.clone();
            let e = block_on(apply(&mut fake, &mut recorded, &ops)).unwrap_err();
            assert!(format!("{e:#}").contains("injected failure"));
            assert_eq!(fake.state.entries, before.entries, "failing at {fail_at} left entries changed");
            assert_eq!(fake.state.config, before.config);
            assert_eq!(fake.state.masquerade, before.masquerade, "failing at {fail_at}");
            assert_eq!(recorded, before);
        }
        let mut fake = Fake { state: before.clone(), fail_at: None, ran: 0 };
        let mut recorded = before.clone();
        block_on(apply(&mut fake, &mut recorded, &ops)).unwrap();
        assert_eq!(fake.state, recorded);
        assert!(plan(&recorded, &t2).is_empty());
    }

    #[test]
    fn known_next_hops_are_not_looked_up_again() {
        struct Nothing;
        impl Lookups for Nothing {
            async fn link_with_address(&self, _: Ipv4Addr) -> Result<Option<Link>> {
                bail!("looked up the underlay")
            }
            async fn route_to(&self, a: Ipv4Addr) -> Result<(Option<Ipv4Addr>, Option<u32>)> {
                bail!("looked up {a}")
            }
        }
        let first = block_on(resolve(&three(), &local(Mode::Vxlan), &Table, &NextHops::default(), None)).unwrap();
        let underlay = first.target.underlay.clone();
        let again = block_on(resolve(&three(), &local(Mode::Vxlan), &Nothing, &first.next_hops, underlay.as_ref()));
        assert_eq!(again.unwrap().target, first.target);
    }
}
