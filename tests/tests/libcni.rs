//! The knet CNI plugin driven through real libcni (Debian's 1.1, what
//! containerd 1.6 and CRI-O use) with knet's own conflist (knet with
//! host-local, then portmap): CHECK and DEL get libcni's cached result as
//! prevResult, parsed into libcni's types, as on a real node. Needs root;
//! run with `cargo xtask test` (one test at a time).

use std::net::Ipv4Addr;

use knet_agent::config::Mode;
use knet_common::Stat;
use knet_tests::{
    cluster::{self, Cluster},
    cni::{self, links},
    libcni::LibcniNetwork,
    netns::unique_name,
    traffic, Netns,
};
use serde_json::json;

/// Node `i`'s knet network as a runtime on it holds it: `mtu` the node's
/// underlay MTU (as `Cluster::with_cni` sets it), the node's agent socket.
fn network(c: &Cluster, i: usize) -> LibcniNetwork {
    let node = &c.nodes[i].ns;
    let mtu = node.read("/sys/class/net/eth0/mtu").unwrap().trim().parse().unwrap();
    LibcniNetwork::new(node, &cluster::pod_cidr(i), c.agents[i].socket(), mtu).unwrap()
}

#[test]
fn pods_added_through_libcni_in_vxlan_mode_reach_across_nodes_and_pass_libcni_check() {
    let c = Cluster::new(2, 0, Mode::Vxlan).unwrap();
    let nets = [network(&c, 0), network(&c, 1)];
    let a = nets[0].add_pod("a").unwrap();
    let b = nets[1].add_pod("b").unwrap();

    // Addresses from each node's host-local range; the chain's result is
    // knet's in the conflist's version (1.0.0: routes carry no MTU), and it
    // is what libcni cached.
    assert_eq!(a.ip.octets()[..3], [10, 244, 0], "{}", a.ip);
    assert_eq!(b.ip.octets()[..3], [10, 244, 1], "{}", b.ip);
    assert_eq!(nets[0].leases(), vec![a.ip]);
    assert_eq!(a.result["cniVersion"], "1.0.0");
    assert_eq!(
        a.result["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
            {"dst": cluster::pod_cidr(0), "gw": "169.254.1.1"}
        ])
    );
    assert_eq!(nets[0].cached_result(&a.container_id).unwrap(), a.result);

    // The kernel holds the MTUs all the same: the tunnel's for the other
    // node, the device's on this one.
    assert_eq!(cni::route_mtu(&a.ns, b.ip).unwrap(), Some(1450));
    assert_eq!(cni::route_mtu(&a.ns, Ipv4Addr::new(10, 244, 0, 200)).unwrap(), None);

    let (tunnelled_before, _) = c.agents[0].stat(Stat::RedirectTunnel).unwrap();
    traffic::ping(&a.ns, b.ip, 3).unwrap();
    traffic::ping(&b.ns, a.ip, 3).unwrap();
    traffic::ping(&a.ns, cluster::node_address(1), 3).unwrap();
    assert!(c.agents[0].stat(Stat::RedirectTunnel).unwrap().0 >= tunnelled_before + 3, "node 0 tunnelled nothing");

    // CHECK as a runtime runs it: prevResult is libcni's cached result,
    // which has no route MTUs; knet takes them from its agent.
    a.check().unwrap().expect_ok("CHECK a");
    b.check().unwrap().expect_ok("CHECK b");
}

#[test]
fn libcni_check_fails_with_knets_code_102_once_the_pod_is_broken() {
    let c = Cluster::new(2, 0, Mode::Vxlan).unwrap();
    let net = network(&c, 0);
    let a = net.add_pod("a").unwrap();
    a.check().unwrap().expect_ok("CHECK of the healthy pod");

    // The default route loses the tunnel's MTU.
    let change = |mtu: &str| {
        a.ns.ip(&["route", "change", "default", "via", "169.254.1.1", "dev", "eth0", "onlink", "mtu", mtu]).unwrap()
    };
    change("1400");
    let msg = a.check().unwrap().expect_error(102, "CHECK with the default route's MTU changed");
    assert!(msg.contains("route 0.0.0.0/0 via 169.254.1.1 has mtu 1400, expected 1450"), "{msg}");
    change("1450");
    a.check().unwrap().expect_ok("CHECK with the MTU restored");

    // The agent loses the pod's endpoint.
    c.agents[0].delete_endpoint(a.ip).unwrap();
    let msg = a.check().unwrap().expect_error(102, "CHECK without the endpoint");
    assert!(msg.contains(&format!("the agent has no endpoint {}", a.ip)), "{msg}");
}

#[test]
fn del_through_libcni_leaves_no_veth_lease_endpoint_or_cache_file() {
    let c = Cluster::new(2, 0, Mode::Vxlan).unwrap();
    let net = network(&c, 0);
    let mut a = net.add_pod("a").unwrap();
    let host = a.host_veth().unwrap();
    let node = &c.nodes[0].ns;
    assert!(links(node).unwrap().contains(&host));
    assert_eq!(net.leases(), vec![a.ip]);
    assert_eq!(c.agents[0].endpoint_ips().unwrap(), vec![a.ip.to_string()]);
    assert!(net.cache_file(&a.container_id).exists());

    a.del().unwrap().expect_ok("DEL");
    assert!(!links(node).unwrap().contains(&host), "host veth {host} is still there");
    assert_eq!(links(&a.ns).unwrap(), vec!["lo"], "eth0 is still in the pod");
    assert!(net.leases().is_empty(), "lease left: {:?}", net.leases());
    assert!(c.agents[0].endpoint_ips().unwrap().is_empty(), "endpoint left");
    assert!(!net.cache_file(&a.container_id).exists(), "libcni's cache file is still there");
    let routes = node.ip(&["route", "show"]).unwrap();
    assert!(!routes.contains(&a.ip.to_string()), "node route left: {routes}");

    // Again, now without a cached result: still fine.
    a.del().unwrap().expect_ok("second DEL");
}

#[test]
fn libcni_1_1_refuses_a_1_1_0_result_which_is_why_knets_conflist_stays_at_1_0_0() {
    let c = Cluster::new(1, 0, Mode::Vxlan).unwrap();
    let mut net = network(&c, 0);
    assert_eq!(net.conflist["cniVersion"], "1.0.0");
    let mut list = net.conflist.clone();
    list["cniVersion"] = json!("1.1.0");
    // Debian's portmap (plugins 1.1.1) lists no 1.1.0 at all: knet alone.
    list["plugins"].as_array_mut().unwrap().retain(|p| p["type"] == "knet");
    net.write_conflist(list).unwrap();
    let pod = Netns::new("pod").unwrap();
    let id = unique_name("ctr");

    let out = net.run("ADD", &id, Some(&pod)).unwrap();
    assert!(!out.success(), "libcni took a 1.1.0 result: {}", out.stdout);
    let msg = out.json["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(r#"unsupported CNI result version "1.1.0""#), "{}", out.stdout);
    // knet had wired the pod before libcni refused its answer, and libcni
    // cached nothing: the runtime's DEL (without prevResult) cleans up.
    assert_eq!(net.leases().len(), 1);
    assert!(!net.cache_file(&id).exists());
    net.run("DEL", &id, Some(&pod)).unwrap().expect_ok("DEL after the refused ADD");
    assert!(net.leases().is_empty(), "lease left: {:?}", net.leases());
    assert!(c.agents[0].endpoint_ips().unwrap().is_empty(), "endpoint left");
    assert_eq!(links(&pod).unwrap(), vec!["lo"]);
}
