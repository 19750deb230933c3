//! The netlink work of wiring a pod, with rtnetlink: the veth pair, its move
//! into the pod's namespace, the pod's address, neighbour entry and routes,
//! the node's route back to the pod, and reading all of it back for CHECK.
//! Every function works in the namespace its `Handle` was opened in.

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd, BorrowedFd},
};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::{
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMetric, RouteScope},
    },
    Handle, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::{
    routes::PodRoute,
    spec::{code, CniError, POD_GATEWAY},
};
use crate::mac::MacAddr;

fn netlink_error(what: impl Into<String>, e: rtnetlink::Error) -> CniError {
    CniError::new(code::NETLINK, what).with_details(e.to_string())
}

fn errno_of(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(Errno::from_raw(-m.raw_code())),
        _ => None,
    }
}

/// Opens a netlink socket in the calling thread's namespace; its connection
/// runs on the current runtime.
pub fn connect() -> Result<Handle, CniError> {
    let (connection, handle, _) = rtnetlink::new_connection()
        .map_err(|e| CniError::new(code::NETLINK, "cannot open a netlink socket").with_details(e.to_string()))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// A link as knet needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub alias: Option<String>,
    pub up: bool,
}

fn link_from(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: None,
        alias: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Address(b) => link.mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(MacAddr),
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::IfAlias(a) => link.alias = Some(a),
            _ => {}
        }
    }
    link
}

/// The link named `name`, or `None`.
pub async fn link(handle: &Handle, name: &str) -> Result<Option<Link>, CniError> {
    let found = handle.link().get().match_name(name.to_string()).execute().try_next().await;
    match found {
        Ok(msg) => Ok(msg.map(link_from)),
        Err(e) if errno_of(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(netlink_error(format!("cannot look up link {name}"), e)),
    }
}

/// Creates the veth pair with its pod end born in the pod's namespace `ns`
/// under its final name `pod_ifname`: one request, and no namespace move
/// (a move waits for the kernel's RCU grace periods, tens of milliseconds).
pub async fn create_veth(
    handle: &Handle,
    host: &str,
    pod_ifname: &str,
    mtu: u32,
    gso_max_size: Option<u32>,
    ns: BorrowedFd<'_>,
) -> Result<(), CniError> {
    let mut msg = LinkVeth::new(host, pod_ifname).mtu(mtu).build();
    // Both ends: the pod's TCP sizes its packets by its end, and the host
    // end passes them on whole.
    let sizes = |size: u32| [LinkAttribute::GsoIpv4MaxSize(size), LinkAttribute::GroIpv4MaxSize(size)];
    if let Some(size) = gso_max_size {
        msg.attributes.extend(sizes(size));
    }
    for attr in &mut msg.attributes {
        let LinkAttribute::LinkInfo(infos) = attr else { continue };
        for info in infos {
            if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = info {
                peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
                peer.attributes.push(LinkAttribute::Mtu(mtu));
                if let Some(size) = gso_max_size {
                    peer.attributes.extend(sizes(size));
                }
            }
        }
    }
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| netlink_error(format!("cannot create veth pair {host}/{pod_ifname} into the pod"), e))
}

/// Sets link `index` up, with `alias` if given and `mtu` if given.
pub async fn set_up(handle: &Handle, index: u32, alias: Option<&str>, mtu: Option<u32>) -> Result<(), CniError> {
    let mut msg = LinkUnspec::new_with_index(index).up();
    if let Some(a) = alias {
        msg = msg.alias(a.to_string());
    }
    if let Some(m) = mtu {
        msg = msg.mtu(m);
    }
    handle.link().set(msg.build()).execute().await.map_err(|e| netlink_error(format!("cannot set link {index} up"), e))
}

/// Deletes link `index`; a link already gone is fine.
pub async fn delete_link(handle: &Handle, index: u32) -> Result<(), CniError> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno_of(&e) == Some(Errno::ENODEV) => Ok(()),
        Err(e) => Err(netlink_error(format!("cannot delete link {index}"), e)),
    }
}

/// On the node: `ip route add IP/32 dev HOST_VETH scope link`.
pub async fn add_host_route(handle: &Handle, ip: Ipv4Addr, index: u32) -> Result<(), CniError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(ip, 32)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    handle
        .route()
        .add(route)
        .execute()
        .await
        .map_err(|e| netlink_error(format!("cannot add the node's route to {ip}"), e))
}

/// Inside the pod: interface `ifname` up with `mtu`, `ip`/32 on it, the
/// gateway's permanent neighbour entry with `gateway_mac`, the gateway's
/// link-scope route, and every route in `routes` via the gateway, on-link,
/// with its MTU metric. Returns the interface.
pub async fn configure_pod(
    handle: Handle,
    ifname: String,
    ip: Ipv4Addr,
    mtu: u32,
    gateway_mac: MacAddr,
    routes: Vec<PodRoute>,
) -> Result<Link, CniError> {
    let link = link(&handle, &ifname).await?.ok_or_else(|| {
        CniError::new(code::NETLINK, format!("{ifname} is not in the pod's namespace after the move"))
    })?;
    set_up(&handle, link.index, None, Some(mtu)).await?;
    handle
        .address()
        .add(link.index, IpAddr::V4(ip), 32)
        .execute()
        .await
        .map_err(|e| netlink_error(format!("cannot add {ip}/32 to {ifname}"), e))?;
    handle
        .neighbours()
        .add(link.index, IpAddr::V4(POD_GATEWAY))
        .state(NeighbourState::Permanent)
        .link_layer_address(&gateway_mac.0)
        .execute()
        .await
        .map_err(|e| netlink_error("cannot add the gateway's neighbour entry", e))?;
    let gateway_route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(POD_GATEWAY, 32)
        .output_interface(link.index)
        .scope(RouteScope::Link)
        .build();
    handle
        .route()
        .add(gateway_route)
        .execute()
        .await
        .map_err(|e| netlink_error("cannot add the gateway's route", e))?;
    for PodRoute { dst, mtu } in routes {
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(POD_GATEWAY)
            .output_interface(link.index)
            .onlink()
            .build();
        if let Some(mtu) = mtu {
            route.attributes.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(|e| netlink_error(format!("cannot add the pod's route to {dst}"), e))?;
    }
    // Read back: the MAC and MTU as the kernel has them now.
    self::link(&handle, &ifname).await?.ok_or_else(|| CniError::new(code::NETLINK, format!("{ifname} vanished")))
}

/// A route of the main table, as CHECK compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    /// The route's MTU metric, if it has one.
    pub mtu: Option<u32>,
}

/// What a pod's namespace holds for interface `ifname`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodState {
    pub link: Option<Link>,
    pub addresses: Vec<Ipv4Net>,
    /// The gateway's neighbour entry: its MAC and whether it is permanent.
    pub gateway_neighbour: Option<(Option<MacAddr>, bool)>,
    pub routes: Vec<RouteEntry>,
}

pub async fn pod_state(handle: Handle, ifname: String) -> Result<PodState, CniError> {
    let Some(link) = link(&handle, &ifname).await? else {
        return Ok(PodState::default());
    };
    let mut addresses = Vec::new();
    let mut stream = handle.address().get().set_link_index_filter(link.index).execute();
    while let Some(msg) = stream.try_next().await.map_err(|e| netlink_error("cannot list addresses", e))? {
        for attr in &msg.attributes {
            if let AddressAttribute::Address(IpAddr::V4(a)) = attr {
                if let Ok(net) = Ipv4Net::new(*a, msg.header.prefix_len) {
                    addresses.push(net);
                }
            }
        }
    }
    let mut gateway_neighbour = None;
    let mut stream = handle.neighbours().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(|e| netlink_error("cannot list neighbours", e))? {
        if msg.header.ifindex != link.index {
            continue;
        }
        let is_gateway = msg
            .attributes
            .iter()
            .any(|a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) if *ip == POD_GATEWAY));
        if is_gateway {
            let mac = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok().map(MacAddr),
                _ => None,
            });
            gateway_neighbour = Some((mac, msg.header.state == NeighbourState::Permanent));
        }
    }
    let routes = main_table_routes(&handle).await?;
    Ok(PodState { link: Some(link), addresses, gateway_neighbour, routes })
}

/// The IPv4 routes of the main table.
pub async fn main_table_routes(handle: &Handle) -> Result<Vec<RouteEntry>, CniError> {
    let mut routes = Vec::new();
    let mut stream = handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
    while let Some(msg) = stream.try_next().await.map_err(|e| netlink_error("cannot list routes", e))? {
        let mut table = u32::from(msg.header.table);
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut gateway = None;
        let mut oif = None;
        let mut mtu = None;
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Metrics(metrics) => {
                    mtu = metrics.iter().find_map(|m| match m {
                        RouteMetric::Mtu(v) => Some(*v),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
            continue;
        }
        if let Ok(dst) = Ipv4Net::new(dst, msg.header.destination_prefix_length) {
            routes.push(RouteEntry { dst, gateway, oif, mtu });
        }
    }
    Ok(routes)
}
