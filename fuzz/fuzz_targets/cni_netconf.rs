//! The network configuration on the CNI plugin's stdin: `version_of` (what
//! errors are reported in) and `parse_netconf`, then `at_version`, which
//! hands the same configuration to the IPAM plugin at another version.

#![no_main]

use knet_agent::cni::{
    ipam::at_version,
    spec::{code, is_supported, parse_netconf, version_of, SUPPORTED_VERSIONS},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let version = version_of(data);
    let conf = match parse_netconf(data) {
        Ok(conf) => conf,
        Err(e) => {
            assert!(matches!(e.code, code::DECODE | code::INCOMPATIBLE_VERSION | code::INVALID_CONFIG), "{e}");
            return;
        }
    };
    // Errors of a configuration that parses are reported in its version.
    assert_eq!(version.as_deref(), Some(conf.cni_version.as_str()));
    assert!(is_supported(&conf.cni_version));
    assert!((68..=65535).contains(&conf.mtu));
    assert!(conf.agent_socket.is_absolute());
    assert!(!conf.ipam_type.is_empty() && !conf.ipam_type.contains('/'));
    // At any version knet speaks, the delegated configuration is the same
    // configuration, prevResult in that version's format.
    for v in SUPPORTED_VERSIONS {
        let delegated = at_version(data, v).expect("a configuration knet took converts");
        let back = parse_netconf(&delegated).expect("a converted configuration parses");
        assert_eq!(back.cni_version, *v);
        assert_eq!((&back.name, back.mtu, &back.agent_socket), (&conf.name, conf.mtu, &conf.agent_socket));
        assert_eq!((&back.ipam_type, &back.dns), (&conf.ipam_type, &conf.dns));
        assert_eq!(back.prev_result, conf.prev_result.clone().map(|r| r.for_version(v)));
    }
});
