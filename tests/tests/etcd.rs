//! The etcd node source against Debian's real etcd (`knet_tests::etcd`),
//! started inside the cluster's outside namespace, in flannel's own lease
//! layout. Namespaces are named `et-...`. Needs root; run with `cargo
//! xtask test`.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use ipnet::Ipv4Net;
use knet_agent::{
    config::Mode,
    mac::MacAddr,
    sources::etcd::{
        self as source,
        flannel::{self, Me},
        AcquireError,
    },
};
use knet_tests::{
    cluster::{self, Cluster, EtcdOptions, ETCD_NETWORK, ETCD_PREFIX},
    traffic, wait, Agent,
};

const WAIT: Duration = Duration::from_secs(30);

fn options(lease_ttl_seconds: u64) -> EtcdOptions {
    EtcdOptions { lease_ttl_seconds, network_config: ETCD_NETWORK, tls: false }
}

fn etcd(c: &Cluster) -> &knet_tests::etcd::Etcd {
    c.etcd.as_ref().expect("an etcd cluster")
}

/// The subnet leases in etcd: key → value.
fn leases(c: &Cluster) -> Vec<(String, String)> {
    etcd(c).list(&format!("{ETCD_PREFIX}/subnets/")).unwrap()
}

fn subnets(agent: &Agent) -> Vec<String> {
    agent.datapath().unwrap().node_subnets
}

/// Waits until agent `i`'s `NODE_SUBNETS` satisfies `check`.
fn until_subnets(c: &Cluster, i: usize, what: &str, check: impl Fn(&[String]) -> bool) {
    wait::until(what, WAIT, || check(&subnets(&c.agents[i])).then_some(()))
        .unwrap_or_else(|e| panic!("{e:#}\nagent {i}'s subnets: {:?}\nleases: {:?}", subnets(&c.agents[i]), leases(c)));
}

fn entry(cidr: Ipv4Net, via: Ipv4Addr) -> String {
    format!("{cidr} via {via}")
}

/// Ping and a TCP transfer between every two pods on different nodes.
fn full_connectivity(c: &Cluster) {
    for (i, from) in c.all_pods() {
        for (j, to) in c.all_pods() {
            if i != j {
                traffic::ping(&from.ns, to.ip, 1).unwrap_or_else(|e| panic!("ping {} -> {}: {e:#}", from.ip, to.ip));
                traffic::tcp_transfer(&from.ns, &to.ns, to.ip, 1 << 20)
                    .unwrap_or_else(|e| panic!("TCP {} -> {}: {e:#}", from.ip, to.ip));
            }
        }
    }
}

#[test]
fn et_three_agents_lease_their_subnets_from_one_etcd_with_full_pod_connectivity() {
    let c = Cluster::etcd(3, 1, Mode::Vxlan, options(60)).unwrap();
    let network: Ipv4Net = "10.244.0.0/16".parse().unwrap();
    let distinct: BTreeSet<Ipv4Net> = c.pod_cidrs.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "three nodes, three subnets: {:?}", c.pod_cidrs);
    // In etcd, in flannel's layout: one lease per node, as flanneld writes it.
    let written = leases(&c);
    assert_eq!(written.len(), 3, "{written:?}");
    for (i, cidr) in c.pod_cidrs.iter().enumerate() {
        assert!(network.contains(cidr) && cidr.prefix_len() == 24, "{cidr}");
        let key = flannel::subnet_key(ETCD_PREFIX, *cidr);
        let value = &written.iter().find(|(k, _)| *k == key).unwrap_or_else(|| panic!("no {key}: {written:?}")).1;
        let want = format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{}"}}}}"#,
            cluster::node_address(i),
            MacAddr::vtep_for(cluster::node_address(i))
        );
        assert_eq!(value, &want);
    }
    for (i, agent) in c.agents.iter().enumerate() {
        agent.wait_programmed(3, WAIT).unwrap();
        // Every peer's subnet goes to the peer's address; its MAC is the
        // one its lease publishes.
        let view = agent.nodes().unwrap();
        for (j, cidr) in c.pod_cidrs.iter().enumerate() {
            assert!(subnets(agent).iter().any(|s| s.starts_with(&entry(*cidr, cluster::node_address(j)))), "{i}: {j}");
            let node = view.nodes.iter().find(|n| n.pod_cidr == *cidr).unwrap_or_else(|| panic!("{view:?}"));
            assert_eq!(node.vtep_mac, Some(MacAddr::vtep_for(cluster::node_address(j))), "agent {i}'s view of {j}");
        }
    }
    full_connectivity(&c);
}

#[test]
fn et_agents_lease_over_tls_with_client_certificates_and_never_log_the_key() {
    let c = Cluster::etcd(2, 1, Mode::Vxlan, EtcdOptions { tls: true, ..options(60) }).unwrap();
    assert!(etcd(&c).endpoint().starts_with("https://"));
    for agent in &c.agents {
        agent.wait_programmed(2, WAIT).unwrap();
    }
    full_connectivity(&c);
    // The certificate is what let them in: without one etcd refuses.
    let tls = etcd(&c).tls().unwrap().clone();
    let anonymous = etcd(&c).with_options(Some(tls.client_options(false).unwrap()), |mut client| async move {
        client.get(ETCD_PREFIX, None).await?;
        Ok(())
    });
    assert!(anonymous.is_err(), "etcd served a client without a certificate");
    // No line of any agent's log carries the key's material.
    let key = std::fs::read_to_string(&tls.client_key).unwrap();
    let body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for (i, agent) in c.agents.iter().enumerate() {
        let log = agent.log_text();
        assert!(!log.contains("PRIVATE KEY") && body.iter().all(|l| !log.contains(l)), "agent {i} logged its key");
    }
}

/// Every agent's own attributes, for taking subnets without an agent.
fn racer(i: u8) -> Me {
    Me { name: format!("racer-{i}"), public_ip: Ipv4Addr::new(192, 168, 78, i), mode: Mode::Vxlan, vni: 1 }
}

#[test]
fn et_agents_racing_for_few_subnets_never_get_the_same_one() {
    let c = Cluster::etcd(2, 0, Mode::Vxlan, options(60)).unwrap();
    // Two real agents first: two subnets, never one.
    assert_ne!(c.pod_cidrs[0], c.pod_cidrs[1]);
    // Then the agent's own acquisition, six at once per round against a
    // network with three free subnets (flannel leaves the first out), from
    // one runtime so that all of them list before any of them writes.
    for round in 0..15 {
        let prefix = format!("/race-{round}/network");
        etcd(&c)
            .put(&format!("{prefix}/config"), r#"{"Network": "10.250.0.0/22", "Backend": {"Type": "vxlan"}}"#, None)
            .unwrap();
        let p = prefix.clone();
        let outcomes = etcd(&c)
            .with_client(move |client| async move {
                let network = flannel::parse_config(br#"{"Network": "10.250.0.0/22", "Backend": {"Type": "vxlan"}}"#)
                    .map_err(anyhow::Error::msg)?;
                let racers = (1..=6).map(|i| {
                    let (mut client, p, network) = (client.clone(), p.clone(), network.clone());
                    async move {
                        let me = racer(i);
                        let got = source::acquire(&mut client, &p, &network, &me, Duration::from_secs(60), None).await;
                        (me.public_ip, got)
                    }
                });
                Ok(futures::future::join_all(racers).await)
            })
            .unwrap();
        let won: Vec<(Ipv4Addr, Ipv4Net)> =
            outcomes.iter().filter_map(|(ip, got)| got.as_ref().ok().map(|h| (*ip, h.subnet))).collect();
        for (ip, got) in &outcomes {
            if let Err(e) = got {
                assert!(matches!(e, AcquireError::Exhausted(..) | AcquireError::Races), "{ip}: {e:#}");
            }
        }
        let distinct: BTreeSet<Ipv4Net> = won.iter().map(|w| w.1).collect();
        assert_eq!(distinct.len(), won.len(), "round {round}: two agents hold one subnet: {won:?}");
        assert_eq!(won.len(), 3, "round {round}: every free subnet is taken, once: {outcomes:?}");
        // And etcd agrees: each key is its winner's.
        let written = etcd(&c).list(&format!("{prefix}/subnets/")).unwrap();
        assert_eq!(written.len(), 3, "{written:?}");
        for (ip, subnet) in &won {
            let key = flannel::subnet_key(&prefix, *subnet);
            let value = written.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default();
            let attrs = flannel::parse_lease(value.as_bytes()).unwrap();
            assert_eq!(attrs.public_ip, *ip, "round {round}: {key} is not its winner's");
        }
    }
}

#[test]
fn et_an_agent_that_stops_renewing_loses_its_lease_and_the_others_withdraw_its_subnet() {
    let ttl = 4;
    let c = Cluster::etcd(3, 1, Mode::Vxlan, options(ttl)).unwrap();
    for agent in &c.agents {
        agent.wait_programmed(3, WAIT).unwrap();
    }
    let gone = c.pod_cidrs[2];
    let key = flannel::subnet_key(ETCD_PREFIX, gone);
    let pid = c.agents[2].pid().expect("agent 2 runs").to_string();
    knet_tests::cmd::run("kill", &["-STOP", &pid]).unwrap();
    // Resumed however the test ends, so its guard can stop it.
    struct Resume(String);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = knet_tests::cmd::run("kill", &["-CONT", &self.0]);
        }
    }
    let _resume = Resume(pid);
    // Renewed within its TTL until now, the lease lasts at most a TTL more
    // (etcd checks expiry every 500 ms).
    wait::until("agent 2's lease to expire", Duration::from_secs(ttl * 3), || {
        (!leases(&c).iter().any(|(k, _)| *k == key)).then_some(())
    })
    .unwrap();
    for i in 0..2 {
        until_subnets(&c, i, "agent 2's subnet withdrawn", |s| !s.iter().any(|e| e.starts_with(&gone.to_string())));
        assert!(c.agents[i].datapath().unwrap().tunnel_sources.iter().all(|ip| *ip != cluster::node_address(2)));
    }
    // The two that renew keep their leases, and their pods still talk.
    assert_eq!(leases(&c).len(), 2, "{:?}", leases(&c));
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 2).unwrap();
}

#[test]
fn et_etcd_stopped_for_30s_changes_nothing_in_forwarding_and_the_agents_converge_after() {
    let mut c = Cluster::etcd(2, 1, Mode::Vxlan, options(10)).unwrap();
    for agent in &c.agents {
        agent.wait_programmed(2, WAIT).unwrap();
    }
    let before: Vec<_> = c.agents.iter().map(|a| a.datapath().unwrap()).collect();
    // 30 s of pings at 5 a second, and 10 s more for the return.
    let steady = traffic::BackgroundPing::start_every(&c.pods[0][0].ns, c.pods[1][0].ip, 200, 200).unwrap();
    c.etcd.as_mut().unwrap().stop().unwrap();
    for agent in &c.agents {
        wait::until("the agent to notice etcd is gone", WAIT, || {
            agent.status().ok().filter(|s| !s.source.in_sync && s.source.error.is_some()).map(drop)
        })
        .unwrap();
    }
    // The outage itself: 30 s with etcd down, the maps checked throughout.
    let down = std::time::Instant::now();
    while down.elapsed() < Duration::from_secs(30) {
        for (i, agent) in c.agents.iter().enumerate() {
            assert_eq!(agent.datapath().unwrap(), before[i], "agent {i}'s maps changed while etcd was down");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    c.etcd.as_mut().unwrap().start_again().unwrap();
    // A node that joins once etcd is back reaches both agents' maps.
    let (cidr, via): (Ipv4Net, Ipv4Addr) = ("10.244.200.0/24".parse().unwrap(), Ipv4Addr::new(192, 168, 77, 40));
    let lease = flannel::own_lease(via, Mode::Vxlan, 1).to_json();
    etcd(&c).put(&flannel::subnet_key(ETCD_PREFIX, cidr), &lease, Some(60)).unwrap();
    for (i, agent) in c.agents.iter().enumerate() {
        until_subnets(&c, i, "the new node programmed", |s| s.iter().any(|e| e.starts_with(&entry(cidr, via))));
        agent.wait_programmed(3, WAIT).unwrap();
    }
    // Both agents kept their leases through the outage.
    let held: BTreeSet<String> = leases(&c).into_iter().map(|(k, _)| k).collect();
    for cidr in &c.pod_cidrs {
        assert!(held.contains(&flannel::subnet_key(ETCD_PREFIX, *cidr)), "{held:?}");
    }
    let (sent, received) = steady.finish().unwrap();
    assert_eq!(sent, received, "pings lost while etcd was down");
}

#[test]
fn et_a_restarted_agent_gets_its_own_subnet_back() {
    let mut c = Cluster::etcd(2, 1, Mode::Vxlan, options(60)).unwrap();
    let mine = c.pod_cidrs[1];
    c.agents[1].restart().unwrap();
    c.agents[1].wait_ready(WAIT).unwrap();
    assert_eq!(c.agents[1].node().unwrap().pod_cidr, mine, "the restarted agent leased another subnet");
    // One lease for the node, not a second beside the first.
    let written = leases(&c);
    let ours: Vec<_> =
        written.iter().filter(|(_, v)| v.contains(&format!("\"{}\"", cluster::node_address(1)))).collect();
    assert_eq!(ours.len(), 1, "{written:?}");
    assert_eq!(ours[0].0, flannel::subnet_key(ETCD_PREFIX, mine));
    traffic::ping(&c.pods[0][0].ns, c.pods[1][0].ip, 2).unwrap();
}

#[test]
fn et_a_lease_written_by_hand_as_flanneld_writes_it_is_taken_with_its_vtep_mac() {
    let c = Cluster::etcd(2, 0, Mode::Vxlan, options(60)).unwrap();
    let key = format!("{ETCD_PREFIX}/subnets/10.244.77.0-24");
    // Byte for byte what flanneld 0.26's vxlan backend writes.
    let value = r#"{"PublicIP":"192.168.77.20","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:2a:9c:11:4b:7f"}}"#;
    etcd(&c).put(&key, value, Some(120)).unwrap();
    // Hostile leases beside it, each skipped on its own.
    for (k, v) in [
        ("10.244.78.0-24", "{not json"),
        ("10.244.79.0-24", r#"{"PublicIP": 7, "BackendType": "vxlan"}"#),
        ("10.99.1.0-24", r#"{"PublicIP":"192.168.77.21","BackendType":"vxlan","BackendData":{"VNI":1}}"#),
        ("10.244.80.5-24", r#"{"PublicIP":"192.168.77.22","BackendType":"vxlan","BackendData":{"VNI":1}}"#),
        ("10.244.81.0-24", r#"{"PublicIP":"192.168.77.20","BackendType":"vxlan","BackendData":{"VNI":1}}"#),
    ] {
        etcd(&c).put(&format!("{ETCD_PREFIX}/subnets/{k}"), v, Some(120)).unwrap();
    }
    let cidr: Ipv4Net = "10.244.77.0/24".parse().unwrap();
    let via = Ipv4Addr::new(192, 168, 77, 20);
    // Two leases claim one PublicIP: neither is taken (etcd says not which
    // is true), and nothing else is held up.
    for (i, agent) in c.agents.iter().enumerate() {
        wait::until("the duplicate PublicIP skipped", WAIT, || {
            let out = !subnets(agent).iter().any(|e| e.starts_with("10.244.77.") || e.starts_with("10.244.81."));
            (out && agent.log_text().contains("is also leased")).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{:?}\n{}", subnets(agent), agent.log_text()));
        assert!(agent.status().unwrap().source.in_sync, "agent {i}: a hostile lease took the source out of step");
    }
    // Lifted, the true claim is taken.
    etcd(&c).delete(&format!("{ETCD_PREFIX}/subnets/10.244.81.0-24")).unwrap();
    for (i, agent) in c.agents.iter().enumerate() {
        until_subnets(&c, i, "the hand-written lease programmed", |s| {
            s.iter().any(|e| e.starts_with(&entry(cidr, via)))
        });
        let view = agent.wait_programmed(3, WAIT).unwrap();
        assert!(view.source.in_sync, "hostile leases do not take the source out of step");
        let nodes = agent.nodes().unwrap().nodes;
        let node = nodes.iter().find(|n| n.pod_cidr == cidr).unwrap_or_else(|| panic!("{nodes:?}"));
        assert_eq!(node.vtep_mac, Some("0e:2a:9c:11:4b:7f".parse().unwrap()));
        assert_eq!(node.underlay_ip, via);
        let dp = agent.datapath().unwrap();
        assert!(dp.tunnel_sources.contains(&via), "{dp:?}");
        assert!(!dp
            .node_subnets
            .iter()
            .any(|s| s.contains("10.244.78.") || s.contains("10.99.") || s.contains("10.244.80.")));
        // The operator's view says the same: `inspect nodes` lists it.
        let out = agent.cli(&["inspect", "nodes"]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("10.244.77.0/24"), "{text}");
        let log = agent.log_text();
        for reason in ["not a flannel lease", "outside the Network", "host bits"] {
            assert!(log.contains(reason), "agent {i}'s log does not say {reason:?}:\n{log}");
        }
    }
}
