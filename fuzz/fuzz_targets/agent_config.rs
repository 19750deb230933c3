//! The agent's TOML config file: the text as `knet-agent run --config`
//! reads it, then validated into the settings the daemon runs with.

#![no_main]

use knet_agent::config::{parse_pod_cidr, validate_node_name, Config, RawConfig, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = RawConfig::from_toml(text) else { return };
    // The DaemonSet's file has no node_name: it comes from the environment.
    let named = RawConfig { node_name: file.node_name.clone().or_else(|| Some("node-1".into())), ..file.clone() };
    for raw in [file, named] {
        let config = Config::try_from(raw.clone());
        // Flags that set nothing change nothing.
        let unflagged = Config::try_from(raw.overridden_by(RawConfig::default()));
        assert_eq!(config.as_ref().ok(), unflagged.as_ref().ok());
        let Ok(c) = config else { continue };
        validate_node_name(&c.node_name).expect("a taken node name is valid");
        match c.pod_cidr {
            Some(cidr) => assert_eq!(parse_pod_cidr(&cidr.to_string()).expect("a taken pod CIDR is valid"), cidr),
            None => assert!(matches!(c.source, Source::Kubernetes { .. }), "only the kubernetes source finds the CIDR"),
        }
        assert!(c.api_socket.is_absolute());
        assert!(c.bpf_pin_dir.starts_with("/sys/fs/bpf/"));
        assert!((1..1 << 24).contains(&c.vni));
        if let Some(f) = &c.cni_conf_file {
            assert!(f.is_absolute() && f.file_name().is_some());
        }
    }
});
