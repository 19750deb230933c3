//! The `CNI_*` environment variables of one invocation, checked per command
//! (an error here is the spec's code 4, invalid environment variables).

use std::path::PathBuf;

use super::spec::{code, CniError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
}

impl Command {
    const ALL: [Command; 4] = [Command::Add, Command::Del, Command::Check, Command::Version];

    /// As `CNI_COMMAND` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
        }
    }
}

/// The variables an operation runs with. `netns` is optional only for DEL
/// (the sandbox may be gone); everything else is required by ADD, CHECK
/// and DEL alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniArgs {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub path: Vec<PathBuf>,
}

fn env_error(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_ENV, msg)
}

/// Reads `CNI_COMMAND` alone (VERSION needs nothing else).
pub fn command(get: &impl Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    let value = get("CNI_COMMAND").ok_or_else(|| env_error("CNI_COMMAND is not set"))?;
    Command::ALL
        .into_iter()
        .find(|c| c.name() == value)
        .ok_or_else(|| env_error(format!("unknown CNI_COMMAND {value:?} (knet knows ADD, DEL, CHECK, VERSION)")))
}

/// Reads and checks the variables of ADD, DEL or CHECK.
pub fn args(command: Command, get: &impl Fn(&str) -> Option<String>) -> Result<CniArgs, CniError> {
    let required = |name: &str| -> Result<String, CniError> {
        match get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(env_error(format!("{name} is not set"))),
        }
    };
    let container_id = required("CNI_CONTAINERID")?;
    if !valid_container_id(&container_id) {
        return Err(env_error(format!(
            "CNI_CONTAINERID {container_id:?} must be alphanumeric, with _ . - after the first character"
        )));
    }
    let netns = match get("CNI_NETNS").filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None if command == Command::Del => None,
        None => return Err(env_error("CNI_NETNS is not set")),
    };
    let ifname = required("CNI_IFNAME")?;
    if !valid_ifname(&ifname) {
        return Err(env_error(format!("CNI_IFNAME {ifname:?} is not a valid interface name")));
    }
    let path: Vec<PathBuf> = required("CNI_PATH")?.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
    if path.is_empty() {
        return Err(env_error("CNI_PATH names no directory"));
    }
    Ok(CniArgs { command, container_id, netns, ifname, path })
}

fn valid_container_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or white space.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k: &str| map.get(k).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/p"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn reads_a_full_environment() {
        let get = env(FULL);
        assert_eq!(command(&get).unwrap(), Command::Add);
        let a = args(Command::Add, &get).unwrap();
        assert_eq!(a.container_id, "abc123");
        assert_eq!(a.netns, Some(PathBuf::from("/run/netns/p")));
        assert_eq!(a.ifname, "eth0");
        assert_eq!(a.path, vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
    }

    #[test]
    fn unknown_or_missing_command_is_code_4() {
        assert_eq!(command(&env(&[("CNI_COMMAND", "GC")])).unwrap_err().code, 4);
        assert_eq!(command(&env(&[])).unwrap_err().code, 4);
    }

    #[test]
    fn missing_or_bad_variables_are_code_4_naming_the_variable() {
        for (drop, name) in [
            ("CNI_CONTAINERID", "CNI_CONTAINERID"),
            ("CNI_NETNS", "CNI_NETNS"),
            ("CNI_IFNAME", "CNI_IFNAME"),
            ("CNI_PATH", "CNI_PATH"),
        ] {
            let pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != drop).collect();
            let err = args(Command::Add, &env(&pairs)).unwrap_err();
            assert_eq!(err.code, 4);
            assert!(err.msg.contains(name), "{err}");
        }
        for (key, bad) in [
            ("CNI_IFNAME", "a-name-that-is-too-long"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_CONTAINERID", "-x"),
            ("CNI_CONTAINERID", "a b"),
            ("CNI_PATH", ":"),
        ] {
            let pairs: Vec<_> = FULL.iter().map(|(k, v)| (*k, if *k == key { bad } else { *v })).collect();
            assert_eq!(args(Command::Add, &env(&pairs)).unwrap_err().code, 4, "{key}={bad}");
        }
    }

    #[test]
    fn del_does_without_a_netns() {
        let pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != "CNI_NETNS").collect();
        assert_eq!(args(Command::Del, &env(&pairs)).unwrap().netns, None);
        assert!(args(Command::Check, &env(&pairs)).is_err());
    }
}
