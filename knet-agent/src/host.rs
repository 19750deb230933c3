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
    Handle, RouteMessageBuilder,
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
