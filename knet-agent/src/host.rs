//! Netlink views and changes of this node's network: the links the agent
//! attaches to, the underlay, and the routes for pod subnets.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context, Result};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::{
    packet_route::{
        address::AddressAttribute,
        link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteMetric, RouteProtocol, RouteType},
    },
    Handle, LinkUnspec, RouteMessageBuilder,
};

use crate::mac::MacAddr;

/// Routes the agent installs carry this protocol number, so it can tell
/// them from everybody else's (`ip route show proto 75`).
pub const ROUTE_PROTOCOL: u8 = 75;

/// A network interface as the data path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    pub mtu: u32,
}

/// What the agent checks of a link named as a pod's host-side veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTraits {
    pub veth: bool,
    /// The link's peer lives in another network namespace (a pod's).
    pub peer_elsewhere: bool,
}

/// A route for a pod subnet, as the agent installs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRoute {
    /// Another node's subnet: via the next hop toward that node.
    Via { via: Ipv4Addr, oif: u32, mtu: Option<u32> },
    /// This node's own subnet: each pod has a /32 route of its own, so
    /// what matches here is an address no pod has. Unreachable, rather
    /// than left to the default route, which would carry it off the node.
    Unreachable,
}

/// The largest IPv4 GSO and GRO packet knet asks for in native mode (BIG
/// TCP, as Cilium's `enable-ipv4-big-tcp`, and its size): TCP in the pods
/// then builds packets of up to 192 KiB instead of 64 KiB, so each byte
/// crosses fewer per-packet costs on the way. VXLAN mode keeps 64 KiB: the
/// outer headers of an encapsulated packet cannot carry a larger length.
pub const BIG_TCP_SIZE: u32 = 196_608;

/// The IPv4 GSO size without BIG TCP (the kernel's `GSO_LEGACY_MAX_SIZE`).
pub const LEGACY_GSO_SIZE: u32 = 65_536;

/// The GSO and GRO packet sizes a link allows for IPv4, and the largest its
/// driver can segment (`gso_ipv4_max_size`, `gro_ipv4_max_size`,
/// `tso_max_size`; iproute2 6.1 shows none of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GsoLimits {
    pub gso_ipv4_max_size: u32,
    pub gro_ipv4_max_size: u32,
    pub tso_max_size: u32,
}

impl GsoLimits {
    fn of(msg: &LinkMessage) -> Self {
        let mut limits = GsoLimits::default();
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::GsoIpv4MaxSize(v) => limits.gso_ipv4_max_size = *v,
                LinkAttribute::GroIpv4MaxSize(v) => limits.gro_ipv4_max_size = *v,
                LinkAttribute::TsoMaxSize(v) => limits.tso_max_size = *v,
                _ => {}
            }
        }
        limits
    }

    /// The sizes to set for packets of up to `size` bytes: GSO no larger
    /// than the driver can take, and neither ever lowered (someone else may
    /// have raised them for their own reasons). `None`: nothing to change.
    pub fn raised_to(self, size: u32) -> Option<(u32, u32)> {
        let gso = self.gso_ipv4_max_size.max(size.min(self.tso_max_size));
        let gro = self.gro_ipv4_max_size.max(size);
        (gso != self.gso_ipv4_max_size || gro != self.gro_ipv4_max_size).then_some((gso, gro))
    }
}

/// Where the kernel sends packets for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTo {
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a netlink socket in the current network namespace; its
    /// connection task runs on the current tokio runtime.
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection().context("cannot open a netlink socket")?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The link named `name` with the traits a pod's host veth must have,
    /// or `None` if there is no such link.
    pub async fn link_with_traits(&self, name: &str) -> Result<Option<(Link, LinkTraits)>> {
        let Some(msg) = lookup(self.handle.link().get().match_name(name.to_string()), name).await? else {
            return Ok(None);
        };
        let traits = LinkTraits {
            veth: msg.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(infos) if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
            }),
            peer_elsewhere: msg.attributes.iter().any(|a| matches!(a, LinkAttribute::LinkNetNsId(_))),
        };
        Ok(link_from(msg).map(|link| (link, traits)))
    }

    /// Frames `name` received for another host's MAC and dropped
    /// (`rx_otherhost_dropped` of IFLA_STATS64; iproute2 6.1 does not show
    /// it): how a kernel VXLAN peer such as flannel's `flannel.1` refuses a
    /// frame whose inner destination is not its VTEP MAC. `None` if there
    /// is no such link or the kernel does not count it.
    pub async fn rx_otherhost_dropped(&self, name: &str) -> Result<Option<u64>> {
        let Some(msg) = lookup(self.handle.link().get().match_name(name.to_string()), name).await? else {
            return Ok(None);
        };
        Ok(msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Stats64(s) => Some(s.rx_otherhost_dropped),
            _ => None,
        }))
    }

    /// The IPv4 GSO and GRO limits of the link named `name`, or `None` if
    /// there is no such link.
    pub async fn gso_limits(&self, name: &str) -> Result<Option<GsoLimits>> {
        Ok(lookup(self.handle.link().get().match_name(name.to_string()), name).await?.map(|m| GsoLimits::of(&m)))
    }

    /// Raises link `index`'s IPv4 GSO and GRO sizes toward `size` (see
    /// `GsoLimits::raised_to`); the GSO size it has afterwards.
    pub async fn raise_gso_limits(&self, index: u32, size: u32) -> Result<u32> {
        let msg = lookup(self.handle.link().get().match_index(index), &index.to_string())
            .await?
            .with_context(|| format!("no link {index}"))?;
        let limits = GsoLimits::of(&msg);
        let Some((gso, gro)) = limits.raised_to(size) else {
            return Ok(limits.gso_ipv4_max_size);
        };
        let mut set = LinkUnspec::new_with_index(index).build();
        set.attributes.push(LinkAttribute::GsoIpv4MaxSize(gso));
        set.attributes.push(LinkAttribute::GroIpv4MaxSize(gro));
        self.handle
            .link()
            .set(set)
            .execute()
            .await
            .with_context(|| format!("cannot set link {index}'s gso_ipv4_max_size {gso}, gro_ipv4_max_size {gro}"))?;
        Ok(gso)
    }

    /// The link with ifindex `index`, or `None` if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        Ok(lookup(self.handle.link().get().match_index(index), &index.to_string()).await?.and_then(link_from))
    }

    /// The link carrying the IPv4 address `ip`, if any.
    pub async fn link_with_address(&self, ip: Ipv4Addr) -> Result<Option<Link>> {
        let mut addrs = self.handle.address().get().execute();
        while let Some(msg) = addrs.try_next().await.context("netlink address dump failed")? {
            let has = msg.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) if *v == ip)
            });
            if has {
                return self.link_by_index(msg.header.index).await;
            }
        }
        Ok(None)
    }

    /// The kernel's route lookup for `dst` (`ip route get`).
    pub async fn route_to(&self, dst: Ipv4Addr) -> Result<RouteTo> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst, 32).build();
        let found = self.handle.route().get(msg).execute().try_next().await;
        let msg = match found {
            Ok(Some(m)) => m,
            Ok(None) => bail!("no route to {dst}"),
            Err(e) => return Err(e).with_context(|| format!("no route to {dst}")),
        };
        let mut to = RouteTo { gateway: None, oif: None };
        for attr in msg.attributes {
            match attr {
                RouteAttribute::Gateway(RouteAddress::Inet(gw)) => to.gateway = Some(gw),
                RouteAttribute::Oif(i) => to.oif = Some(i),
                _ => {}
            }
        }
        Ok(to)
    }

    /// Adds or replaces the route to `dst`.
    pub async fn replace_route(&self, dst: Ipv4Net, route: NodeRoute) -> Result<()> {
        let builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        let msg = match route {
            NodeRoute::Via { via, oif, mtu } => {
                let mut msg = builder.gateway(via).output_interface(oif).build();
                if let Some(mtu) = mtu {
                    msg.attributes.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
                }
                msg
            }
            NodeRoute::Unreachable => builder.kind(RouteType::Unreachable).build(),
        };
        self.handle.route().add(msg).replace().execute().await.with_context(|| match route {
            NodeRoute::Via { via, .. } => format!("cannot install route {dst} via {via}"),
            NodeRoute::Unreachable => format!("cannot install the unreachable route for {dst}"),
        })
    }

    /// Removes the route to `dst` that the agent installed (the kernel
    /// matches the type too); gone already is fine.
    pub async fn delete_route(&self, dst: Ipv4Net, route: NodeRoute) -> Result<()> {
        let kind = match route {
            NodeRoute::Via { .. } => RouteType::Unicast,
            NodeRoute::Unreachable => RouteType::Unreachable,
        };
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .kind(kind)
            .build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -(nix::errno::Errno::ESRCH as i32) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove route {dst}")),
        }
    }

    /// The routes carrying the agent's protocol number, with their next hop.
    pub async fn agent_routes(&self) -> Result<Vec<(Ipv4Net, NodeRoute)>> {
        let mut out = Vec::new();
        let mut routes = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        while let Some(msg) = routes.try_next().await.context("netlink route dump failed")? {
            if msg.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
                continue;
            }
            let (mut dst, mut via, mut oif, mut mtu) = (None, Ipv4Addr::UNSPECIFIED, 0, None);
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
                    RouteAttribute::Gateway(RouteAddress::Inet(gw)) => via = *gw,
                    RouteAttribute::Oif(i) => oif = *i,
                    RouteAttribute::Metrics(metrics) => {
                        mtu = metrics.iter().find_map(|m| match m {
                            RouteMetric::Mtu(v) => Some(*v),
                            _ => None,
                        })
                    }
                    _ => {}
                }
            }
            let route = match msg.header.kind {
                RouteType::Unreachable => NodeRoute::Unreachable,
                _ => NodeRoute::Via { via, oif, mtu },
            };
            if let Some(d) = dst {
                out.push((Ipv4Net::new(d, msg.header.destination_prefix_length)?, route));
            }
        }
        Ok(out)
    }
}

/// Turns on IPv4 forwarding in the agent's network namespace: pods reach
/// the outside (and, on the slow paths, other nodes) through the node. A
/// container that is not privileged has /proc/sys read-only: there the
/// setting must already be on (kubelet nodes have it on).
pub fn enable_ip_forwarding() -> Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(PATH, "1")
        .context("net.ipv4.ip_forward is 0 and cannot be turned on here (read-only /proc/sys?); turn it on on the node")
}

/// Runs a single-link lookup; a link that does not exist is `None`.
async fn lookup(request: rtnetlink::LinkGetRequest, what: &str) -> Result<Option<LinkMessage>> {
    match request.execute().try_next().await {
        Ok(Some(msg)) => Ok(Some(msg)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
        Err(e) => Err(e).with_context(|| format!("netlink lookup of link {what} failed")),
    }
}

const fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

fn link_from(msg: LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut mac = None;
    let mut mtu = 1500;
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::Mtu(m) => mtu = m,
            LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr),
            _ => {}
        }
    }
    Some(Link { name: name?, index: msg.header.index, mac: mac?, mtu })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(gso: u32, gro: u32, tso: u32) -> GsoLimits {
        GsoLimits { gso_ipv4_max_size: gso, gro_ipv4_max_size: gro, tso_max_size: tso }
    }

    #[test]
    fn big_tcp_is_raised_to_what_the_driver_segments_and_never_lowered() {
        // A veth: 512 KiB segmentable, 64 KiB by default.
        assert_eq!(limits(65_536, 65_536, 524_280).raised_to(BIG_TCP_SIZE), Some((BIG_TCP_SIZE, BIG_TCP_SIZE)));
        // A driver that segments 64 KiB only: GRO may still grow.
        assert_eq!(limits(65_536, 65_536, 65_536).raised_to(BIG_TCP_SIZE), Some((65_536, BIG_TCP_SIZE)));
        // Already there, or higher: left alone.
        assert_eq!(limits(BIG_TCP_SIZE, BIG_TCP_SIZE, 524_280).raised_to(BIG_TCP_SIZE), None);
        assert_eq!(limits(262_144, 262_144, 524_280).raised_to(BIG_TCP_SIZE), None);
        // Only what is lower moves.
        assert_eq!(limits(262_144, 65_536, 524_280).raised_to(BIG_TCP_SIZE), Some((262_144, BIG_TCP_SIZE)));
    }
}
