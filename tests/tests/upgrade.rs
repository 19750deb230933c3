//! A rolling upgrade as a DaemonSet does it: the node's agent is stopped
//! and one of another build (its eBPF programs built anew) takes over the
//! pinned maps and links, while traffic crosses the node. Needs root; run
//! with `cargo xtask test`, which builds the second eBPF object.

use std::{path::PathBuf, time::Duration};

use knet_agent::config::Mode;
use knet_tests::{
    cluster::Cluster,
    traffic::{self, IperfOptions},
};

/// The other build's object (`KNET_EBPF_UPGRADE_OBJECT`, set by xtask).
fn upgrade_object() -> PathBuf {
    let path = PathBuf::from(std::env::var_os("KNET_EBPF_UPGRADE_OBJECT").expect("run with `cargo xtask test`"));
    assert!(path.exists(), "no upgrade object at {}", path.display());
    path
}

#[test]
fn a_rolling_upgrade_to_another_build_loses_no_ping_and_stalls_no_stream() {
    let object = upgrade_object();
    let mut c = Cluster::kubernetes(2, 1, Mode::Vxlan).unwrap();
    let (p0, p1) = (&c.pods[0][0], &c.pods[1][0]);
    traffic::ping(&p0.ns, p1.ip, 1).unwrap();
    let before = c.agents[0].tcx_ingress_ids("eth0").unwrap();
    let veth = p0.host_veth.clone();
    let before_pod = c.agents[0].tcx_ingress_ids(&veth).unwrap();

    // Pings every 2 ms and an iperf3 stream, both across node 0, for the
    // whole upgrade.
    let ping = traffic::BackgroundPing::start_every(&p1.ns, p0.ip, 3000, 2).unwrap();
    let (stream, restarted) = std::thread::scope(|s| {
        let iperf =
            s.spawn(|| traffic::iperf3(&p1.ns, &p0.ns, p0.ip, IperfOptions { seconds: 6, ..Default::default() }));
        std::thread::sleep(Duration::from_secs(2));
        let config = c.agents[0].config_path().to_path_buf();
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{text}ebpf_object = {:?}\n", object.display().to_string())).unwrap();
        let restarted = c.agents[0].restart().and_then(|()| c.agents[0].wait_ready(Duration::from_secs(30)));
        (iperf.join().unwrap(), restarted)
    });
    restarted.unwrap();
    let stream = stream.unwrap();
    let (sent, received) = ping.finish().unwrap();

    assert!(sent >= 2000, "only {sent} pings were sent");
    assert_eq!(sent, received, "pings were lost during the upgrade");
    assert!(stream.intervals.len() >= 5, "{:?}", stream.intervals);
    for (second, bps) in stream.intervals.iter().enumerate() {
        assert!(*bps > 0.0, "iperf3 stalled in second {second}: {:?}", stream.intervals);
    }
    // The other build's programs now run, one per hook, in the same links.
    let after = c.agents[0].tcx_ingress_ids("eth0").unwrap();
    let after_pod = c.agents[0].tcx_ingress_ids(&veth).unwrap();
    assert_eq!((after.len(), after_pod.len()), (1, 1), "{after:?} {after_pod:?}");
    assert_ne!(after[0].0, before[0].0, "the program on eth0 was not replaced");
    assert_ne!(after[0].1, before[0].1, "the new build's from_netdev has the same code: {after:?}");
    assert_ne!(after_pod[0].1, before_pod[0].1, "the new build's from_pod has the same code");
    traffic::ping(&p0.ns, p1.ip, 2).unwrap();
}
