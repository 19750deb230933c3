use std::sync::Arc;

use super::*;
use crate::{cluster::NodeSpec, config::Mode, reconciler::SourceStatus, sources::SourceKind};

#[test]
fn every_stat_has_one_series_with_a_lower_case_label() {
    let mut seen = std::collections::BTreeSet::new();
    for stat in Stat::ALL {
        let (drop, label) = match stat_series(stat) {
            StatSeries::Verdict(v) => (false, v),
            StatSeries::Drop(r) => (true, r),
        };
        assert_eq!(drop, stat.is_drop(), "{}", stat.name());
        assert!(
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{label}"
        );
        let full = if drop { format!("drop_{label}") } else { label.to_string() };
        assert_eq!(full, stat.name());
        assert!(seen.insert((drop, label)), "{label} twice");
    }
    assert_eq!(stat_series(Stat::DropSpoofedSource), StatSeries::Drop("spoofed_source"));
    assert_eq!(stat_series(Stat::RedirectTunnel), StatSeries::Verdict("redirect_tunnel"));
}

#[test]
fn map_labels_are_the_names_in_lower_case() {
    let labels: Vec<String> = pinned_maps::EXPECTED.iter().map(|(n, _)| map_label(n)).collect();
    assert!(labels.contains(&"peer_stats".to_string()) && labels.contains(&"node_subnets".to_string()));
    assert!(labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')), "{labels:?}");
}

#[test]
fn cni_commands_and_status_classes() {
    assert_eq!(cni_command_label(b"ADD"), "add");
    assert_eq!(cni_command_label(b"DEL"), "del");
    assert_eq!(cni_command_label(b"CHECK"), "check");
    assert_eq!(cni_command_label(b"add"), "other", "the spec's commands are upper case");
    assert_eq!(cni_command_label(&[0xff; 300]), "other");
    assert_eq!(status_class(StatusCode::CREATED), "2xx");
    assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
    assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
}

fn view() -> ClusterView {
    let node = |name: &str, ip: [u8; 4], cidr: &str| NodeSpec {
        name: name.into(),
        underlay_ip: Ipv4Addr::from(ip),
        pod_cidr: cidr.parse().unwrap(),
        vtep_mac: None,
    };
    ClusterView {
        mode: Mode::Vxlan,
        underlay: Some("eth0".into()),
        underlay_mtu: Some(1500),
        route_mtu: Some(1450),
        nodes: Arc::new(vec![
            node("node-0", [192, 168, 77, 10], "10.244.0.0/24"),
            node("node-1", [192, 168, 77, 11], "10.244.1.0/24"),
        ]),
        local: None,
        source: SourceStatus {
            kind: SourceKind::File,
            generation: 1,
            error: None,
            in_sync: true,
            applying: false,
            writing: false,
            last_sync: Some(1_700_000_000),
            last_apply_ms: Some(2.0),
        },
    }
}

#[test]
fn a_scrape_renders_every_family_with_its_values() {
    let metrics = Metrics::new();
    metrics.reconcile_took(Duration::from_millis(3), true);
    metrics.cni_request("add", StatusCode::CREATED);
    metrics.cni_request("add", StatusCode::CREATED);
    let mut stats: Vec<(Stat, Counter)> = Stat::ALL.iter().map(|&s| (s, Counter::default())).collect();
    stats[0].1 = Counter { packets: 5, bytes: 500 };
    let spoofed = stats.iter_mut().find(|(s, _)| *s == Stat::DropSpoofedSource).unwrap();
    spoofed.1 = Counter { packets: 2, bytes: 84 };
    let peers = vec![(
        Ipv4Addr::new(192, 168, 77, 11),
        PeerCounters { tx: Counter { packets: 7, bytes: 700 }, rx: Counter { packets: 6, bytes: 600 } },
    )];
    let scrape = Scrape { stats, peers, map_entries: vec![("ENDPOINTS", 3)], endpoints: 3, view: view() };
    let text = metrics.render(&scrape).unwrap();
    for line in [
        "knet_build_info{version=\"0.1.0\"} 1",
        "knet_packets_total{verdict=\"redirect_local\"} 5",
        "knet_bytes_total{verdict=\"redirect_local\"} 500",
        "knet_packets_total{verdict=\"pass_arp\"} 0",
        "knet_drop_packets_total{reason=\"spoofed_source\"} 2",
        "knet_drop_bytes_total{reason=\"spoofed_source\"} 84",
        "knet_tunnel_packets_total{direction=\"tx\",node=\"node-1\",peer=\"192.168.77.11\"} 7",
        "knet_tunnel_bytes_total{direction=\"rx\",node=\"node-1\",peer=\"192.168.77.11\"} 600",
        "knet_bpf_map_entries{map=\"endpoints\"} 3",
        "knet_bpf_map_max_entries{map=\"endpoints\"} 16384",
        "knet_bpf_map_max_entries{map=\"peer_stats\"} 16384",
        "knet_endpoints 3",
        "knet_nodes 2",
        "knet_node_source_in_sync{source=\"file\"} 1",
        "knet_node_source_last_sync_timestamp_seconds{source=\"file\"} 1700000000",
        "knet_reconcile_duration_seconds_count{result=\"success\"} 1",
        "knet_reconcile_duration_seconds_bucket{result=\"success\",le=\"0.004\"} 1",
        "knet_cni_requests_total{command=\"add\",status=\"2xx\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("verdict=\"drop_"), "drops are under their own family");
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields[3] == "counter" {
            assert!(fields[2].ends_with("_total"), "{line}");
        }
    }
}
