//! An agent that cannot be talked into harm: a second agent on the same
//! node, links that are not a pod's, an unprivileged local user, a flood of
//! idle connections and oversized requests. Needs root; run with
//! `cargo xtask test`.

use std::{
    os::unix::net::UnixStream,
    process::Command,
    time::{Duration, Instant},
};

use knet_agent::config::Mode;
use knet_agent::{api::DatapathView, endpoints::AddEndpoint};
use knet_tests::{
    agent::agent_binary,
    agent::CallError,
    cluster::{pod_cidr, Cluster},
    cni::KnetNetwork,
    traffic, wait,
};

/// What a second agent could have touched on node `i`.
fn node_state(c: &Cluster, i: usize) -> (DatapathView, String, String, Vec<String>, Vec<String>) {
    let agent = &c.agents[i];
    let datapath = agent.datapath().unwrap();
    let routes = c.nodes[i].ns.ip(&["route", "show", "proto", "75"]).unwrap();
    let nft = c.nodes[i].ns.exec("nft", &["list", "ruleset"]).unwrap();
    let pins = knet_tests::cni::files_under(agent.pin_dir());
    let underlay = agent.tcx_ingress("eth0").unwrap();
    (datapath, routes, nft, pins, underlay)
}

/// Runs a second `knet-agent run` in node `i`'s network namespace (and
/// the host's mount namespace, where the first one's pins are, as the
/// harness runs agents) with `config`; its exit status and stderr.
/// Bounded: it must give up by itself.
fn second_agent(c: &Cluster, i: usize, config: &str) -> (std::process::ExitStatus, String) {
    let file = std::env::temp_dir().join(knet_tests::netns::unique_name("second.toml"));
    std::fs::write(&file, config).unwrap();
    let bin = agent_binary().unwrap();
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", c.nodes[i].ns.name()))
        .arg(&bin)
        .args(["run", "--config"])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait::until("the second agent to exit", Duration::from_secs(20), || child.try_wait().unwrap());
    let _ = std::fs::remove_file(&file);
    let status = status.unwrap_or_else(|e| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{e:#}: a second agent kept running");
    });
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn a_second_agent_changes_nothing_and_says_why() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 1).unwrap();
    let before = node_state(&c, 0);
    let agent = &c.agents[0];
    // No node file: started for real, this agent would take the node out
    // of the cluster (maps, routes, masquerade table, underlay programs).
    // The same pins (another socket): the pin directory's lock refuses it.
    let socket = std::env::temp_dir().join(knet_tests::netns::unique_name("second.sock"));
    let same_pins = format!(
        "node_name = \"node-0\"\npod_cidr = {:?}\napi_socket = {:?}\nbpf_pin_dir = {:?}\n",
        pod_cidr(0),
        socket.display().to_string(),
        agent.pin_dir().display().to_string(),
    );
    let (status, stderr) = second_agent(&c, 0, &same_pins);
    let _ = std::fs::remove_file(&socket);
    assert!(!status.success(), "a second agent on the same pins started: {stderr}");
    assert!(stderr.contains("another knet-agent is running on"), "{stderr}");
    assert_eq!(node_state(&c, 0), before, "the second agent changed the first one's state");

    // Its own pins, the first one's socket: refused as well, before it
    // makes its pin directory.
    let pins = std::path::PathBuf::from("/sys/fs/bpf").join(knet_tests::netns::unique_name("second-pins"));
    let other_pins = format!(
        "node_name = \"node-0\"\npod_cidr = {:?}\napi_socket = {:?}\nbpf_pin_dir = {:?}\n",
        pod_cidr(0),
        agent.socket().display().to_string(),
        pins.display().to_string(),
    );
    let (status, stderr) = second_agent(&c, 0, &other_pins);
    let left_behind = pins.exists();
    let _ = std::fs::remove_dir_all(&pins);
    assert!(!status.success() && stderr.contains("is serving on"), "{stderr}");
    assert!(!left_behind, "the refused agent left {} behind", pins.display());
    assert_eq!(node_state(&c, 0), before);

    // The first agent still runs the node, and says so.
    agent.ready().unwrap();
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 3).unwrap();
}

#[test]
fn host_veth_must_be_a_pods_veth() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let agent = &c.agents[0];
    let node = &c.nodes[0].ns;
    // A veth pair with both ends on the node.
    node.ip(&["link", "add", "kvlocal0", "type", "veth", "peer", "name", "kvlocal1"]).unwrap();
    let maps_before = agent.map_ips().unwrap();
    let cidr = pod_cidr(0);
    let ip = format!("{}.9", cidr.rsplit_once('.').unwrap().0);
    for (link, why) in
        [("lo", "is not a veth"), ("eth0", "is the underlay device"), ("kvlocal0", "peer in the node's own namespace")]
    {
        let req = AddEndpoint { ip: ip.clone(), host_veth: link.into(), pod_mac: "02:00:00:00:00:09".into() };
        match agent.add_endpoint(&req) {
            Err(CallError::Refused { status, message }) => {
                assert_eq!(status, 422, "{link}: {message}");
                assert!(message.contains(why), "{link}: {message}");
            }
            other => panic!("{link}: {other:?}"),
        }
        assert_eq!(agent.map_ips().unwrap(), maps_before, "{link}: the map changed");
        let programs = agent.tcx_ingress(link).unwrap();
        assert!(!programs.contains(&"from_pod".to_string()), "{link} got from_pod: {programs:?}");
    }
    // The underlay still carries the cluster.
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 2).unwrap();
}

#[test]
fn an_oversized_body_is_413_and_changes_nothing() {
    let c = Cluster::new(1, 1, Mode::Vxlan).unwrap();
    let agent = &c.agents[0];
    let before = agent.map_ips().unwrap();
    let padding = "x".repeat(knet_agent::api::MAX_BODY + 1);
    let body = format!(r#"{{"ip":"10.244.0.9","host_veth":"{padding}","pod_mac":"02:00:00:00:00:09"}}"#);
    let (status, v) = agent.request("POST", "/v1/endpoints", Some(&body)).unwrap();
    assert_eq!(status, 413, "{v}");
    assert_eq!(agent.map_ips().unwrap(), before);
}

/// Lets this process hold `n` more descriptors (tests run as root).
fn allow_open_files(n: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write and read the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(limit.rlim_cur.max(n));
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn idle_connections_by_the_thousand_do_not_stop_a_cni_add() {
    let c = Cluster::new(1, 0, Mode::Vxlan).unwrap();
    let agent = &c.agents[0];
    let pid = agent.pid().unwrap();
    let net = KnetNetwork::new(&c.nodes[0].ns, &pod_cidr(0), agent.socket()).unwrap();
    // More idle connections than the agent may have descriptors (its limit
    // is this machine's, as ours): an agent that kept them all would stop
    // accepting anyone.
    let want = 15_000;
    allow_open_files(want as u64 + 1_000);
    let started = Instant::now();
    let mut idle = Vec::with_capacity(want);
    while idle.len() < want {
        match UnixStream::connect(agent.socket()) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {} refused by the kernel: {e}", idle.len()),
        }
    }
    eprintln!("{} idle connections opened in {:?}", idle.len(), started.elapsed());
    assert!(open_fds(pid) < 2_000, "the agent holds {} descriptors for idle clients", open_fds(pid));

    // The plugin's ADD (probe, endpoint) is answered while they are held.
    let pod = net.add_pod("pod").unwrap();
    assert_eq!(agent.request("GET", "/healthz", None).unwrap().0, 200);
    traffic::ping(&pod.pod.ns, c.nodes[0].address, 1).unwrap();
    drop(idle);
    let rss = wait::until("the agent to let go of the idle connections", Duration::from_secs(10), || {
        let rss = rss_kib(pid);
        (open_fds(pid) < 200 && rss < 100 * 1024).then_some(rss)
    })
    .unwrap_or_else(|e| panic!("{e:#}: {} descriptors, {} KiB resident", open_fds(pid), rss_kib(pid)));
    eprintln!("agent resident afterwards: {} MiB", rss / 1024);
}

/// umask 000 for the life of the guard (the agent inherits it).
struct Umask(libc::mode_t);
impl Umask {
    fn zero() -> Self {
        // SAFETY: umask only swaps the process's file mode mask.
        Umask(unsafe { libc::umask(0) })
    }
}
impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as above, restoring the mask we replaced.
        unsafe { libc::umask(self.0) };
    }
}

#[test]
fn an_unprivileged_user_never_connects_even_during_restarts_under_umask_000() {
    let mut c = Cluster::new(1, 0, Mode::Vxlan).unwrap();
    let socket = c.agents[0].socket().to_path_buf();
    let _umask = Umask::zero();
    // The test's own directory (made under umask 000) lets anyone reach
    // the socket's path: only the socket's own mode keeps them out.
    std::fs::set_permissions(socket.parent().unwrap(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let probe = env!("CARGO_BIN_EXE_knet-connect-probe");
    let prober = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", probe])
        .arg(&socket)
        .arg("20000")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(18);
    let mut restarts = 0;
    while Instant::now() < deadline {
        c.agents[0].restart().unwrap();
        restarts += 1;
    }
    let out = prober.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (connected, attempts) = text.trim().split_once(' ').unwrap();
    eprintln!("{restarts} restarts, {attempts} connection attempts as nobody");
    assert!(attempts.parse::<u64>().unwrap() > 1_000, "the prober hardly ran: {text}");
    assert_eq!(connected, "0", "an unprivileged user connected to the API socket ({connected} times)");
    // Root still can.
    assert_eq!(c.agents[0].request("GET", "/healthz", None).unwrap().0, 200);
}
