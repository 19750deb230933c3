//! Bad input gets a clear error and changes nothing. Needs root; run with
//! `cargo xtask test`.

use std::net::Ipv4Addr;

use knet_tests::{agent::agent_binary, traffic, Agent, AgentOptions, Node};

#[test]
fn an_invalid_pod_cidr_stops_the_agent_with_a_message() {
    let dir = std::env::temp_dir().join(knet_tests::netns::unique_name("badcfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    let socket = dir.join("agent.sock");
    for (cidr, needle) in [("10.244.0.0/33", "not a CIDR"), ("10.244.0.5/24", "host bits"), ("nope", "not a CIDR")] {
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!("node_name = \"n\"\npod_cidr = {cidr:?}\napi_socket = {:?}\n", socket.display().to_string()),
        )
        .unwrap();
        let out = std::process::Command::new(agent_binary().unwrap())
            .args(["run", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "agent accepted pod_cidr {cidr}");
        assert!(stderr.contains("pod_cidr") && stderr.contains(needle), "{cidr}: {stderr}");
        assert!(!socket.exists(), "a refused config still opened the API socket");
    }
    // An unknown key (a typo) is refused too, naming the key.
    let config = dir.join("typo.toml");
    std::fs::write(&config, "node_name = \"n\"\npod_cdr = \"10.244.0.0/24\"\n").unwrap();
    let out = std::process::Command::new(agent_binary().unwrap())
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pod_cdr"));
}

struct RemoveDir(std::path::PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything a client can observe of the agent's state.
fn snapshot(agent: &Agent) -> (Vec<knet_agent::endpoints::Endpoint>, Vec<String>) {
    (agent.endpoints().unwrap(), agent.map_ips().unwrap())
}

#[test]
fn bad_endpoint_requests_are_refused_and_change_nothing() {
    let node = Node::new("node", Ipv4Addr::new(192, 168, 77, 10)).unwrap();
    let a = node.add_pod("pod-a", Ipv4Addr::new(10, 244, 0, 2)).unwrap();
    let b = node.add_pod("pod-b", Ipv4Addr::new(10, 244, 0, 3)).unwrap();
    let agent =
        Agent::start(&node.ns, &AgentOptions { node_name: "node-0".into(), pod_cidr: Some("10.244.0.0/24".into()) })
            .unwrap();
    agent.add_pod(&a).unwrap();
    let before = snapshot(&agent);

    let post = |body: &str| agent.request("POST", "/v1/endpoints", Some(body)).unwrap();
    let cases: Vec<(String, u16, &str)> = vec![
        // An endpoint outside the pod CIDR.
        (
            format!(r#"{{"ip":"10.245.0.3","host_veth":"{}","pod_mac":"{}"}}"#, b.host_veth, b.mac),
            400,
            "outside this node's pod CIDR",
        ),
        // A host veth that does not exist.
        (format!(r#"{{"ip":"10.244.0.3","host_veth":"kvnope","pod_mac":"{}"}}"#, b.mac), 422, "does not exist"),
        // The same IP twice.
        (
            format!(r#"{{"ip":"10.244.0.2","host_veth":"{}","pod_mac":"{}"}}"#, b.host_veth, b.mac),
            409,
            "already an endpoint",
        ),
        // A veth that already carries a pod.
        (
            format!(r#"{{"ip":"10.244.0.3","host_veth":"{}","pod_mac":"{}"}}"#, a.host_veth, b.mac),
            409,
            "already carries",
        ),
        // Malformed requests.
        ("{not json".to_string(), 400, "malformed request"),
        (r#"{"ip":"10.244.0.3"}"#.to_string(), 400, "missing field"),
        (
            format!(r#"{{"ip":"10.244.0.3","host_veth":"{}","pod_mac":"{}","extra":1}}"#, b.host_veth, b.mac),
            400,
            "unknown field",
        ),
        (format!(r#"{{"ip":"10.244.0.3","host_veth":"{}","pod_mac":"zz"}}"#, b.host_veth), 400, "MAC"),
        (format!(r#"{{"ip":"10.244.0.300","host_veth":"{}","pod_mac":"{}"}}"#, b.host_veth, b.mac), 400, "IPv4"),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = post(&body);
        assert_eq!(got, status, "{body} -> {answer}");
        let msg = answer["error"].as_str().unwrap_or_else(|| panic!("no JSON error for {body}: {answer}"));
        assert!(msg.contains(needle), "{body}: {msg:?} does not say {needle:?}");
        assert_eq!(snapshot(&agent), before, "state changed after {body}");
        assert!(agent.tcx_ingress(&b.host_veth).unwrap().is_empty(), "a refused add left a program on B's veth");
    }

    // Not HTTP at all, an unknown path, a bad IP to delete.
    let (status, _) = agent.raw(b"garbage\r\n\r\n").unwrap();
    assert_eq!(status, 400);
    assert_eq!(agent.request("GET", "/v1/nothing", None).unwrap().0, 404);
    assert_eq!(agent.request("DELETE", "/v1/endpoints/not-an-ip", None).unwrap().0, 400);
    assert_eq!(agent.request("DELETE", "/v1/endpoints/10.244.0.77", None).unwrap().0, 404);
    assert_eq!(snapshot(&agent), before);

    // The agent is still healthy and the registered pod still works.
    traffic::ping(&a.ns, node.address, 2).unwrap();
    agent.add_pod(&b).unwrap();
    traffic::ping(&a.ns, b.ip, 2).unwrap();
}
