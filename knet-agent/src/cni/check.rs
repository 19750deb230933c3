//! CHECK's comparison: what ADD left (from `prevResult`, the config and the
//! agent's view of its node) against what the pod's namespace, the node and
//! the agent hold now. Pure; every difference becomes one line of the error
//! message.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{
    routes::{self, NodeRoutes, PodRoute},
    spec::{CniResult, POD_GATEWAY},
    wiring::{Link, PodState, RouteEntry},
};
use crate::endpoints::Endpoint;

pub struct Expected {
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub mtu: u32,
    pub host_veth: String,
    pub owner_alias: String,
    /// What the pod routes through the gateway, with each route's MTU.
    pub routes: Vec<PodRoute>,
}

pub struct Observed {
    pub pod: PodState,
    pub host: Option<Link>,
    pub node_routes: Vec<RouteEntry>,
    pub endpoints: Vec<Endpoint>,
}

/// The routes CHECK holds the pod to: the destinations of `prev` (the
/// IPAM plugin's routes as ADD reported them) planned again as ADD plans
/// them, with the agent's view of the node now. The MTUs in `prev` are not
/// read: a runtime's libcni (1.1, containerd 1.6, CRI-O) parses results
/// into CNI 1.0 types before caching them, and the routes' `mtu` (a 1.1.0
/// field) is gone by the time CHECK gets prevResult.
pub fn expected_routes(prev: &CniResult, device_mtu: u32, node: Option<NodeRoutes>) -> Vec<PodRoute> {
    routes::plan(prev, device_mtu, node)
}

/// The route to `dst` through `gateway` out of `oif`, whatever its metrics.
fn find_route(routes: &[RouteEntry], dst: Ipv4Net, gateway: Option<Ipv4Addr>, oif: u32) -> Option<&RouteEntry> {
    routes.iter().find(|r| r.dst == dst && r.gateway == gateway && r.oif == Some(oif))
}

fn describe_mtu(mtu: Option<u32>) -> String {
    mtu.map_or_else(|| "none (the device's)".to_string(), |m| m.to_string())
}

pub fn problems(e: &Expected, o: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    let host_mac = o.host.as_ref().and_then(|h| h.mac);
    let pod_mac = o.pod.link.as_ref().and_then(|l| l.mac);

    match &o.pod.link {
        None => out.push(format!("interface {} is missing from the pod's namespace", e.ifname)),
        Some(pod) => {
            if !pod.up {
                out.push(format!("{} is down", e.ifname));
            }
            if pod.mtu != Some(e.mtu) {
                out.push(format!("{} has mtu {:?}, expected {}", e.ifname, pod.mtu, e.mtu));
            }
            let want = Ipv4Net::new(e.ip, 32).expect("/32");
            if !o.pod.addresses.contains(&want) {
                out.push(format!(
                    "{} lacks address {want} (has {:?})",
                    e.ifname,
                    o.pod.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>()
                ));
            }
            match o.pod.gateway_neighbour {
                None => out.push(format!("no neighbour entry for the gateway {POD_GATEWAY}")),
                Some((mac, permanent)) => {
                    if host_mac.is_some() && mac != host_mac {
                        out.push(format!(
                            "the gateway's neighbour entry has MAC {}, the host veth has {}",
                            mac.map(|m| m.to_string()).unwrap_or_default(),
                            host_mac.map(|m| m.to_string()).unwrap_or_default()
                        ));
                    }
                    if !permanent {
                        out.push("the gateway's neighbour entry is not permanent".into());
                    }
                }
            }
            let gateway_host = Ipv4Net::new(POD_GATEWAY, 32).expect("/32");
            if find_route(&o.pod.routes, gateway_host, None, pod.index).is_none() {
                out.push(format!("no route {POD_GATEWAY} dev {} scope link", e.ifname));
            }
            for want in &e.routes {
                match find_route(&o.pod.routes, want.dst, Some(POD_GATEWAY), pod.index) {
                    None => out.push(format!("no route {} via {POD_GATEWAY} dev {}", want.dst, e.ifname)),
                    Some(have) if have.mtu != want.mtu => out.push(format!(
                        "route {} via {POD_GATEWAY} has mtu {}, expected {}",
                        want.dst,
                        describe_mtu(have.mtu),
                        describe_mtu(want.mtu)
                    )),
                    Some(_) => {}
                }
            }
        }
    }

    match &o.host {
        None => out.push(format!("host veth {} is missing", e.host_veth)),
        Some(host) => {
            if host.alias.as_deref() != Some(e.owner_alias.as_str()) {
                out.push(format!("host veth {} belongs to {:?}, not {:?}", e.host_veth, host.alias, e.owner_alias));
            }
            if !host.up {
                out.push(format!("host veth {} is down", e.host_veth));
            }
            if find_route(&o.node_routes, Ipv4Net::new(e.ip, 32).expect("/32"), None, host.index).is_none() {
                out.push(format!("the node has no route {}/32 dev {}", e.ip, e.host_veth));
            }
        }
    }

    match o.endpoints.iter().find(|ep| ep.ip == e.ip) {
        None => out.push(format!("the agent has no endpoint {}", e.ip)),
        Some(ep) => {
            if ep.host_veth != e.host_veth {
                out.push(format!("the agent's endpoint {} is on {}, not {}", e.ip, ep.host_veth, e.host_veth));
            }
            if pod_mac.is_some() && Some(ep.pod_mac) != pod_mac {
                out.push(format!(
                    "the agent's endpoint {} has pod MAC {}, the interface has {}",
                    e.ip,
                    ep.pod_mac,
                    pod_mac.map(|m| m.to_string()).unwrap_or_default()
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::MacAddr;

    const HOST_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const POD_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn expected() -> Expected {
        Expected {
            ifname: "eth0".into(),
            ip: Ipv4Addr::new(10, 244, 0, 5),
            mtu: 1500,
            host_veth: "knetabc".into(),
            owner_alias: "knet c1 eth0".into(),
            routes: vec![
                PodRoute { dst: Ipv4Net::default(), mtu: Some(1450) },
                PodRoute { dst: "10.244.0.0/24".parse().unwrap(), mtu: None },
            ],
        }
    }

    fn healthy() -> Observed {
        Observed {
            pod: PodState {
                link: Some(Link {
                    index: 2,
                    name: "eth0".into(),
                    mac: Some(POD_MAC),
                    mtu: Some(1500),
                    alias: None,
                    up: true,
                }),
                addresses: vec!["10.244.0.5/32".parse().unwrap()],
                gateway_neighbour: Some((Some(HOST_MAC), true)),
                routes: vec![
                    RouteEntry { dst: "169.254.1.1/32".parse().unwrap(), gateway: None, oif: Some(2), mtu: None },
                    RouteEntry {
                        dst: "0.0.0.0/0".parse().unwrap(),
                        gateway: Some(POD_GATEWAY),
                        oif: Some(2),
                        mtu: Some(1450),
                    },
                    RouteEntry {
                        dst: "10.244.0.0/24".parse().unwrap(),
                        gateway: Some(POD_GATEWAY),
                        oif: Some(2),
                        mtu: None,
                    },
                ],
            },
            host: Some(Link {
                index: 9,
                name: "knetabc".into(),
                mac: Some(HOST_MAC),
                mtu: Some(1500),
                alias: Some("knet c1 eth0".into()),
                up: true,
            }),
            node_routes: vec![RouteEntry {
                dst: "10.244.0.5/32".parse().unwrap(),
                gateway: None,
                oif: Some(9),
                mtu: None,
            }],
            endpoints: vec![Endpoint {
                ip: Ipv4Addr::new(10, 244, 0, 5),
                host_veth: "knetabc".into(),
                host_ifindex: 9,
                pod_mac: POD_MAC,
                host_mac: HOST_MAC,
            }],
        }
    }

    fn prev(routes: &str) -> CniResult {
        serde_json::from_str(&format!(
            r#"{{"cniVersion":"1.0.0","ips":[{{"address":"10.244.0.5/32","gateway":"169.254.1.1","interface":1}}],"routes":{routes}}}"#
        ))
        .unwrap()
    }

    fn route(dst: &str, mtu: Option<u32>) -> PodRoute {
        PodRoute { dst: dst.parse().unwrap(), mtu }
    }

    const VXLAN: Option<NodeRoutes> =
        Some(NodeRoutes { pod_cidr: Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 24), route_mtu: 1450 });

    #[test]
    fn expected_routes_take_their_mtus_from_the_agent_not_from_prev_result() {
        // What libcni 1.1 caches from a VXLAN pod's ADD: no mtu fields.
        let cached = prev(r#"[{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"10.244.0.0/24","gw":"169.254.1.1"}]"#);
        let want = vec![route("0.0.0.0/0", Some(1450)), route("10.244.0.0/24", None)];
        assert_eq!(expected_routes(&cached, 1500, VXLAN), want);
        // A 1.1.0 prevResult's MTUs, right or stale, are not what counts.
        let stale = prev(
            r#"[{"dst":"0.0.0.0/0","gw":"169.254.1.1","mtu":9000},{"dst":"10.244.0.0/24","gw":"169.254.1.1","mtu":1450}]"#,
        );
        assert_eq!(expected_routes(&stale, 1500, VXLAN), want);
        // Without a node source: the device's MTU everywhere, and no pod
        // CIDR route that prevResult does not name.
        assert_eq!(expected_routes(&cached, 1500, None), vec![route("0.0.0.0/0", None), route("10.244.0.0/24", None)]);
        assert_eq!(
            expected_routes(&prev(r#"[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}]"#), 1500, None),
            vec![route("0.0.0.0/0", None)]
        );
    }

    #[test]
    fn expected_routes_keep_prev_results_destinations_and_add_what_the_plan_adds() {
        // An IPAM route leaving the node carries the route MTU; one inside
        // the node's pod CIDR does not; IPv6 is not knet's.
        let cached = prev(
            r#"[{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"10.244.0.0/24","gw":"169.254.1.1"},
                {"dst":"10.96.0.0/12","gw":"169.254.1.1"},{"dst":"10.244.0.128/25","gw":"169.254.1.1"},{"dst":"fd00::/8"}]"#,
        );
        assert_eq!(
            expected_routes(&cached, 1500, VXLAN),
            vec![
                route("0.0.0.0/0", Some(1450)),
                route("10.244.0.0/24", None),
                route("10.96.0.0/12", Some(1450)),
                route("10.244.0.128/25", None),
            ]
        );
        // An empty or foreign prevResult still expects the routes every
        // pod of this node gets.
        assert_eq!(
            expected_routes(&prev("[]"), 1500, VXLAN),
            vec![route("0.0.0.0/0", Some(1450)), route("10.244.0.0/24", None)]
        );
        // Native mode: the underlay MTU is the device's, no route carries one.
        let native = Some(NodeRoutes { route_mtu: 1500, ..VXLAN.unwrap() });
        assert_eq!(expected_routes(&cached, 1500, native)[0], route("0.0.0.0/0", None));
    }

    #[test]
    fn a_healthy_pod_has_no_problems() {
        assert_eq!(problems(&expected(), &healthy()), Vec::<String>::new());
    }

    #[test]
    fn each_breakage_is_named() {
        type Breakage = fn(&mut Observed);
        let cases: &[(Breakage, &str)] = &[
            (|o| o.pod.link = None, "missing from the pod"),
            (|o| o.pod.link.as_mut().unwrap().up = false, "eth0 is down"),
            (|o| o.pod.link.as_mut().unwrap().mtu = Some(9000), "mtu"),
            (|o| o.pod.addresses.clear(), "lacks address 10.244.0.5/32"),
            (|o| o.pod.gateway_neighbour = None, "no neighbour entry"),
            (|o| o.pod.gateway_neighbour = Some((Some(POD_MAC), true)), "neighbour entry has MAC"),
            (|o| o.pod.gateway_neighbour = Some((Some(HOST_MAC), false)), "not permanent"),
            (|o| o.pod.routes.truncate(1), "no route 0.0.0.0/0"),
            (|o| o.pod.routes.truncate(2), "no route 10.244.0.0/24 via 169.254.1.1"),
            (
                |o| o.pod.routes[1].mtu = None,
                "route 0.0.0.0/0 via 169.254.1.1 has mtu none (the device's), expected 1450",
            ),
            (|o| o.pod.routes[1].mtu = Some(1500), "has mtu 1500, expected 1450"),
            (|o| o.pod.routes[2].mtu = Some(1450), "route 10.244.0.0/24 via 169.254.1.1 has mtu 1450, expected none"),
            (
                |o| {
                    o.pod.routes.remove(0);
                },
                "no route 169.254.1.1 dev eth0",
            ),
            (|o| o.host = None, "host veth knetabc is missing"),
            (|o| o.host.as_mut().unwrap().alias = None, "belongs to"),
            (|o| o.node_routes.clear(), "no route 10.244.0.5/32"),
            (|o| o.endpoints.clear(), "no endpoint 10.244.0.5"),
            (|o| o.endpoints[0].host_veth = "other".into(), "is on other"),
            (|o| o.endpoints[0].pod_mac = HOST_MAC, "pod MAC"),
        ];
        for (break_it, needle) in cases {
            let mut o = healthy();
            break_it(&mut o);
            let p = problems(&expected(), &o);
            assert!(p.iter().any(|line| line.contains(needle)), "{needle:?} not in {p:?}");
        }
    }
}
