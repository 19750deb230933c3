//! An agent restart drops no packet: links and maps are pinned, and a new
//! agent adopts them. Needs root; run with `cargo xtask test`.

use std::process::{Command, Stdio};

use knet_tests::{cluster::Cluster, traffic};

#[test]
fn restarting_an_agent_drops_no_cross_node_packet() {
    let mut c = Cluster::new(2, 1, "vxlan").unwrap();
    let (p0, p1) = (&c.pods[0][0], &c.pods[1][0]);
    traffic::ping(&p0.ns, p1.ip, 1).unwrap();
    let before = c.agents[0].request("GET", "/v1/datapath", None).unwrap().1;

    // 200 pings 20 ms apart across the restart of node 0's agent.
    let p1_ip = p1.ip.to_string();
    let ping = Command::new("ip")
        .args(p0.ns.exec_args("ping", &["-q", "-c", "200", "-i", "0.02", "-w", "8", &p1_ip]))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ping = KillOnDrop(Some(ping));
    c.agents[0].restart().unwrap();
    let out = ping.0.take().unwrap().wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("200 packets transmitted, 200 received"), "packets were lost across the restart: {text}");

    // The new agent holds the same state, with one program per hook.
    assert_eq!(c.agents[0].request("GET", "/v1/datapath", None).unwrap().1, before);
    assert_eq!(c.agents[0].tcx_ingress("eth0").unwrap(), vec!["from_netdev"]);
    assert_eq!(c.agents[0].tcx_ingress(&c.pods[0][0].host_veth).unwrap(), vec!["from_pod"]);
    traffic::ping(&c.pods[1][0].ns, c.pods[0][0].ip, 2).unwrap();
}

struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
