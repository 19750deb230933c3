//! Pods made by a real container runtime: Debian's containerd and runc in
//! each node's namespace, knet's conflist in its CNI directory, and pod
//! sandboxes run, inspected, stopped and removed through the CRI exactly
//! as kubelet does it. Needs root; run with `cargo xtask test cri`.

use std::net::Ipv4Addr;

use knet_agent::config::Mode;
use knet_tests::{
    cluster::{self, Cluster},
    cni::{self, KnetNetwork},
    containerd::{
        conflist::{self, knet_network},
        path_traffic, Containerd, PodMeta, Sandbox,
    },
    Agent, Netns,
};

/// A pod's metadata as kubelet sends it: name, namespace and a UUID.
fn pod(name: &str, namespace: &str, n: u32) -> PodMeta {
    PodMeta {
        name: name.into(),
        namespace: namespace.into(),
        uid: format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id()),
    }
}

fn in_pod_cidr(ip: Ipv4Addr, node: usize) -> bool {
    let [a, b, c, d] = ip.octets();
    (a, b, usize::from(c)) == (10, 244, node) && d != 0 && d != 255
}

/// knet's host veths in a node (`knet` and 11 hex digits).
fn knet_veths(node: &Netns) -> Vec<String> {
    cni::links(node)
        .unwrap()
        .into_iter()
        .filter(|l| l.len() == 15 && l.strip_prefix("knet").is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())))
        .collect()
}

fn endpoint_ips(agent: &Agent) -> Vec<String> {
    agent.endpoint_ips().unwrap()
}

fn sorted(ips: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut v = ips.to_vec();
    v.sort();
    v
}

/// What a node holds for its pods: knet veths, host-local leases, agent
/// endpoints, `ENDPOINTS` map keys.
fn node_state(c: &Cluster, net: &KnetNetwork, i: usize) -> (Vec<String>, Vec<Ipv4Addr>, Vec<String>, Vec<String>) {
    (knet_veths(&c.nodes[i].ns), net.leases(), endpoint_ips(&c.agents[i]), c.agents[i].map_ips().unwrap())
}

#[test]
fn cri_pods_get_addresses_reach_each_other_and_both_nodes_and_leave_nothing_after_removal() {
    let c = Cluster::new(2, 0, Mode::Vxlan).unwrap();
    // Drop order (reverse of declaration): runtimes (their sandboxes are
    // removed through the CRI while agents and IPAM directories exist),
    // then the networks' directories, then the cluster.
    let nets = [knet_network(&c, 0).unwrap(), knet_network(&c, 1).unwrap()];
    let runtimes = [
        Containerd::start(&c.nodes[0].ns, &conflist::knet(&nets[0])).unwrap(),
        Containerd::start(&c.nodes[1].ns, &conflist::knet(&nets[1])).unwrap(),
    ];

    let wanted = [(0, pod("web-0", "shop", 1)), (0, pod("web-1", "shop", 2)), (1, pod("db-0", "shop", 3))];
    let mut pods: Vec<(usize, Sandbox)> = Vec::new();
    for (node, meta) in &wanted {
        let rt = &runtimes[*node];
        let id = rt.run_pod(meta).unwrap_or_else(|e| panic!("RunPodSandbox {}: {e:#}", meta.name));
        pods.push((*node, rt.sandbox(&id).unwrap()));
    }

    // Each pod has an address of its node's pod CIDR, one knet host veth
    // in its node, a host-local lease, an agent endpoint and a map entry.
    for (node, s) in &pods {
        assert!(s.ready, "sandbox {} is not ready", s.id);
        assert!(in_pod_cidr(s.ip, *node), "{} not in {}", s.ip, cluster::pod_cidr(*node));
        assert_eq!(s.host_interfaces.len(), 1, "host interfaces of {}: {:?}", s.id, s.host_interfaces);
        assert!(knet_veths(&c.nodes[*node].ns).contains(&s.host_interfaces[0]), "{:?}", s.host_interfaces);
        let eth0 = path_traffic::exec(&s.netns, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"]).unwrap();
        assert!(eth0.contains(&format!("{}/32", s.ip)), "eth0 of {}: {eth0}", s.id);
    }
    for (i, net) in nets.iter().enumerate() {
        let ips: Vec<Ipv4Addr> = pods.iter().filter(|(n, _)| *n == i).map(|(_, s)| s.ip).collect();
        let strs: Vec<String> = sorted(&ips).iter().map(Ipv4Addr::to_string).collect();
        let (veths, leases, endpoints, map) = node_state(&c, net, i);
        assert_eq!(veths.len(), ips.len(), "node {i}: {veths:?}");
        assert_eq!(leases, sorted(&ips), "node {i} leases");
        assert_eq!(endpoints, strs, "node {i} endpoints");
        assert_eq!(map, strs, "node {i} ENDPOINTS map");
    }

    // Every pod reaches every other pod, on its node and across, and
    // both nodes: ping and a 1 MiB TCP transfer.
    for (i, a) in &pods {
        for (j, b) in &pods {
            if a.id == b.id {
                continue;
            }
            path_traffic::ping(&a.netns, b.ip, 2)
                .unwrap_or_else(|e| panic!("pod {} (node {i}) -> pod {} (node {j}): {e:#}", a.ip, b.ip));
            path_traffic::tcp_transfer(&a.netns, &b.netns, b.ip, 1 << 20)
                .unwrap_or_else(|e| panic!("TCP pod {} (node {i}) -> pod {} (node {j}): {e:#}", a.ip, b.ip));
        }
        for (n, node) in c.nodes.iter().enumerate() {
            let node_path = std::path::PathBuf::from(cni::netns_path(&node.ns));
            path_traffic::ping(&a.netns, node.address, 2)
                .unwrap_or_else(|e| panic!("pod {} (node {i}) -> node {n}: {e:#}", a.ip));
            path_traffic::tcp_transfer(&a.netns, &node_path, node.address, 1 << 20)
                .unwrap_or_else(|e| panic!("TCP pod {} (node {i}) -> node {n}: {e:#}", a.ip));
        }
    }

    // And both nodes reach every pod.
    for (n, node) in c.nodes.iter().enumerate() {
        let node_path = std::path::PathBuf::from(cni::netns_path(&node.ns));
        for (_, p) in &pods {
            path_traffic::ping(&node_path, p.ip, 2).unwrap_or_else(|e| panic!("node {n} -> pod {}: {e:#}", p.ip));
            path_traffic::tcp_transfer(&node_path, &p.netns, p.ip, 1 << 20)
                .unwrap_or_else(|e| panic!("TCP node {n} -> pod {}: {e:#}", p.ip));
        }
    }

    // StopPodSandbox (CNI DEL with the netns) takes the pod off the node;
    // RemovePodSandbox (DEL again, without it) finds nothing left and
    // succeeds.
    for (node, s) in &pods {
        runtimes[*node].cri().stop_pod_sandbox(&s.id).unwrap();
        let (veths, _, endpoints, map) = node_state(&c, &nets[*node], *node);
        assert!(!veths.contains(&s.host_interfaces[0]), "{} still there after StopPodSandbox", s.host_interfaces[0]);
        assert!(!endpoints.contains(&s.ip.to_string()), "endpoint {} after StopPodSandbox", s.ip);
        assert!(!map.contains(&s.ip.to_string()), "map entry {} after StopPodSandbox", s.ip);
        assert!(!nets[*node].leases().contains(&s.ip), "lease {} after StopPodSandbox", s.ip);
        runtimes[*node].cri().remove_pod_sandbox(&s.id).unwrap();
    }
    for (i, net) in nets.iter().enumerate() {
        assert_eq!(node_state(&c, net, i), (vec![], vec![], vec![], vec![]), "node {i} after removal");
        assert_eq!(runtimes[i].cri().list_pod_sandboxes().unwrap(), Vec::<String>::new(), "node {i} sandboxes");
    }
}

/// Stops and removes every sandbox the runtime holds, as kubelet's
/// garbage collection does.
fn collect_sandboxes(rt: &Containerd) {
    for id in rt.cri().list_pod_sandboxes().unwrap() {
        rt.delete_pod(&id).unwrap_or_else(|e| panic!("cleaning up sandbox {id}: {e:#}"));
    }
}

#[test]
fn cri_sandbox_whose_cni_add_fails_as_the_agent_is_down_is_refused_with_knet_s_error_and_takes_nothing() {
    let mut c = Cluster::new(1, 0, Mode::Vxlan).unwrap();
    let net = knet_network(&c, 0).unwrap();
    let rt = Containerd::start(&c.nodes[0].ns, &conflist::knet(&net)).unwrap();
    let socket = c.agents[0].socket().to_path_buf();
    c.agents[0].stop().unwrap();

    let meta = pod("web-0", "shop", 1);
    let err = rt.run_pod(&meta).expect_err("RunPodSandbox with the agent stopped succeeded");
    let text = format!("{err:#}");
    assert!(text.contains("plugin type=\"knet\" failed (add)"), "not the knet plugin's failure: {text}");
    assert!(text.contains(&format!("the knet agent at {} is not reachable", socket.display())), "{text}");
    assert_eq!(knet_veths(&c.nodes[0].ns), Vec::<String>::new());
    assert_eq!(net.leases(), Vec::<Ipv4Addr>::new(), "{:?}", net.files());

    // containerd's own cleanup DEL fails too while the agent is down (knet
    // reports it so the runtime retries), so containerd may keep the
    // sandbox as SANDBOX_UNKNOWN; kubelet removes it once DEL works. With
    // the agent back that cleanup succeeds and the same pod runs.
    c.agents[0].restart().unwrap();
    collect_sandboxes(&rt);
    let id = rt.run_pod(&meta).unwrap();
    let s = rt.sandbox(&id).unwrap();
    assert!(in_pod_cidr(s.ip, 0), "{}", s.ip);
    assert_eq!(net.leases(), vec![s.ip]);
    rt.delete_pod(&id).unwrap();
    assert_eq!(node_state(&c, &net, 0), (vec![], vec![], vec![], vec![]));
    assert_eq!(rt.cri().list_pod_sandboxes().unwrap(), Vec::<String>::new());
}

#[test]
fn cri_sandbox_whose_endpoint_the_agent_refuses_is_refused_with_knet_s_error_and_undone() {
    let c = Cluster::new(1, 0, Mode::Vxlan).unwrap();
    let mut net = knet_network(&c, 0).unwrap();
    // host-local hands out an address the agent's pod CIDR does not hold:
    // ADD gets as far as registering the endpoint, then undoes its veth,
    // routes and lease.
    net.pod_cidr = "10.99.0.0/24".into();
    let rt = Containerd::start(&c.nodes[0].ns, &conflist::knet(&net)).unwrap();

    let err = rt.run_pod(&pod("web-0", "shop", 1)).expect_err("RunPodSandbox outside the pod CIDR succeeded");
    let text = format!("{err:#}");
    assert!(text.contains("plugin type=\"knet\" failed (add)"), "not the knet plugin's failure: {text}");
    assert!(text.contains("the knet agent refused"), "{text}");
    assert!(text.contains("outside"), "{text}");
    // The agent was up, so containerd's cleanup DEL succeeded: nothing is
    // kept, not even the sandbox.
    assert_eq!(rt.cri().list_pod_sandboxes().unwrap(), Vec::<String>::new(), "a refused sandbox is kept");
    assert_eq!(node_state(&c, &net, 0), (vec![], vec![], vec![], vec![]), "{:?}", net.files());
}
