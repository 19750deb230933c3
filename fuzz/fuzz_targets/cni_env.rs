//! The `CNI_*` environment of one plugin invocation: `NAME=value` lines,
//! then after a NUL byte the stdin. VERSION, which does no I/O, runs the
//! plugin's whole command.

#![no_main]

use std::collections::HashMap;

use knet_agent::cni::{
    commands,
    env::{self, valid_ifname, Command},
    spec::{code, version_of, LATEST_VERSION},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (vars, stdin) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(vars) = std::str::from_utf8(vars) else { return };
    let vars: HashMap<&str, &str> = vars.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |name: &str| vars.get(name).map(|v| v.to_string());
    let command = match env::command(&get) {
        Ok(c) => c,
        Err(e) => return assert_eq!(e.code, code::INVALID_ENV),
    };
    if command == Command::Version {
        let answer = commands::run(&get, stdin).expect("VERSION always answers");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("VERSION answers JSON");
        // It answers in the version errors are reported in.
        let version = version_of(stdin).unwrap_or_else(|| LATEST_VERSION.to_string());
        assert_eq!(answer["cniVersion"], version.as_str());
        return;
    }
    let args = match env::args(command, &get) {
        Ok(a) => a,
        Err(e) => return assert_eq!(e.code, code::INVALID_ENV),
    };
    assert_eq!(args.command, command);
    assert!(args.container_id.starts_with(|c: char| c.is_ascii_alphanumeric()));
    assert!(valid_ifname(&args.ifname));
    assert!(!args.path.is_empty() && args.path.iter().all(|p| !p.as_os_str().is_empty()));
    match &args.netns {
        Some(netns) => assert!(!netns.as_os_str().is_empty()),
        None => assert_eq!(command, Command::Del, "only DEL goes without a netns"),
    }
});
