//! What the etcd source reads from etcd, in flannel's layout: a key and a
//! value (split at the first NUL byte), read as the network config, as a
//! subnet key and as a lease value, and the lease taken into the node set
//! beside this node's own, as the source does on every watch event.

#![no_main]

use knet_agent::{
    config::Mode,
    sources::etcd::flannel::{self, Me, RawLeases},
};
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "/coreos.com/network";

fuzz_target!(|data: &[u8]| {
    let (key, value) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    if let Ok(config) = flannel::parse_config(value) {
        assert!(config.subnet_len <= 30 && config.subnet_len >= config.network.prefix_len() + 2);
        assert!(config.network.contains(&config.subnet_min) && config.network.contains(&config.subnet_max));
        for free in config.free_subnets(&[], 8) {
            assert!(config.fits(free), "{free} handed out but does not fit {config:?}");
        }
    }
    let subnet = flannel::parse_subnet_key(PREFIX, key);
    if let Ok(net) = subnet {
        assert_eq!(net.trunc(), net);
        if !key.contains(&b'&') {
            assert_eq!(flannel::subnet_key(PREFIX, net).as_bytes(), key, "a key reads back as written");
        }
    }
    if let Ok(lease) = flannel::parse_lease(value) {
        assert_eq!(flannel::parse_lease(lease.to_json().as_bytes()), Ok(lease.clone()), "a lease reads back");
    }
    // Beside this node's own lease, the fuzzed one is taken whole or skipped.
    let me = Me { name: "node-0".into(), public_ip: "192.168.77.10".parse().unwrap(), mode: Mode::Vxlan, vni: 1 };
    let network = flannel::parse_config(br#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#).unwrap();
    let mine = "10.244.1.0/24".parse().unwrap();
    let own = flannel::own_lease(me.public_ip, me.mode, me.vni).to_json().into_bytes();
    let mut leases = RawLeases::new();
    leases.insert(flannel::subnet_key(PREFIX, mine), own);
    // The source reads etcd's keys as its store does: lossily as UTF-8
    // (etcd keys are bytes), so the key the set is judged by is that one.
    let fuzzed = String::from_utf8_lossy(key).into_owned();
    let subnet = flannel::parse_subnet_key(PREFIX, fuzzed.as_bytes());
    let ours = leases.contains_key(&fuzzed);
    leases.insert(fuzzed.clone(), value.to_vec());
    match flannel::node_set(PREFIX, &leases, &network, &me, mine) {
        Ok((set, skipped)) => {
            assert!(set.get("node-0").is_some(), "this node is always in its set");
            let taken = subnet.clone().ok().and_then(|net| set.get(&flannel::peer_name(net)));
            if let Some(peer) = taken {
                let attrs = flannel::parse_lease(value).expect("a taken lease parses");
                assert_eq!((peer.underlay_ip, Ok(peer.pod_cidr)), (attrs.public_ip, subnet));
                assert!(network.network.contains(&peer.pod_cidr));
                assert!(skipped.iter().all(|s| s.key != fuzzed));
            } else if !ours {
                assert!(skipped.iter().any(|s| s.key == fuzzed), "a lease left out without a reason");
            }
        }
        Err(e) => assert!(ours, "only a fuzzed value for this node's own key may spoil its set: {e}"),
    }
});
