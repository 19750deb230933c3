//! A CNI result as the plugin reads it in a configuration's `prevResult`
//! (CHECK, and the IPAM delegate's conversion), and what knet does with
//! one: find the pod's address, write it in another version's format.

#![no_main]

use ipnet::IpNet;
use knet_agent::cni::spec::{parse_prev_result, parse_version, CniResult, SUPPORTED_VERSIONS};
use libfuzzer_sys::fuzz_target;

fn reparsed(result: &CniResult) -> CniResult {
    let text = serde_json::to_vec(result).expect("CNI types serialize");
    parse_prev_result(serde_json::from_slice(&text).expect("knet writes JSON")).expect("knet's result reads back")
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice(data) else { return };
    let Ok(result) = parse_prev_result(value) else { return };
    let _ = result.single_ipv4();
    let _ = result.pod_ipv4("eth0");
    // parse ∘ format is the identity, as given and in every version.
    assert_eq!(reparsed(&result), result);
    for v in SUPPORTED_VERSIONS {
        let converted = result.clone().for_version(v);
        assert_eq!(converted.clone().for_version(v), converted, "for_version({v}) twice");
        assert_eq!(reparsed(&converted), converted, "{v}");
        let version = parse_version(v).expect("a supported version parses");
        for ip in &converted.ips {
            let family = match ip.address {
                IpNet::V4(_) => "4",
                IpNet::V6(_) => "6",
            };
            assert_eq!(ip.version.as_deref(), (version < (1, 0, 0)).then_some(family));
        }
        if version < (1, 1, 0) {
            assert!(converted.routes.iter().all(|r| r.mtu.is_none()), "a route MTU in {v}");
        }
    }
});
