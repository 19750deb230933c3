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
    // configuration, prevResult in that version's format; only a damaged
    // prevResult (which DEL must still take) keeps it from converting.
    let prev = conf.prev_result();
    for v in SUPPORTED_VERSIONS {
        let delegated = match at_version(data, v) {
            Ok(d) => d,
            Err(e) => {
                assert!(prev.is_err(), "a configuration with a good prevResult does not convert: {e}");
                assert_eq!(e.code, code::DECODE);
                continue;
            }
        };
        let back = parse_netconf(&delegated).expect("a converted configuration parses");
        assert_eq!(back.cni_version, *v);
        assert_eq!((&back.name, back.mtu, &back.agent_socket), (&conf.name, conf.mtu, &conf.agent_socket));
        assert_eq!((&back.ipam_type, &back.dns), (&conf.ipam_type, &conf.dns));
        match &prev {
            Ok(p) => assert_eq!(back.prev_result().ok(), Some(p.clone().map(|r| r.for_version(v)))),
            Err(_) => assert!(back.prev_result().is_err()),
        }
    }
});
