//! The pod's routes, planned from the IPAM plugin's answer and what the
//! agent reports about its node. Pure.
//!
//! Without a node source (the agent reports no route MTU) a pod has the
//! default route and the IPAM plugin's routes, all at the device MTU. With
//! one, traffic that leaves the node may be encapsulated: the node's own
//! pod CIDR is routed at the device MTU (same-node traffic keeps the full
//! MTU), and the default route and every other route carry the agent's
//! route MTU (the underlay MTU - 50 in VXLAN mode).

use ipnet::{IpNet, Ipv4Net};

use super::spec::CniResult;
use crate::api::NodeView;

/// One route of the pod, through the link-local gateway; `mtu` is the
/// route's MTU metric (`None`: the device's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRoute {
    pub dst: Ipv4Net,
    pub mtu: Option<u32>,
}

/// What the agent says about its node that shapes the routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRoutes {
    pub pod_cidr: Ipv4Net,
    /// The MTU for routes that leave the node.
    pub route_mtu: u32,
}

impl NodeRoutes {
    /// From `GET /v1/node`: `None` without a node source (no route MTU).
    pub fn of(view: &NodeView) -> Option<Self> {
        view.route_mtu.map(|route_mtu| NodeRoutes { pod_cidr: view.pod_cidr, route_mtu })
    }
}

/// The pod's routes: the default route first, then the node's pod CIDR
/// (with a node source), then every IPv4 route the IPAM plugin asked for,
/// each destination once. A route MTU at or above the device MTU is no
/// limit and is left off.
pub fn plan(ipam: &CniResult, device_mtu: u32, node: Option<NodeRoutes>) -> Vec<PodRoute> {
    let leaving = node.and_then(|n| (n.route_mtu < device_mtu).then_some(n.route_mtu));
    let mut routes = vec![PodRoute { dst: Ipv4Net::default(), mtu: leaving }];
    if let Some(n) = node {
        routes.push(PodRoute { dst: n.pod_cidr.trunc(), mtu: None });
    }
    for r in &ipam.routes {
        let IpNet::V4(dst) = r.dst else { continue };
        let dst = dst.trunc();
        if routes.iter().any(|p| p.dst == dst) {
            continue;
        }
        // A destination inside the node's own pod CIDR stays on the node.
        let local = node.is_some_and(|n| n.pod_cidr.contains(&dst));
        routes.push(PodRoute { dst, mtu: if local { None } else { leaving } });
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(routes: &str) -> CniResult {
        serde_json::from_str(&format!(r#"{{"cniVersion":"1.0.0","ips":[],"routes":{routes}}}"#)).unwrap()
    }

    fn r(dst: &str, mtu: Option<u32>) -> PodRoute {
        PodRoute { dst: dst.parse().unwrap(), mtu }
    }

    fn vxlan_node() -> Option<NodeRoutes> {
        Some(NodeRoutes { pod_cidr: "10.244.1.0/24".parse().unwrap(), route_mtu: 1450 })
    }

    #[test]
    fn without_a_node_source_only_default_and_ipam_routes_at_the_device_mtu() {
        let plan = plan(
            &ipam(r#"[{"dst":"0.0.0.0/0"},{"dst":"10.96.0.1/12","gw":"10.244.0.1"},{"dst":"fd00::/8"}]"#),
            1500,
            None,
        );
        assert_eq!(plan, vec![r("0.0.0.0/0", None), r("10.96.0.0/12", None)]);
        assert_eq!(super::plan(&ipam("[]"), 1500, None), vec![r("0.0.0.0/0", None)]);
    }

    #[test]
    fn with_a_node_source_the_pod_cidr_keeps_the_device_mtu_and_the_rest_carries_the_route_mtu() {
        let plan = plan(&ipam("[]"), 1500, vxlan_node());
        assert_eq!(plan, vec![r("0.0.0.0/0", Some(1450)), r("10.244.1.0/24", None)]);
    }

    #[test]
    fn ipam_routes_leaving_the_node_carry_the_route_mtu_local_ones_do_not() {
        let plan = plan(
            &ipam(
                r#"[{"dst":"10.96.0.0/12"},{"dst":"10.244.1.0/24"},{"dst":"10.244.1.128/25"},{"dst":"10.244.0.0/16"},{"dst":"0.0.0.0/0"}]"#,
            ),
            1500,
            vxlan_node(),
        );
        assert_eq!(
            plan,
            vec![
                r("0.0.0.0/0", Some(1450)),
                r("10.244.1.0/24", None),
                r("10.96.0.0/12", Some(1450)),
                r("10.244.1.128/25", None),
                // The cluster's whole range contains other nodes' pods.
                r("10.244.0.0/16", Some(1450)),
            ]
        );
    }

    #[test]
    fn a_route_mtu_not_below_the_device_mtu_is_left_off() {
        // Native mode: the underlay MTU, the same as the device's.
        let native = Some(NodeRoutes { pod_cidr: "10.244.1.0/24".parse().unwrap(), route_mtu: 1500 });
        assert_eq!(plan(&ipam("[]"), 1500, native), vec![r("0.0.0.0/0", None), r("10.244.1.0/24", None)]);
        // A device MTU set below the route MTU already limits everything.
        assert_eq!(plan(&ipam("[]"), 1400, vxlan_node()), vec![r("0.0.0.0/0", None), r("10.244.1.0/24", None)]);
        assert_eq!(plan(&ipam("[]"), 9000, vxlan_node())[0], r("0.0.0.0/0", Some(1450)));
    }

    #[test]
    fn an_unaligned_pod_cidr_is_truncated() {
        let node = Some(NodeRoutes { pod_cidr: "10.244.1.7/24".parse().unwrap(), route_mtu: 1450 });
        assert_eq!(plan(&ipam("[]"), 1500, node)[1], r("10.244.1.0/24", None));
    }
}
