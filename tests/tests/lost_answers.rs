//! A CNI ADD whose agent acted on the endpoint request but whose answer
//! never arrived, because the connection broke or the agent died between
//! writing the map entry and answering: the ADD completes, or it leaves
//! nothing behind (no orphaned endpoint entry, veth or lease). The loss is
//! made by a relay between the real plugin and the real agent
//! (`api_proxy`). Needs root; run with `cargo xtask test`.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use knet_tests::{
    api_proxy::{ApiProxy, OnLost},
    cni::{links, result_ip, KnetNetwork, NodeState},
    netns::unique_name,
    traffic, Agent, AgentOptions, Netns, Node,
};

const POD_CIDR: &str = "10.244.0.0/24";

/// A node whose plugin reaches its agent only through the relay. Fields
/// drop in order: the network's files, the relay, the agent, the node.
struct Relayed {
    net: KnetNetwork,
    proxy: ApiProxy,
    agent: Agent,
    node: Node,
}

impl Relayed {
    fn start(lose: usize, on_lost: impl FnOnce(&Agent) -> OnLost) -> Self {
        let node = Node::new("node", Ipv4Addr::new(192, 168, 77, 10)).unwrap();
        let options = AgentOptions { node_name: "node-0".into(), pod_cidr: Some(POD_CIDR.into()) };
        let agent = Agent::start(&node.ns, &options).unwrap();
        let proxy = ApiProxy::start(agent.socket(), lose, on_lost(&agent)).unwrap();
        let net = KnetNetwork::new(&node.ns, POD_CIDR, proxy.socket()).unwrap();
        Relayed { net, proxy, agent, node }
    }

    fn state(&self) -> NodeState {
        NodeState::of(&self.node.ns, &self.net, &self.agent).unwrap()
    }
}

fn nothing_on_lost(_: &Agent) -> OnLost {
    Box::new(|_| {})
}

#[test]
fn an_add_whose_answer_is_lost_once_completes_on_its_retry() {
    let t = Relayed::start(1, nothing_on_lost);
    let pod = Netns::new("pod").unwrap();
    let id = unique_name("ctr");
    // The agent wrote the endpoint; the plugin saw its connection close and
    // asked again, with the same request.
    let result = t.net.add(&id, &pod).unwrap().expect_ok("ADD whose first answer was lost").json;
    assert_eq!(t.proxy.lost(), 1, "the relay did not lose the answer");
    let ip = result_ip(&result).unwrap();
    let state = t.state();
    assert_eq!(state.endpoints, vec![ip.to_string()]);
    assert_eq!(state.endpoint_map, vec![ip.to_string()]);
    traffic::ping(&pod, t.node.address, 1).unwrap();
    t.net.del(&id, Some(&pod), Some(&result)).unwrap().expect_ok("DEL");
    assert!(t.state().endpoint_map.is_empty());
}

#[test]
fn an_add_whose_answers_are_all_lost_leaves_no_endpoint_behind() {
    let t = Relayed::start(usize::MAX, nothing_on_lost);
    let empty = t.state();
    let pod = Netns::new("pod").unwrap();
    // Every answer to the endpoint request is lost until the plugin's
    // bound runs out: it fails, and undoes the entry the agent did write.
    let out = t.net.add(&unique_name("ctr"), &pod).unwrap().expect_error(11, "ADD whose answers were all lost");
    assert!(t.proxy.lost() >= 1, "the relay lost no answer");
    assert_eq!(t.state(), empty, "the failed ADD left an endpoint, veth or lease: {}", out.stderr);
    assert_eq!(links(&pod).unwrap(), vec!["lo"]);
}

#[test]
fn an_agent_killed_between_writing_and_answering_still_completes_the_add() {
    let killed: Arc<Mutex<Option<u32>>> = Arc::default();
    let on_lost = |agent: &Agent| -> OnLost {
        let pid = agent.pid().expect("running");
        let killed = killed.clone();
        Box::new(move |_| {
            // Between the map write and the answer: the agent dies.
            knet_tests::cmd::run("kill", &["-KILL", &pid.to_string()]).expect("kill the agent");
            *killed.lock().unwrap() = Some(pid);
        })
    };
    let mut t = Relayed::start(1, on_lost);
    let pod = Netns::new("pod").unwrap();
    let id = unique_name("ctr");
    let Relayed { net, agent, .. } = &mut t;
    let result = std::thread::scope(|s| {
        let add = s.spawn(|| net.add(&id, &pod));
        // The DaemonSet restarts the agent; the plugin is still retrying.
        knet_tests::wait::until("the relay to kill the agent", Duration::from_secs(30), || *killed.lock().unwrap())
            .unwrap();
        agent.wait_exit(Duration::from_secs(10)).unwrap();
        agent.restart().unwrap();
        add.join().unwrap().unwrap()
    });
    let result = result.expect_ok("ADD across an agent killed before it answered").json;
    let ip = result_ip(&result).unwrap();
    assert!(t.agent.log_text().contains("adopted pinned endpoint"), "the restarted agent did not adopt the entry");
    let state = t.state();
    assert_eq!(state.endpoints, vec![ip.to_string()]);
    assert_eq!(state.endpoint_map, vec![ip.to_string()]);
    assert_eq!(state.leases, vec![ip]);
    traffic::ping(&pod, t.node.address, 1).unwrap();
    t.net.del(&id, Some(&pod), Some(&result)).unwrap().expect_ok("DEL");
    assert!(t.state().endpoint_map.is_empty());
}
