//! The knet CNI plugin, run as a container runtime runs it (inside the
//! node's namespace, `CNI_*` variables, config on stdin) with Debian's
//! reference host-local IPAM and portmap. Needs root; run with
//! `cargo xtask test` (one test at a time).

use std::{
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use knet_agent::config::Mode;
use knet_common::Stat;
use knet_tests::{
    cni::{self, links, result_host_veth, result_ip, KnetNetwork, PluginNode},
    netns::unique_name,
    traffic, wait, Agent, AgentOptions, Netns, Node,
};
use serde_json::{json, Value};

const POD_CIDR: &str = "10.244.0.0/24";
const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 10);

type Fixture = PluginNode;

fn fixture() -> Fixture {
    PluginNode::start(NODE_ADDRESS, POD_CIDR).unwrap()
}

fn in_pod_cidr(ip: Ipv4Addr) -> bool {
    let [a, b, c, d] = ip.octets();
    (a, b, c) == (10, 244, 0) && d != 0 && d != 255
}

fn endpoint_ips(agent: &Agent) -> Vec<String> {
    agent.endpoint_ips().unwrap()
}

/// A unique container ID, as a runtime's (alphanumeric).
fn container_id(role: &str) -> String {
    unique_name(role)
}

#[test]
fn two_pods_added_by_the_plugin_get_addresses_talk_through_redirect_and_pass_check() {
    let t = fixture();
    let (pod_a, pod_b) = (Netns::new("pod-a").unwrap(), Netns::new("pod-b").unwrap());
    let (id_a, id_b) = (container_id("ctr-a"), container_id("ctr-b"));
    let ra = t.net.add(&id_a, &pod_a).unwrap().expect_ok("ADD a").json;
    let rb = t.net.add(&id_b, &pod_b).unwrap().expect_ok("ADD b").json;

    let (ip_a, ip_b) = (result_ip(&ra).unwrap(), result_ip(&rb).unwrap());
    assert!(in_pod_cidr(ip_a) && in_pod_cidr(ip_b), "{ip_a} {ip_b} not in {POD_CIDR}");
    assert_ne!(ip_a, ip_b);
    assert_eq!(t.net.leases(), {
        let mut v = vec![ip_a, ip_b];
        v.sort();
        v
    });

    // The result is the spec's: host veth, pod interface in its sandbox,
    // the pod's /32 with the link-local gateway, the default route.
    assert_eq!(ra["cniVersion"], "1.0.0");
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(ra["interfaces"][1]["sandbox"], cni::netns_path(&pod_a));
    assert!(ra["interfaces"][0]["sandbox"].is_null());
    assert_eq!(ra["ips"][0]["address"], format!("{ip_a}/32"));
    assert_eq!(ra["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(ra["ips"][0]["interface"], 1);
    assert_eq!(ra["routes"], json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]));
    let host_a = result_host_veth(&ra).unwrap();
    assert_eq!(
        ra["interfaces"][0]["mac"].as_str().unwrap(),
        knet_tests::topology::link_mac(&t.node.ns, &host_a).unwrap()
    );
    assert_eq!(ra["interfaces"][1]["mac"].as_str().unwrap(), knet_tests::topology::link_mac(&pod_a, "eth0").unwrap());
    // Wired as knet wires pods: /32, MTU, static gateway neighbour.
    let addr = pod_a.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(addr.contains(&format!("{ip_a}/32")), "{addr}");
    let mtu = pod_a.read("/sys/class/net/eth0/mtu").unwrap();
    assert_eq!(mtu.trim(), "1500");
    let neigh = pod_a.ip(&["neigh", "show", "169.254.1.1"]).unwrap();
    assert!(neigh.contains("PERMANENT"), "{neigh}");

    // The agent has both endpoints, on the veths the results name.
    assert_eq!(endpoint_ips(&t.agent), {
        let mut v = vec![ip_a.to_string(), ip_b.to_string()];
        v.sort();
        v
    });
    assert_eq!(t.agent.tcx_ingress(&host_a).unwrap(), vec!["from_pod"]);

    // Traffic between them goes through knet's redirect.
    let (redirected_before, _) = t.agent.stat(Stat::RedirectLocal).unwrap();
    traffic::ping(&pod_a, ip_b, 5).unwrap();
    traffic::ping(&pod_b, ip_a, 5).unwrap();
    let (redirected_after, _) = t.agent.stat(Stat::RedirectLocal).unwrap();
    assert!(
        redirected_after - redirected_before >= 20,
        "{} rose by {} for 10 echo requests and 10 replies",
        Stat::RedirectLocal.name(),
        redirected_after - redirected_before
    );

    t.net.check(&id_a, &pod_a, &ra).unwrap().expect_ok("CHECK a");
    t.net.check(&id_b, &pod_b, &rb).unwrap().expect_ok("CHECK b");
}

#[test]
fn check_reports_what_is_wrong() {
    let t = fixture();
    let pod = Netns::new("pod").unwrap();
    let id = container_id("ctr");
    let r = t.net.add(&id, &pod).unwrap().expect_ok("ADD").json;
    let ip = result_ip(&r).unwrap();
    t.net.check(&id, &pod, &r).unwrap().expect_ok("CHECK");

    // The pod loses its default route and the agent its endpoint.
    pod.ip(&["route", "del", "default"]).unwrap();
    t.agent.delete_endpoint(ip).unwrap();
    let out = t.net.check(&id, &pod, &r).unwrap().expect_error(102, "CHECK of a broken pod");
    let msg = out.json["msg"].as_str().unwrap();
    assert!(msg.contains("no route 0.0.0.0/0 via 169.254.1.1"), "{msg}");
    assert!(msg.contains(&format!("no endpoint {ip}")), "{msg}");

    // CHECK of a container that was never added names the missing parts.
    let other = Netns::new("other").unwrap();
    let out = t.net.check(&container_id("ghost"), &other, &r).unwrap();
    assert!(!out.success(), "CHECK of a never-added container passed");
}

#[test]
fn del_removes_veth_lease_and_endpoint_is_idempotent_and_add_works_again() {
    let t = fixture();
    let pod = Netns::new("pod").unwrap();
    let id = container_id("ctr");
    let r = t.net.add(&id, &pod).unwrap().expect_ok("ADD").json;
    let (ip, host) = (result_ip(&r).unwrap(), result_host_veth(&r).unwrap());
    assert!(links(&t.node.ns).unwrap().contains(&host));
    assert_eq!(t.net.leases(), vec![ip]);
    assert_eq!(endpoint_ips(&t.agent), vec![ip.to_string()]);
    assert_eq!(t.agent.map_ips().unwrap(), vec![ip.to_string()]);

    t.net.del(&id, Some(&pod), Some(&r)).unwrap().expect_ok("DEL");
    assert!(!links(&t.node.ns).unwrap().contains(&host), "host veth {host} is still there");
    assert_eq!(links(&pod).unwrap(), vec!["lo"], "eth0 is still in the pod");
    assert!(t.net.leases().is_empty(), "lease left: {:?}", t.net.files());
    assert!(endpoint_ips(&t.agent).is_empty(), "endpoint left");
    assert!(t.agent.map_ips().unwrap().is_empty(), "map entry left");
    let routes = t.node.ns.ip(&["route", "show"]).unwrap();
    assert!(!routes.contains(&ip.to_string()), "node route left: {routes}");

    // Again, without prevResult, and without a netns: still fine.
    t.net.del(&id, Some(&pod), Some(&r)).unwrap().expect_ok("second DEL");
    t.net.del(&id, None, None).unwrap().expect_ok("DEL without netns");
    t.net.del(&container_id("never"), Some(&pod), None).unwrap().expect_ok("DEL of a container never added");

    let again = t.net.add(&id, &pod).unwrap().expect_ok("ADD again").json;
    let ip2 = result_ip(&again).unwrap();
    assert!(in_pod_cidr(ip2));
    assert_eq!(t.net.leases(), vec![ip2]);
    assert_eq!(endpoint_ips(&t.agent), vec![ip2.to_string()]);
    t.net.check(&id, &pod, &again).unwrap().expect_ok("CHECK after ADD again");
}

#[test]
fn del_after_the_pod_namespace_is_gone_still_releases_lease_and_endpoint() {
    let t = fixture();
    let pod = Netns::new("pod").unwrap();
    let pod_path = cni::netns_path(&pod);
    let id = container_id("ctr");
    let r = t.net.add(&id, &pod).unwrap().expect_ok("ADD").json;
    let host = result_host_veth(&r).unwrap();
    drop(pod);
    assert!(!std::path::Path::new(&pod_path).exists());

    let mut env = t.net.env("DEL", &id, None);
    env.netns = Some(pod_path);
    let mut conf = t.net.conf();
    conf["prevResult"] = r.clone();
    t.net.run(&env, &conf).unwrap().expect_ok("DEL of a gone netns");
    assert!(t.net.leases().is_empty());
    assert!(endpoint_ips(&t.agent).is_empty());
    wait::until("the host veth to go with its namespace", Duration::from_secs(10), || {
        (!links(&t.node.ns).unwrap().contains(&host)).then_some(())
    })
    .unwrap();
}

/// An iperf3 server in a namespace for one run; killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn portmap_chained_after_knet_gets_its_result_and_forwards_a_host_port() {
    let t = fixture();
    let pod = Netns::new("pod").unwrap();
    let id = container_id("ctr");
    let knet_result = t.net.add(&id, &pod).unwrap().expect_ok("knet ADD").json;
    let ip = result_ip(&knet_result).unwrap();

    // libcni's second step: portmap's entry with name, cniVersion, the
    // runtime's port mappings and knet's result as prevResult.
    let (host_port, pod_port) = (18080u16, 5201u16);
    let portmap_conf = |prev: &Value| {
        json!({
            "cniVersion": "1.0.0",
            "name": t.net.name,
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [
                {"hostPort": host_port, "containerPort": pod_port, "protocol": "tcp"}
            ]},
            "prevResult": prev,
        })
    };
    let env = t.net.env("ADD", &id, Some(&pod));
    let chained =
        t.net.run_reference("portmap", &env, &portmap_conf(&knet_result)).unwrap().expect_ok("portmap ADD").json;
    // The chain's result is knet's, carried through prevResult.
    assert_eq!(chained["ips"], knet_result["ips"]);
    assert_eq!(chained["interfaces"], knet_result["interfaces"]);
    assert_eq!(chained["routes"], knet_result["routes"]);
    let rules = t.node.ns.exec("iptables-save", &["-t", "nat"]).unwrap();
    assert!(rules.contains(&format!("{ip}:{pod_port}")), "no DNAT to the pod in:\n{rules}");

    // The mapping works: the node's own address and host port reach the
    // pod's server (DNAT on the node, then the host veth; the pod's answer
    // goes back through from_pod to the node's stack).
    let server = Server(
        Command::new("ip")
            .args(pod.exec_args("iperf3", &["-s", "-1", "-B", &ip.to_string(), "-p", &pod_port.to_string()]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait::until("iperf3 to listen in the pod", Duration::from_secs(10), || {
        let listening = pod.exec("ss", &["-Htln"]).ok()?;
        listening.contains(&format!("{ip}:{pod_port}")).then_some(())
    })
    .unwrap();
    let out = knet_tests::cmd::output(
        "ip",
        &t.node.ns.exec_args(
            "timeout",
            &[
                "20",
                "iperf3",
                "-c",
                &NODE_ADDRESS.to_string(),
                "-p",
                &host_port.to_string(),
                "-t",
                "1",
                "-J",
                "--connect-timeout",
                "3000",
            ],
        ),
    )
    .unwrap();
    drop(server);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 100_000, "host port {host_port} did not reach the pod: {}", String::from_utf8_lossy(&out.stdout));

    // Teardown in reverse order, as libcni does: portmap, then knet.
    let env = t.net.env("DEL", &id, Some(&pod));
    t.net.run_reference("portmap", &env, &portmap_conf(&chained)).unwrap().expect_ok("portmap DEL");
    let rules = t.node.ns.exec("iptables-save", &["-t", "nat"]).unwrap();
    assert!(!rules.contains(&format!("{ip}:{pod_port}")), "{rules}");
    t.net.del(&id, Some(&pod), Some(&chained)).unwrap().expect_ok("knet DEL");
    assert!(t.net.leases().is_empty());
}

/// Everything ADD could leave behind.
#[derive(Debug, PartialEq)]
struct Snapshot {
    node_links: Vec<String>,
    pod_links: Vec<String>,
    files: Vec<String>,
    endpoints: Option<Vec<String>>,
    map_ips: Option<Vec<String>>,
}

fn snapshot(t: &Fixture, pod: &Netns, agent_up: bool) -> Snapshot {
    Snapshot {
        node_links: links(&t.node.ns).unwrap(),
        pod_links: links(pod).unwrap(),
        files: t.net.files(),
        endpoints: agent_up.then(|| endpoint_ips(&t.agent)),
        map_ips: agent_up.then(|| t.agent.map_ips().unwrap()),
    }
}

#[test]
fn bad_input_gets_the_right_cni_error_and_changes_nothing() {
    let t = fixture();
    let pod = Netns::new("pod").unwrap();
    let id = container_id("ctr");
    let add_env = t.net.env("ADD", &id, Some(&pod));
    let before = snapshot(&t, &pod, true);

    let mut cases: Vec<(&str, cni::CniEnv, Vec<u8>, u64)> = Vec::new();
    cases.push(("malformed JSON", add_env.clone(), b"{\"cniVersion\": \"1.0.0\",".to_vec(), 6));
    for version in ["0.2.0", "9.9.9"] {
        let mut conf = t.net.conf();
        conf["cniVersion"] = json!(version);
        cases.push(("unsupported cniVersion", add_env.clone(), conf.to_string().into_bytes(), 1));
    }
    let mut env = add_env.clone();
    env.command = "FROB".into();
    cases.push(("unknown CNI_COMMAND", env, t.net.conf().to_string().into_bytes(), 4));
    let mut env = add_env.clone();
    env.netns = None;
    cases.push(("missing CNI_NETNS", env, t.net.conf().to_string().into_bytes(), 4));
    let mut env = add_env.clone();
    env.netns = Some(format!("/run/netns/{}", unique_name("nonexistent")));
    cases.push(("netns that does not exist", env, t.net.conf().to_string().into_bytes(), 3));
    let mut conf = t.net.conf();
    conf["ipam"]["type"] = json!("no-such-ipam");
    cases.push(("unknown IPAM plugin", add_env.clone(), conf.to_string().into_bytes(), 7));
    let mut conf = t.net.conf();
    conf["mtu"] = json!(20);
    cases.push(("invalid mtu", add_env.clone(), conf.to_string().into_bytes(), 7));

    for (what, env, stdin, code) in &cases {
        let out = t.net.run_raw(env, stdin).unwrap().expect_error(*code, what);
        assert_eq!(snapshot(&t, &pod, true), before, "{what} changed something: {}", out.stdout);
    }

    // A second ADD for the same container and interface is refused and
    // leaves the first one's wiring alone.
    let first = t.net.add(&id, &pod).unwrap().expect_ok("first ADD").json;
    let after_first = snapshot(&t, &pod, true);
    t.net.add(&id, &pod).unwrap().expect_error(100, "second ADD of the same container and interface");
    assert_eq!(snapshot(&t, &pod, true), after_first);
    t.net.check(&id, &pod, &first).unwrap().expect_ok("CHECK after the refused second ADD");
}

#[test]
fn add_with_the_agent_down_fails_fast_with_try_again_later_and_leaves_nothing() {
    let mut t = fixture();
    let pod = Netns::new("pod").unwrap();
    let before = snapshot(&t, &pod, true);
    let status = t.agent.stop().unwrap();
    assert!(status.success());

    let out = t.net.add(&container_id("ctr"), &pod).unwrap().expect_error(11, "ADD with the agent down");
    assert!(out.elapsed < Duration::from_secs(5), "the plugin took {:?} to notice the agent is down", out.elapsed);
    let msg = out.json["msg"].as_str().unwrap();
    assert!(msg.contains("agent"), "{msg}");
    let after = snapshot(&t, &pod, false);
    assert_eq!(after.node_links, before.node_links);
    assert_eq!(after.pod_links, before.pod_links);
    assert_eq!(after.files, before.files, "a lease was taken");

    // An agent that is up again but refuses the endpoint (a pod CIDR that
    // does not contain host-local's range): ADD is undone completely.
    t.agent.restart().unwrap();
    let mut conf = t.net.conf();
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.99.0.0/24"}]]);
    let out = t
        .net
        .run(&t.net.env("ADD", &container_id("ctr"), Some(&pod)), &conf)
        .unwrap()
        .expect_error(101, "ADD the agent refuses");
    assert!(out.json["msg"].as_str().unwrap().contains("outside"), "{}", out.stdout);
    let after = snapshot(&t, &pod, true);
    assert_eq!(after.node_links, before.node_links, "veth left");
    assert_eq!(after.pod_links, before.pod_links, "pod interface left");
    assert!(t.net.leases().is_empty(), "lease left: {:?}", t.net.files());
    assert_eq!(after.endpoints, before.endpoints);
}

#[test]
fn version_reports_what_knet_supports() {
    let t = fixture();
    let pod = Netns::new("pod").unwrap();
    let mut env = t.net.env("VERSION", "unused", Some(&pod));
    env.netns = None;
    let out = t.net.run_raw(&env, br#"{"cniVersion":"0.4.0"}"#).unwrap().expect_ok("VERSION");
    assert_eq!(out.json["cniVersion"], "0.4.0");
    assert_eq!(out.json["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));

    // An older version gets an older result format (ips[].version) and
    // CHECK is refused before 0.4.0.
    let mut conf = t.net.conf();
    conf["cniVersion"] = json!("0.3.1");
    let id = container_id("old");
    let r = t.net.run(&t.net.env("ADD", &id, Some(&pod)), &conf).unwrap().expect_ok("ADD 0.3.1").json;
    assert_eq!(r["cniVersion"], "0.3.1");
    assert_eq!(r["ips"][0]["version"], "4");
    conf["prevResult"] = r;
    t.net.run(&t.net.env("CHECK", &id, Some(&pod)), &conf).unwrap().expect_error(1, "CHECK at 0.3.1");
    t.net.run(&t.net.env("DEL", &id, Some(&pod)), &conf).unwrap().expect_ok("DEL 0.3.1");
}

#[test]
fn two_hundred_add_del_cycles_leave_nothing_behind() {
    let t = fixture();
    let pod = Netns::new("pod").unwrap();
    // One cycle first: host-local creates its bookkeeping files (lock,
    // last reserved IP) once; those may stay.
    let id = container_id("warmup");
    let r = t.net.add(&id, &pod).unwrap().expect_ok("warm-up ADD").json;
    t.net.del(&id, Some(&pod), Some(&r)).unwrap().expect_ok("warm-up DEL");
    let before = snapshot(&t, &pod, true);
    assert!(t.net.leases().is_empty());
    assert_eq!(before.pod_links, vec!["lo"]);

    let mut seen = std::collections::BTreeSet::new();
    for i in 0..200 {
        let id = format!("{}-{i}", container_id("cycle"));
        let r = t.net.add(&id, &pod).unwrap().expect_ok(&format!("ADD #{i}")).json;
        let ip = result_ip(&r).unwrap();
        assert!(in_pod_cidr(ip));
        seen.insert(ip);
        t.net.del(&id, Some(&pod), Some(&r)).unwrap().expect_ok(&format!("DEL #{i}"));
    }
    let after = snapshot(&t, &pod, true);
    assert_eq!(after, before, "200 ADD/DEL cycles left something behind");
    assert!(t.net.leases().is_empty());
    assert!(seen.len() > 1, "host-local handed out only {seen:?}");
}

#[test]
fn config_mtu_and_ipam_routes_reach_the_pod_and_check_verifies_them() {
    let t = fixture();
    let pod = Netns::new("pod").unwrap();
    let id = container_id("ctr");
    let mut conf = t.net.conf();
    conf["mtu"] = json!(1400);
    conf["ipam"]["routes"] = json!([{"dst": "10.96.0.0/12"}]);
    let r = t
        .net
        .run(&t.net.env("ADD", &id, Some(&pod)), &conf)
        .unwrap()
        .expect_ok("ADD with mtu 1400 and an IPAM route")
        .json;
    let host = result_host_veth(&r).unwrap();
    assert_eq!(pod.read("/sys/class/net/eth0/mtu").unwrap().trim(), "1400");
    assert_eq!(t.node.ns.read(&format!("/sys/class/net/{host}/mtu")).unwrap().trim(), "1400");
    assert_eq!(
        r["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
            {"dst": "10.96.0.0/12", "gw": "169.254.1.1"}
        ])
    );
    let routes = pod.ip(&["route", "show", "10.96.0.0/12"]).unwrap();
    assert!(routes.contains("via 169.254.1.1 dev eth0"), "no IPAM route in the pod: {routes:?}");
    conf["prevResult"] = r.clone();
    t.net.run(&t.net.env("CHECK", &id, Some(&pod)), &conf).unwrap().expect_ok("CHECK");

    // CHECK holds the pod to the configured MTU and to the IPAM route.
    pod.ip(&["route", "del", "10.96.0.0/12"]).unwrap();
    pod.ip(&["link", "set", "eth0", "mtu", "1500"]).unwrap();
    let out =
        t.net.run(&t.net.env("CHECK", &id, Some(&pod)), &conf).unwrap().expect_error(102, "CHECK of a changed pod");
    let msg = out.json["msg"].as_str().unwrap();
    assert!(msg.contains("mtu") && msg.contains("10.96.0.0/12"), "{msg}");
}

/// Resumes a stopped process on drop, also when the test fails.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = knet_tests::cmd::run("kill", &["-CONT", &self.0]);
    }
}

#[test]
fn add_with_a_hung_agent_fails_within_bounded_time_and_leaves_nothing() {
    let t = fixture();
    let pod = Netns::new("pod").unwrap();
    let before = snapshot(&t, &pod, true);
    // The agent is the only process in the node's namespace; freeze it, so
    // its socket accepts connections but nothing answers.
    let pids = knet_tests::cmd::ip(&["netns", "pids", t.node.ns.name()]).unwrap();
    let pid = pids.split_whitespace().next().expect("agent pid").to_string();
    knet_tests::cmd::run("kill", &["-STOP", &pid]).unwrap();
    let resume = Resume(pid);

    let out = t.net.add(&container_id("ctr"), &pod).unwrap().expect_error(11, "ADD with a hung agent");
    assert!(out.elapsed < Duration::from_secs(10), "the plugin took {:?} with a hung agent", out.elapsed);
    drop(resume);
    assert_eq!(snapshot(&t, &pod, true), before, "a hung agent's ADD left something");
}

/// `ping -M do` (never fragment) of `size` payload bytes; its output.
fn df_ping(from: &Netns, to: Ipv4Addr, size: u32) -> std::process::Output {
    knet_tests::cmd::output(
        "ip",
        &from.exec_args(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "2", "-M", "do", "-s", &size.to_string(), &to.to_string()],
        ),
    )
    .unwrap()
}

fn said(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn with_a_node_source_routes_leaving_the_node_carry_the_agents_route_mtu_and_same_node_keeps_the_full_mtu() {
    // One node on an underlay (a bridge in a fabric namespace), its agent
    // in VXLAN mode with a node file that lists it.
    let fabric = Netns::new("fabric").unwrap();
    fabric.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    fabric.ip(&["link", "set", "br0", "up"]).unwrap();
    let node = Node::on_fabric("node", NODE_ADDRESS, &fabric, "n0").unwrap();
    let dir = cni::TempDir::new("nodes").unwrap();
    let nodes_file = dir.0.join("nodes");
    std::fs::write(&nodes_file, format!("node-0 {NODE_ADDRESS} {POD_CIDR}\n")).unwrap();
    let extra = format!("nodes_file = {:?}\nmode = \"vxlan\"\n", nodes_file.display().to_string());
    let agent = Agent::start_with(
        &node.ns,
        &AgentOptions { node_name: "node-0".into(), pod_cidr: Some(POD_CIDR.into()) },
        &extra,
    )
    .unwrap();
    let view = agent.node().unwrap();
    assert_eq!(view.route_mtu, Some(1450), "{view:?}");
    let net = KnetNetwork::new(&node.ns, POD_CIDR, agent.socket()).unwrap();
    let a = net.add_pod("pod-a").unwrap();
    let b = net.add_pod("pod-b").unwrap();
    let (pa, pb) = (&a.pod, &b.pod);

    // A 1.0.0 result reports the routes without MTUs (the field came with
    // 1.1.0).
    assert_eq!(
        a.attachment.result["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
            {"dst": POD_CIDR, "gw": "169.254.1.1"}
        ])
    );
    // The kernel has them so: the device keeps 1500, the default route
    // carries 1450, the pod CIDR route nothing.
    assert_eq!(pa.ns.read("/sys/class/net/eth0/mtu").unwrap().trim(), "1500");
    let routes: Value = serde_json::from_str(&pa.ns.ip(&["-j", "route", "show"]).unwrap()).unwrap();
    let route = |dst: &str| {
        routes.as_array().unwrap().iter().find(|r| r["dst"] == dst).unwrap_or_else(|| panic!("no {dst} in {routes}"))
    };
    assert_eq!(route("default")["metrics"], json!([{"mtu": 1450}]), "{routes}");
    assert_eq!(route("default")["gateway"], "169.254.1.1");
    assert_eq!(route(POD_CIDR)["gateway"], "169.254.1.1");
    assert!(route(POD_CIDR)["metrics"].is_null(), "the pod CIDR route has metrics: {routes}");
    assert_eq!(cni::route_mtu(&pa.ns, pb.ip).unwrap(), None);
    assert_eq!(cni::route_mtu(&pa.ns, Ipv4Addr::new(10, 244, 1, 5)).unwrap(), Some(1450));
    assert_eq!(cni::route_mtu(&pa.ns, NODE_ADDRESS).unwrap(), Some(1450));

    // Same node: a full 1500-byte packet that may not be fragmented
    // arrives (through knet's redirect).
    let (redirected_before, _) = agent.stat(Stat::RedirectLocal).unwrap();
    let full = df_ping(&pa.ns, pb.ip, 1472);
    assert!(full.status.success(), "1500-byte DF ping to the same-node pod failed: {}", said(&full));
    assert!(agent.stat(Stat::RedirectLocal).unwrap().0 >= redirected_before + 4);
    // Leaving the pod's subnet: 1450 bytes go, 1451 are refused by the
    // pod's own stack.
    let fits = df_ping(&pa.ns, NODE_ADDRESS, 1422);
    assert!(fits.status.success(), "1450-byte DF ping to the node failed: {}", said(&fits));
    let too_big = df_ping(&pa.ns, NODE_ADDRESS, 1423);
    assert!(!too_big.status.success(), "1451 bytes went out past a 1450 route MTU");
    assert!(said(&too_big).contains("1450"), "not refused at the route MTU: {}", said(&too_big));

    // A 1.1.0 configuration gets a 1.1.0 result: the default route at the
    // route MTU, the node's pod CIDR without one (the device's). Debian's
    // host-local speaks no 1.1.0 and is given the configuration at 1.0.0.
    let pod_c = Netns::new("pod-c").unwrap();
    let id_c = container_id("ctr-c");
    let mut conf_c = net.conf();
    conf_c["cniVersion"] = json!("1.1.0");
    let rc = net.run(&net.env("ADD", &id_c, Some(&pod_c)), &conf_c).unwrap().expect_ok("ADD at 1.1.0").json;
    assert_eq!(rc["cniVersion"], "1.1.0");
    assert_eq!(
        rc["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1450},
            {"dst": POD_CIDR, "gw": "169.254.1.1"}
        ])
    );
    assert_eq!(cni::route_mtu(&pod_c, NODE_ADDRESS).unwrap(), Some(1450));
    conf_c["prevResult"] = rc;
    net.run(&net.env("CHECK", &id_c, Some(&pod_c)), &conf_c).unwrap().expect_ok("CHECK at 1.1.0");
    net.run(&net.env("DEL", &id_c, Some(&pod_c)), &conf_c).unwrap().expect_ok("DEL at 1.1.0");

    // CHECK holds the pod to those routes and their MTUs (from the agent:
    // the 1.0.0 prevResult has none).
    a.attachment.check().unwrap().expect_ok("CHECK a");
    b.attachment.check().unwrap().expect_ok("CHECK b");
    pa.ns.ip(&["route", "change", "default", "via", "169.254.1.1", "dev", "eth0", "onlink"]).unwrap();
    pa.ns.ip(&["route", "del", POD_CIDR]).unwrap();
    let out = a.attachment.check().unwrap().expect_error(102, "CHECK with the route MTUs changed");
    let msg = out.json["msg"].as_str().unwrap();
    assert!(msg.contains("route 0.0.0.0/0 via 169.254.1.1 has mtu none (the device's), expected 1450"), "{msg}");
    assert!(msg.contains(&format!("no route {POD_CIDR} via 169.254.1.1")), "{msg}");

    // The harness' guards DEL the pods: no veth, lease or endpoint stays.
    drop((a, b));
    assert!(net.leases().is_empty(), "leases left: {:?}", net.leases());
    assert_eq!(endpoint_ips(&agent), Vec::<String>::new());
    assert_eq!(links(&node.ns).unwrap(), vec!["eth0", "lo"]);
}

#[test]
fn a_two_node_vxlan_cluster_wired_by_the_plugin_has_full_pod_to_pod_connectivity() {
    let c = knet_tests::cluster::Cluster::with_cni(2, 2, Mode::Vxlan).unwrap();
    let pods: Vec<_> = c.all_pods().collect();
    // Addresses from host-local, out of each node's own pod CIDR, one lease
    // each, and every pod passes CHECK.
    for (i, p) in &pods {
        assert_eq!(p.ip.octets()[..3], [10, 244, *i as u8], "pod {} is not in node {i}'s pod CIDR", p.ip);
        assert!(c.networks[*i].leases().contains(&p.ip), "no lease for {}", p.ip);
        assert_eq!(cni::route_mtu(&p.ns, Ipv4Addr::new(10, 244, 1 - *i as u8, 9)).unwrap(), Some(1450));
    }
    assert_eq!(c.attachments.len(), 4);
    for att in &c.attachments {
        att.check().unwrap().expect_ok("CHECK");
    }

    for (i, a) in &pods {
        for (j, b) in &pods {
            if a.ip != b.ip {
                traffic::ping(&a.ns, b.ip, 2)
                    .unwrap_or_else(|e| panic!("pod {} (node {i}) -> pod {} (node {j}): {e:#}", a.ip, b.ip));
            }
        }
    }
    // TCP with the default MSS across nodes, both directions, and on a node.
    let opts = traffic::IperfOptions { seconds: 1, ..Default::default() };
    for (a, b) in [(&c.pods[0][0], &c.pods[1][1]), (&c.pods[1][0], &c.pods[0][1]), (&c.pods[0][1], &c.pods[0][0])] {
        let t = traffic::iperf3(&a.ns, &b.ns, b.ip, opts).unwrap();
        assert!(t.bytes_received > 1_000_000, "{} -> {}: only {} bytes", a.ip, b.ip, t.bytes_received);
    }
    for (n, agent) in c.agents.iter().enumerate() {
        assert!(agent.stat(Stat::RedirectTunnel).unwrap().0 > 100, "node {n} tunnelled nothing");
        assert!(agent.stat(Stat::DeliverFromNode).unwrap().0 > 100, "node {n} delivered nothing from the other");
        assert_eq!(agent.stat(Stat::DropTooBig).unwrap().0, 0);
    }
}
