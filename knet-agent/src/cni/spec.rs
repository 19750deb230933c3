//! The CNI specification's data as serde types: versions, error codes and
//! error JSON, the network configuration knet reads, and the result it
//! prints. Pure; no I/O.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::routes::PodRoute;

/// The spec versions whose configuration and result formats knet speaks.
/// 0.3.x and 0.4.0 results differ from 1.0.0 only by `ips[].version`, 1.0.0
/// from 1.1.0 (for knet) only by the routes' `mtu`; CHECK exists from 0.4.0
/// on.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version knet answers in when the caller's is unknown.
pub const LATEST_VERSION: &str = "1.1.0";

/// The link-local gateway every pod routes through (`knet_common`'s).
pub const POD_GATEWAY: Ipv4Addr = {
    let [a, b, c, d] = knet_common::node::POD_GATEWAY;
    Ipv4Addr::new(a, b, c, d)
};

pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_AGENT_SOCKET: &str = "/run/knet/agent.sock";

/// Error codes: the spec's well-known ones, then knet's own (>= 100).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// ADD for a container and interface that already has knet's veth.
    pub const ALREADY_EXISTS: u32 = 100;
    /// The agent answered and refused (bad IP, conflict, ...).
    pub const AGENT_REFUSED: u32 = 101;
    /// CHECK found the pod's wiring not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
    /// A netlink operation failed.
    pub const NETLINK: u32 = 103;
    /// The IPAM plugin's answer is unusable (no IPv4 address, not JSON...).
    pub const IPAM_RESULT: u32 = 104;
    /// The node holds as many pods as its endpoint map can (the agent
    /// answered 507).
    pub const NODE_FULL: u32 = 105;
}

/// A CNI error: printed on stdout as `{"cniVersion","code","msg","details"}`
/// with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// An error of another plugin (IPAM), kept with its own code.
    pub fn from_plugin(plugin: &str, e: ErrorJson) -> Self {
        CniError { code: e.code, msg: format!("{plugin}: {}", e.msg), details: e.details }
    }

    pub fn to_json(&self, version: &str) -> ErrorJson {
        ErrorJson {
            cni_version: version.to_string(),
            code: self.code,
            msg: self.msg.clone(),
            details: self.details.clone(),
        }
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorJson {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// `a.b.c` as numbers, for ordering versions.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let out = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(out)
}

pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// CHECK came with 0.4.0.
pub fn supports_check(version: &str) -> bool {
    parse_version(version).is_some_and(|v| v >= (0, 4, 0))
}

/// The answer to VERSION.
#[derive(Debug, Serialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    pub fn new(requested: Option<&str>) -> Self {
        let cni_version = requested.filter(|v| is_supported(v)).unwrap_or(LATEST_VERSION);
        VersionInfo {
            cni_version: cni_version.to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The network configuration as it arrives on stdin. Keys knet does not
/// know (`runtimeConfig`, `args`, `capabilities`, other plugins' settings)
/// are ignored, as the reference plugins do.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetConf {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    agent_socket: Option<PathBuf>,
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(default)]
    dns: Dns,
    #[serde(default)]
    prev_result: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawIpam {
    #[serde(rename = "type")]
    plugin_type: String,
}

/// A validated network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub mtu: u32,
    pub agent_socket: PathBuf,
    /// The IPAM plugin's binary name (`host-local`).
    pub ipam_type: String,
    pub dns: Dns,
    /// As given: read (and refused if malformed) only by the commands that
    /// need it, so a damaged cache never stops a DEL.
    pub prev_result: Option<Value>,
}

impl NetConf {
    /// The previous result, for the commands that need one (CHECK).
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse_prev_result(v.clone()).map(Some),
        }
    }
}

/// The `cniVersion` of a configuration, if it has one: what errors are
/// reported in, also when the rest does not parse.
pub fn version_of(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    let s = v.get("cniVersion")?.as_str()?;
    is_supported(s).then(|| s.to_string())
}

/// Parses and checks a configuration: malformed JSON is a decode error (6),
/// an unsupported `cniVersion` an incompatible version (1), anything else
/// wrong an invalid network configuration (7).
pub fn parse_netconf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(code::DECODE, "the network configuration on stdin is not valid JSON").with_details(e.to_string())
    })?;
    let Some(obj) = value.as_object() else {
        return Err(CniError::new(code::DECODE, "the network configuration on stdin is not a JSON object"));
    };
    match obj.get("cniVersion") {
        Some(Value::String(v)) if is_supported(v) => {}
        Some(Value::String(v)) => {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {v:?} is not supported; knet supports {}", SUPPORTED_VERSIONS.join(", ")),
            ))
        }
        Some(other) => {
            return Err(CniError::new(code::INVALID_CONFIG, format!("cniVersion must be a string, not {other}")))
        }
        None => return Err(CniError::new(code::INVALID_CONFIG, "the network configuration has no cniVersion")),
    }
    let raw: RawNetConf = serde_json::from_value(value).map_err(|e| {
        CniError::new(code::INVALID_CONFIG, "invalid network configuration").with_details(e.to_string())
    })?;
    validate(raw)
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

fn validate(raw: RawNetConf) -> Result<NetConf, CniError> {
    if !valid_network_name(&raw.name) {
        return Err(invalid(format!("network name {:?} must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", raw.name)));
    }
    if raw.plugin_type.is_empty() {
        return Err(invalid("type is empty"));
    }
    let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
    if !(68..=65535).contains(&mtu) {
        return Err(invalid(format!("mtu {mtu} is outside 68..=65535")));
    }
    let agent_socket = raw.agent_socket.unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET));
    if !agent_socket.is_absolute() {
        return Err(invalid(format!("agentSocket {} is not an absolute path", agent_socket.display())));
    }
    let Some(ipam) = raw.ipam else {
        return Err(invalid("knet needs an ipam section (e.g. {\"type\": \"host-local\", ...})"));
    };
    if ipam.plugin_type.is_empty()
        || ipam.plugin_type.contains('/')
        || ipam.plugin_type == "."
        || ipam.plugin_type == ".."
    {
        return Err(invalid(format!("ipam.type {:?} is not a plugin name", ipam.plugin_type)));
    }
    Ok(NetConf {
        cni_version: raw.cni_version,
        name: raw.name,
        mtu,
        agent_socket,
        ipam_type: ipam.plugin_type,
        dns: raw.dns,
        prev_result: raw.prev_result,
    })
}

/// A configuration's `prevResult`: a decode error (6) if it is not a CNI
/// result.
pub fn parse_prev_result(value: Value) -> Result<CniResult, CniError> {
    serde_json::from_value(value)
        .map_err(|e| CniError::new(code::DECODE, "prevResult is not a CNI result").with_details(e.to_string()))
}

/// The spec's rule for network names.
fn valid_network_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// A CNI result (the ADD output, `prevResult`, an IPAM plugin's answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"`, before 1.0.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// The route's MTU: a field of spec 1.1.0, left out of results of older
    /// versions (their readers, libcni 1.1 among them, drop it anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

impl CniResult {
    /// The one IPv4 address an IPAM plugin gave (knet's data path is
    /// IPv4-only), and the routes it asked for.
    pub fn single_ipv4(&self) -> Result<Ipv4Net, CniError> {
        let v4: Vec<Ipv4Net> = self
            .ips
            .iter()
            .filter_map(|ip| match ip.address {
                IpNet::V4(n) => Some(n),
                IpNet::V6(_) => None,
            })
            .collect();
        let v6 = self.ips.len() - v4.len();
        match (v4.as_slice(), v6) {
            ([one], 0) => Ok(*one),
            ([], _) => Err(CniError::new(code::IPAM_RESULT, "the IPAM plugin returned no IPv4 address")),
            ([_], _) => Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "the IPAM plugin returned an IPv6 address; knet is IPv4-only (ipam ranges)",
            )),
            _ => Err(CniError::new(
                code::IPAM_RESULT,
                format!("the IPAM plugin returned {} IPv4 addresses; knet gives a pod one", v4.len()),
            )),
        }
    }

    /// The address of the interface named `ifname` inside a sandbox, as a
    /// previous ADD reported it.
    pub fn pod_ipv4(&self, ifname: &str) -> Option<Ipv4Net> {
        self.ips.iter().find_map(|ip| {
            let iface = self.interfaces.get(ip.interface?)?;
            match ip.address {
                IpNet::V4(n) if iface.name == ifname && iface.sandbox.is_some() => Some(n),
                _ => None,
            }
        })
    }

    /// The same result in the format of `version`: before 1.0.0 every
    /// `ips` entry names its IP version; before 1.1.0 routes have no MTU.
    pub fn for_version(mut self, version: &str) -> Self {
        let v = parse_version(version);
        let before_1_0 = v.is_some_and(|v| v < (1, 0, 0));
        for ip in &mut self.ips {
            ip.version = before_1_0.then(|| match ip.address {
                IpNet::V4(_) => "4".to_string(),
                IpNet::V6(_) => "6".to_string(),
            });
        }
        if v.is_some_and(|v| v < (1, 1, 0)) {
            for route in &mut self.routes {
                route.mtu = None;
            }
        }
        self.cni_version = version.to_string();
        self
    }
}

/// What ADD reports: the host veth, the pod's interface in its sandbox, the
/// pod's /32 with the link-local gateway, the pod's routes and DNS.
pub struct AddOutcome<'a> {
    pub version: &'a str,
    pub host_veth: &'a str,
    pub host_mac: &'a str,
    pub ifname: &'a str,
    pub pod_mac: &'a str,
    pub sandbox: &'a str,
    pub ip: Ipv4Addr,
    pub routes: &'a [PodRoute],
    pub dns: Dns,
}

pub fn add_result(o: AddOutcome<'_>) -> CniResult {
    CniResult {
        cni_version: o.version.to_string(),
        interfaces: vec![
            Interface { name: o.host_veth.to_string(), mac: o.host_mac.to_string(), sandbox: None },
            Interface { name: o.ifname.to_string(), mac: o.pod_mac.to_string(), sandbox: Some(o.sandbox.to_string()) },
        ],
        ips: vec![IpConfig {
            version: None,
            address: IpNet::V4(Ipv4Net::new(o.ip, 32).expect("/32 is a valid prefix")),
            gateway: Some(IpAddr::V4(POD_GATEWAY)),
            interface: Some(1),
        }],
        routes: o
            .routes
            .iter()
            .map(|r| Route { dst: IpNet::V4(r.dst), gw: Some(IpAddr::V4(POD_GATEWAY)), mtu: r.mtu })
            .collect(),
        dns: o.dns,
    }
    .for_version(o.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"knet","type":"knet","ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.244.0.0/24"}}]]}}{extra}}}"#
        )
    }

    #[test]
    fn parses_a_minimal_config_with_defaults() {
        let c = parse_netconf(conf("").as_bytes()).unwrap();
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.name, "knet");
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.agent_socket, PathBuf::from("/run/knet/agent.sock"));
        assert_eq!(c.ipam_type, "host-local");
        assert!(c.prev_result.is_none());
    }

    #[test]
    fn reads_mtu_socket_and_ignores_unknown_keys() {
        let c = parse_netconf(
            conf(r#","mtu":1400,"agentSocket":"/tmp/a.sock","runtimeConfig":{"x":1},"args":{}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(c.mtu, 1400);
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/a.sock"));
    }

    #[test]
    fn error_codes_follow_the_spec() {
        let cases: &[(&[u8], u32)] = &[
            (b"{not json", code::DECODE),
            (b"[1,2]", code::DECODE),
            (
                br#"{"cniVersion":"0.2.0","name":"n","type":"knet","ipam":{"type":"host-local"}}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (
                br#"{"cniVersion":"9.9.9","name":"n","type":"knet"}"#,
                code::INCOMPATIBLE_VERSION,
            ),
            (
                br#"{"name":"n","type":"knet","ipam":{"type":"host-local"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"knet"}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"-bad","type":"knet","ipam":{"type":"host-local"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"knet","mtu":"big","ipam":{"type":"host-local"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"knet","mtu":20,"ipam":{"type":"host-local"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"knet","agentSocket":"rel.sock","ipam":{"type":"host-local"}}"#,
                code::INVALID_CONFIG,
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","type":"knet","ipam":{"type":"../x"}}"#,
                code::INVALID_CONFIG,
            ),
        ];
        for (input, want) in cases {
            let err = parse_netconf(input).unwrap_err();
            assert_eq!(err.code, *want, "{}: {err}", String::from_utf8_lossy(input));
            assert!(!err.msg.is_empty());
        }
    }

    #[test]
    fn a_malformed_prev_result_is_refused_only_where_it_is_read() {
        let conf = parse_netconf(
            br#"{"cniVersion":"1.0.0","name":"n","type":"knet","ipam":{"type":"host-local"},"prevResult":{"ips":"x"}}"#,
        )
        .expect("DEL needs no prevResult: the configuration itself is fine");
        assert_eq!(conf.prev_result().unwrap_err().code, code::DECODE);
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(code::TRY_AGAIN_LATER, "agent down").with_details("ENOENT");
        let v = serde_json::to_value(e.to_json("0.4.0")).unwrap();
        assert_eq!(v, serde_json::json!({"cniVersion":"0.4.0","code":11,"msg":"agent down","details":"ENOENT"}));
        let plugin_err: ErrorJson =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","code":7,"msg":"no range"}"#).unwrap();
        let e = CniError::from_plugin("host-local", plugin_err);
        assert_eq!(e.code, 7);
        assert_eq!(e.msg, "host-local: no range");
    }

    #[test]
    fn versions() {
        assert!(is_supported("1.1.0") && is_supported("1.0.0") && is_supported("0.3.1"));
        assert!(!is_supported("0.2.0") && !is_supported("1.2.0"));
        assert!(supports_check("0.4.0") && supports_check("1.0.0") && supports_check("1.1.0"));
        assert!(!supports_check("0.3.1"));
        assert_eq!(parse_version("1.0"), None);
        assert_eq!(version_of(br#"{"cniVersion":"0.4.0"}"#).as_deref(), Some("0.4.0"));
        assert_eq!(version_of(br#"{"cniVersion":"7"}"#), None);
        let v = serde_json::to_value(VersionInfo::new(Some("0.3.1"))).unwrap();
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["supportedVersions"], serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
        assert_eq!(VersionInfo::new(Some("2.0.0")).cni_version, "1.1.0");
        assert_eq!(VersionInfo::new(Some("1.1.0")).cni_version, "1.1.0");
    }

    fn outcome(version: &str) -> CniResult {
        add_result(AddOutcome {
            version,
            host_veth: "knet0123456789a",
            host_mac: "02:00:00:00:00:01",
            ifname: "eth0",
            pod_mac: "02:00:00:00:00:02",
            sandbox: "/run/netns/p",
            ip: Ipv4Addr::new(10, 244, 0, 5),
            routes: &[PodRoute { dst: Ipv4Net::default(), mtu: Some(1450) }],
            dns: Dns::default(),
        })
    }

    #[test]
    fn add_result_is_spec_json() {
        let v = serde_json::to_value(outcome("1.1.0")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "knet0123456789a", "mac": "02:00:00:00:00:01"},
                    {"name": "eth0", "mac": "02:00:00:00:00:02", "sandbox": "/run/netns/p"}
                ],
                "ips": [{"address": "10.244.0.5/32", "gateway": "169.254.1.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1", "mtu": 1450}],
                "dns": {}
            })
        );
        // Before 1.1.0 a route has no MTU; the rest is the same.
        let v1_0 = serde_json::to_value(outcome("1.0.0")).unwrap();
        assert_eq!(v1_0["routes"], serde_json::json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]));
        assert_eq!(
            (&v1_0["cniVersion"], &v1_0["ips"], &v1_0["interfaces"]),
            (&"1.0.0".into(), &v["ips"], &v["interfaces"])
        );
        // Older versions carry ips[].version.
        let old = serde_json::to_value(outcome("0.4.0")).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.4.0");
        assert!(old["routes"][0].get("mtu").is_none());
    }

    #[test]
    fn results_round_trip_and_find_the_pod_address() {
        let r = outcome("1.1.0");
        let text = serde_json::to_string(&r).unwrap();
        let back: CniResult = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.pod_ipv4("eth0"), Some("10.244.0.5/32".parse().unwrap()));
        assert_eq!(back.pod_ipv4("eth1"), None);
        // The host veth's entry has no sandbox: never the pod's address.
        assert_eq!(back.pod_ipv4("knet0123456789a"), None);
    }

    #[test]
    fn picks_the_single_ipv4_of_an_ipam_answer() {
        let host_local: CniResult = serde_json::from_str(
            r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.244.0.2/24","gateway":"10.244.0.1"}],"dns":{}}"#,
        )
        .unwrap();
        assert_eq!(host_local.single_ipv4().unwrap(), "10.244.0.2/24".parse().unwrap());
        let none: CniResult = serde_json::from_str(r#"{"cniVersion":"1.0.0","ips":[]}"#).unwrap();
        assert_eq!(none.single_ipv4().unwrap_err().code, code::IPAM_RESULT);
        let dual: CniResult = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.244.0.2/24"},{"address":"fd00::2/64"}]}"#,
        )
        .unwrap();
        assert_eq!(dual.single_ipv4().unwrap_err().code, code::UNSUPPORTED_FIELD);
        let two: CniResult = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","ips":[{"address":"10.244.0.2/24"},{"address":"10.244.0.3/24"}]}"#,
        )
        .unwrap();
        assert_eq!(two.single_ipv4().unwrap_err().code, code::IPAM_RESULT);
    }
}
