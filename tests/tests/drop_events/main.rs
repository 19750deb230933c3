//! Drop events: a packet the data path drops shows up in `knet-agent
//! monitor` with its reason and addresses; a flood of them is counted
//! exactly, its events held to the rate limit with the rest accounted for,
//! while other pods' traffic goes on. And bpftool names every program and
//! map. Needs root; run with `cargo xtask test`.

mod monitor;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use knet_agent::{config::Mode, monitor::event_counts};
use knet_common::{
    drop_event::{DropEventCounts, DROP_EVENT_LIMIT},
    map_names, program_names, Stat,
};
use knet_tests::{
    cluster::Cluster,
    frames::{self, Ipv4, PROTO_UDP},
    inject::Injector,
    traffic::{self, IperfOptions},
    wait, Agent, Pod,
};
use monitor::Monitor;

/// An address no pod has, sent from as a pod would forge it.
const SPOOFED: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 99);
const FLOOD: u64 = 100_000;

fn mac(text: &str) -> [u8; 6] {
    let mut out = [0; 6];
    for (o, part) in out.iter_mut().zip(text.split(':')) {
        *o = u8::from_str_radix(part, 16).expect("a MAC");
    }
    out
}

/// A UDP datagram from `pod` with a source address that is not its own,
/// to `to`, as its eth0 would send it to the gateway.
fn spoofed_frame(node: &knet_tests::Node, pod: &Pod, to: Ipv4Addr) -> Vec<u8> {
    let gateway = knet_tests::topology::link_mac(&node.ns, &pod.host_veth).expect("the host veth's MAC");
    let ip = Ipv4::new(SPOOFED, to, PROTO_UDP).packet(&frames::udp(40000, 5201, b"knet drop event"));
    frames::eth(mac(&gateway), mac(&pod.mac), frames::ETH_IPV4, &ip)
}

fn spoofed_counts(agent: &Agent) -> DropEventCounts {
    let counts = event_counts(agent.pin_dir()).expect("DROP_EVT_STATS is pinned");
    counts.into_iter().find(|(s, _)| *s == Stat::DropSpoofedSource).map(|(_, c)| c).expect("a drop reason")
}

#[test]
fn a_spoofed_packet_shows_up_in_monitor_with_its_reason_and_addresses() {
    let mut c = Cluster::new(1, 2, Mode::Vxlan).unwrap();
    let (node, agent, pod, other) = (&c.nodes[0], &c.agents[0], &c.pods[0][0], &c.pods[0][1]);
    let frame = spoofed_frame(node, pod, other.ip);
    let injector = Injector::open(&pod.ns, "eth0").unwrap();
    let ip = SPOOFED.to_string();

    let watching = Monitor::start(&node.ns, agent, &["--ip", &ip, "--count", "1", "--timeout", "20"]).unwrap();
    // A ring buffer has one reader position: a second monitor is refused.
    let second = Monitor::spawn(&node.ns, agent, &["--timeout", "5"]).unwrap();
    let (second_ok, second_err) = second.refusal(Duration::from_secs(10)).unwrap();
    assert!(!second_ok, "a second monitor ran: {second_err}");
    assert!(second_err.contains("another knet-agent monitor"), "a second monitor was not refused: {second_err}");

    injector.send(&frame).unwrap();
    let (ok, events) = watching.finish(Duration::from_secs(25)).unwrap();
    assert!(ok, "the monitor failed");
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.reason, Stat::DropSpoofedSource.name());
    assert_eq!(e.explanation, Stat::DropSpoofedSource.explain());
    assert_eq!((e.src, e.dst), (Some(SPOOFED), Some(other.ip)));
    assert_eq!((e.protocol.as_deref(), e.src_port, e.dst_port), (Some("udp"), Some(40000), Some(5201)));
    assert_eq!(e.interface.as_deref(), Some(pod.host_veth.as_str()));
    assert_eq!((e.hook.as_str(), e.direction.as_str()), (program_names::FROM_POD, "ingress"));
    assert_eq!(e.len as usize, frame.len());

    // With the agent stopped the data path still runs (pinned links), and
    // the monitor still reads its events from the pins.
    let veth = pod.host_veth.clone();
    c.agents[0].stop().unwrap();
    let (node, agent) = (&c.nodes[0], &c.agents[0]);
    let filters = ["--reason", "spoofed_source", "--interface", &veth, "--count", "1", "--timeout", "20"];
    let watching = Monitor::start(&node.ns, agent, &filters);
    let watching = watching.unwrap();
    injector.send(&frame).unwrap();
    let (ok, events) = watching.finish(Duration::from_secs(25)).unwrap();
    assert!(ok && events.len() == 1 && events[0].src == Some(SPOOFED), "agent stopped: {events:#?}");
}

#[test]
fn a_flood_of_spoofed_packets_is_counted_exactly_and_its_events_held_to_the_rate_limit() {
    let c = Cluster::new(1, 3, Mode::Vxlan).unwrap();
    let (node, agent) = (&c.nodes[0], &c.agents[0]);
    let (flooder, client, server) = (&c.pods[0][0], &c.pods[0][1], &c.pods[0][2]);
    let frame = spoofed_frame(node, flooder, server.ip);
    let injector = Injector::open(&flooder.ns, "eth0").unwrap();
    let iperf = IperfOptions { seconds: 5, ..Default::default() };

    let quiet = traffic::iperf3(&client.ns, &server.ns, server.ip, iperf).unwrap();

    let (drops_before, counts_before) = (agent.stat(Stat::DropSpoofedSource).unwrap().0, spoofed_counts(agent));
    let ip = SPOOFED.to_string();
    let watching = Monitor::start(&node.ns, agent, &["--ip", &ip, "--timeout", "120"]).unwrap();
    let (flooded, flood_time) = std::thread::scope(|s| {
        let during = s.spawn(|| traffic::iperf3(&client.ns, &server.ns, server.ip, iperf));
        let started = Instant::now();
        for i in 0..FLOOD {
            // A full backlog of the pod's veth refuses a frame before any
            // program sees it (ENOBUFS): send that one again, bounded.
            let sent = (0..1000).any(|_| injector.send(&frame).is_ok());
            assert!(sent, "frame {i} of the flood could not be sent");
            // Sent at once the flood would be over in a tenth of a second;
            // spread over some three seconds it meets the whole transfer
            // (load shaping, not a wait for anything).
            if i % (FLOOD / 100) == 0 {
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        let flood_time = started.elapsed();
        (during.join().expect("iperf3 thread").unwrap(), flood_time)
    });
    let counted = agent.stat(Stat::DropSpoofedSource).unwrap().0 - drops_before;
    let after = spoofed_counts(agent);
    let delta = DropEventCounts {
        sent: after.sent - counts_before.sent,
        rate_limited: after.rate_limited - counts_before.rate_limited,
        ring_full: after.ring_full - counts_before.ring_full,
    };
    let shown = wait::until("the monitor to show every event sent", Duration::from_secs(20), || {
        let n = watching.events().ok()?.len() as u64;
        (n >= delta.sent).then_some(n)
    })
    .unwrap();
    println!(
        "iperf3 {} -> {}: {:.2} Gbit/s alone, {:.2} Gbit/s during the flood of {FLOOD} spoofed packets ({:.2} s)",
        client.ip,
        server.ip,
        quiet.bits_per_second / 1e9,
        flooded.bits_per_second / 1e9,
        flood_time.as_secs_f64()
    );
    println!("events: {delta:?}, shown by the monitor: {shown}");

    assert_eq!(counted, FLOOD, "{} moved by {counted} for {FLOOD} spoofed packets", Stat::DropSpoofedSource.name());
    assert_eq!(delta.total(), FLOOD, "every drop's event is sent, rate limited or lost to a full ring: {delta:?}");
    assert_eq!(shown, delta.sent, "the monitor shows exactly the events sent");
    let cpus = aya::util::nr_cpus().unwrap() as u64;
    let most = cpus * DROP_EVENT_LIMIT.most_in(flood_time.as_nanos() as u64);
    assert!(delta.sent <= most, "{} events in {flood_time:?} on {cpus} CPUs: the limit allows {most}", delta.sent);
    assert!(delta.rate_limited > 0, "the flood was never rate limited: {delta:?}");
    assert!(flooded.bytes_received > 0 && quiet.bytes_received > 0);
}

/// `bpftool -j ARGS`, parsed.
fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = knet_tests::cmd::run("bpftool", &[&["-j"], args].concat()).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}: {out}"))
}

/// The programs attached by `agent`, by name, as `bpftool prog show`
/// gives them: found through its pinned links, since other agents may run
/// on the machine.
fn agent_programs(agent: &Agent) -> BTreeMap<String, serde_json::Value> {
    let mut programs = BTreeMap::new();
    for link in std::fs::read_dir(agent.pin_dir().join("links")).unwrap() {
        let path = link.unwrap().path();
        let info = bpftool(&["link", "show", "pinned", path.to_str().unwrap()]);
        let id = info["prog_id"].as_u64().unwrap_or_else(|| panic!("{path:?}: {info}"));
        let prog = bpftool(&["prog", "show", "id", &id.to_string()]);
        programs.insert(prog["name"].as_str().unwrap_or_default().to_string(), prog);
    }
    programs
}

#[test]
fn ebpf_log_keeps_the_diagnostics_which_are_otherwise_removed_by_the_verifier() {
    let mut c = Cluster::new(1, 1, Mode::Vxlan).unwrap();
    let size = |agent: &Agent| {
        let programs = agent_programs(agent);
        programs[program_names::FROM_POD]["bytes_xlated"].as_u64().expect("bytes_xlated")
    };
    let off = size(&c.agents[0]);
    assert!(!c.agents[0].log_text().contains("eBPF diagnostics on"));

    let config = c.agents[0].config_path().to_path_buf();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}ebpf_log = true\n")).unwrap();
    c.agents[0].restart().unwrap();
    let on = size(&c.agents[0]);
    assert!(c.agents[0].log_text().contains("eBPF diagnostics on"), "{}", c.agents[0].log_text());
    println!("from_pod: {off} bytes of instructions with ebpf_log off, {on} with it on");
    assert!(on > off, "the log calls are not in the program with ebpf_log on ({on} <= {off} bytes)");
    // Pods still reach the node with the diagnostics on.
    traffic::ping(&c.pods[0][0].ns, c.nodes[0].address, 1).unwrap();
}

#[test]
fn bpftool_lists_every_program_and_map_by_name_with_btf() {
    let c = Cluster::new(2, 1, Mode::Vxlan).unwrap();
    let programs = agent_programs(&c.agents[0]);
    let mut maps = BTreeMap::new();
    for (name, prog) in &programs {
        assert!(prog["btf_id"].as_u64().is_some(), "program {name} has no BTF: {prog}");
        for id in prog["map_ids"].as_array().into_iter().flatten() {
            let map = bpftool(&["map", "show", "id", &id.to_string()]);
            maps.insert(map["name"].as_str().unwrap_or_default().to_string(), map);
        }
    }
    for name in program_names::ALL {
        assert!(programs.contains_key(name), "bpftool does not list {name}: {:?}", programs.keys());
    }
    for name in map_names::ALL {
        let map = maps.get(name).unwrap_or_else(|| panic!("bpftool does not list map {name}: {:?}", maps.keys()));
        // A ring buffer has neither key nor value, so no type to describe.
        if map["type"] != "ringbuf" {
            assert!(map["btf_id"].as_u64().is_some(), "map {name} has no BTF: {map}");
        }
    }
}
