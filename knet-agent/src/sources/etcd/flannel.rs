//! flannel's etcd layout as plain values, read the way flanneld reads it
//! (`pkg/subnet/config.go`, `pkg/subnet/etcd/registry.go`,
//! `pkg/backend/vxlan`): the network config at `<prefix>/config`, one lease
//! per node at `<prefix>/subnets/<a.b.c.d>-<len>`. No I/O here: the source
//! feeds etcd's keys and values in, the fuzz target feeds anything in.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    cluster::{NodeSet, NodeSpec},
    config::Mode,
    mac::MacAddr,
};

/// flanneld's subnet TTL (`subnetTTL` in `local_manager.go`).
pub const FLANNEL_LEASE_TTL_SECONDS: u64 = 24 * 60 * 60;

/// flannel's vxlan VNI when its Backend names none.
const FLANNEL_DEFAULT_VNI: u32 = 1;

/// The backend type of a knet node in each mode, as flannel spells it:
/// knet's native mode is flannel's host-gw (direct routes on one L2).
pub fn backend_type(mode: Mode) -> &'static str {
    match mode {
        Mode::Vxlan => "vxlan",
        Mode::Native => "host-gw",
    }
}

/// `<prefix>/config`, validated as flannel's `CheckNetworkConfig` does
/// (IPv4 part; flannel fills in SubnetLen, SubnetMin and SubnetMax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    /// `Backend.Type`; flannel's default is "udp".
    pub backend_type: String,
    /// `Backend.VNI` of a vxlan backend (flannel's default 1).
    pub vni: u32,
}

#[derive(Deserialize)]
struct RawNetworkConfig {
    #[serde(rename = "Network")]
    network: Option<String>,
    #[serde(rename = "SubnetLen", default)]
    subnet_len: u32,
    #[serde(rename = "SubnetMin")]
    subnet_min: Option<String>,
    #[serde(rename = "SubnetMax")]
    subnet_max: Option<String>,
    #[serde(rename = "Backend")]
    backend: Option<RawBackend>,
}

#[derive(Deserialize)]
struct RawBackend {
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(rename = "VNI", default)]
    vni: Option<u32>,
}

fn v4(text: &str, what: &str) -> Result<Ipv4Addr, String> {
    text.parse().map_err(|_| format!("{what} {text:?} is not an IPv4 address"))
}

/// Parses and checks the network config.
pub fn parse_config(value: &[u8]) -> Result<NetworkConfig, String> {
    let raw: RawNetworkConfig =
        serde_json::from_slice(value).map_err(|e| format!("the network config is not flannel's JSON: {e}"))?;
    let text = raw.network.ok_or("the network config has no Network")?;
    let network: Ipv4Net =
        text.parse().map_err(|_| format!("Network {text:?} is not an IPv4 CIDR (e.g. 10.244.0.0/16)"))?;
    // Go's net.ParseCIDR masks the address; so does flannel.
    let network = network.trunc();
    let subnet_len = match raw.subnet_len {
        0 if network.prefix_len() > 28 => return Err(format!("Network {network} is too small (at most /28)")),
        0 if network.prefix_len() <= 22 => 24,
        0 => network.prefix_len() + 2,
        n if n > 30 => return Err(format!("SubnetLen {n} must be at most 30")),
        n if n < u32::from(network.prefix_len()) + 2 => {
            return Err(format!("SubnetLen {n}: Network {network} must hold at least four subnets"))
        }
        n => n as u8,
    };
    let size = 1u32 << (32 - subnet_len);
    let first = u32::from(network.network());
    // In u64: the last subnet of 255.255.255.0/24 ends at 2^32.
    let end = u64::from(u32::from(network.broadcast())) + 1;
    let bound = |given: Option<String>, what: &str, default: u32| -> Result<Ipv4Addr, String> {
        let Some(text) = given.filter(|t| !t.is_empty()) else { return Ok(Ipv4Addr::from(default)) };
        let ip = v4(&text, what)?;
        if !network.contains(&ip) {
            return Err(format!("{what} {ip} is not in Network {network}"));
        }
        if u32::from(ip) % size != 0 {
            return Err(format!("{what} {ip} is not on a /{subnet_len} boundary"));
        }
        Ok(ip)
    };
    // flannel leaves the Network's first subnet out by default.
    let subnet_min = bound(raw.subnet_min, "SubnetMin", first + size)?;
    let subnet_max = bound(raw.subnet_max, "SubnetMax", (end - u64::from(size)) as u32)?;
    let (backend_type, vni) = match raw.backend {
        None => ("udp".to_string(), FLANNEL_DEFAULT_VNI),
        Some(b) => (b.kind.unwrap_or_default(), b.vni.unwrap_or(FLANNEL_DEFAULT_VNI)),
    };
    Ok(NetworkConfig { network, subnet_len, subnet_min, subnet_max, backend_type, vni })
}

impl NetworkConfig {
    /// The config fits an agent in `mode` on `vni`: same backend, same VNI.
    pub fn check_agent(&self, mode: Mode, vni: u32) -> Result<(), String> {
        let want = backend_type(mode);
        if self.backend_type != want {
            return Err(format!(
                "the network config's Backend.Type is {:?}; an agent in {mode} mode needs {want:?}",
                self.backend_type
            ));
        }
        if mode == Mode::Vxlan && self.vni != vni {
            return Err(format!("the network config's VNI is {}; this agent's vni is {vni}", self.vni));
        }
        Ok(())
    }

    /// A subnet this network hands out: inside it, of its SubnetLen, and
    /// between SubnetMin and SubnetMax (`isSubnetConfigCompat`).
    pub fn fits(&self, subnet: Ipv4Net) -> bool {
        subnet.prefix_len() == self.subnet_len
            && self.network.contains(&subnet)
            && subnet.network() >= self.subnet_min
            && subnet.network() <= self.subnet_max
    }

    /// Free subnets, in order, as flannel's `allocateSubnet` collects them:
    /// from SubnetMin up, skipping any that overlaps a taken one, at most
    /// `limit`.
    pub fn free_subnets(&self, taken: &[Ipv4Net], limit: usize) -> Vec<Ipv4Net> {
        let size = 1u64 << (32 - self.subnet_len);
        let mut out = Vec::new();
        let mut at = u64::from(u32::from(self.subnet_min));
        while at <= u64::from(u32::from(self.subnet_max)) && out.len() < limit {
            let net = Ipv4Net::new(Ipv4Addr::from(at as u32), self.subnet_len).expect("a prefix length <= 30");
            if !taken.iter().any(|t| t.contains(&net.network()) || net.contains(&t.network())) {
                out.push(net);
            }
            at += size;
        }
        out
    }
}

/// The key of a subnet's lease under `prefix`.
pub fn subnet_key(prefix: &str, subnet: Ipv4Net) -> String {
    format!("{prefix}/subnets/{}-{}", subnet.network(), subnet.prefix_len())
}

/// The subnet a key under `<prefix>/subnets/` names: `a.b.c.d-len`, and a
/// dual-stack lease's IPv6 part (`&<v6>-<len>`) left aside as flannel's
/// IPv4 side does. Host bits are refused (flannel never writes them).
pub fn parse_subnet_key(prefix: &str, key: &[u8]) -> Result<Ipv4Net, String> {
    let key = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_string())?;
    let name = key
        .strip_prefix(prefix)
        .and_then(|k| k.strip_prefix("/subnets/"))
        .ok_or_else(|| format!("key {key:?} is not under {prefix}/subnets/"))?;
    let v4_part = name.split('&').next().unwrap_or(name);
    let (ip, len) = v4_part.split_once('-').ok_or_else(|| format!("key {key:?} is not <a.b.c.d>-<len>"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| format!("key {key:?}: {ip:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32 && len.bytes().all(|b| b.is_ascii_digit()) && (len == "0" || !len.starts_with('0')))
        .ok_or_else(|| format!("key {key:?}: {len:?} is not a prefix length"))?;
    let net = Ipv4Net::new(ip, len).expect("len <= 32");
    if net.trunc() != net {
        return Err(format!("key {key:?} has host bits set"));
    }
    Ok(net)
}

/// A lease's value, as flanneld writes it (`lease.LeaseAttrs`). Unknown
/// fields are ignored, as Go's decoder does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    /// flanneld writes `null` here on an IPv4-only node.
    #[serde(rename = "PublicIPv6", default)]
    pub public_ipv6: Option<String>,
    #[serde(rename = "BackendType", default, skip_serializing_if = "String::is_empty")]
    pub backend_type: String,
    #[serde(rename = "BackendData", default, skip_serializing_if = "Option::is_none")]
    pub backend_data: Option<BackendData>,
}

/// The vxlan backend's data (`vxlanLeaseAttrs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendData {
    #[serde(rename = "VNI", default)]
    pub vni: u32,
    #[serde(rename = "VtepMAC", default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<MacAddr>,
}

/// Parses a lease's value.
pub fn parse_lease(value: &[u8]) -> Result<LeaseAttrs, String> {
    serde_json::from_slice(value).map_err(|e| format!("the value is not a flannel lease: {e}"))
}

/// This node's lease value, as flanneld would write it.
pub fn own_lease(public_ip: Ipv4Addr, mode: Mode, vni: u32) -> LeaseAttrs {
    let backend_data = match mode {
        Mode::Vxlan => Some(BackendData { vni, vtep_mac: Some(MacAddr::vtep_for(public_ip)) }),
        Mode::Native => None,
    };
    LeaseAttrs { public_ip, public_ipv6: None, backend_type: backend_type(mode).into(), backend_data }
}

impl LeaseAttrs {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a lease serializes")
    }
}

/// What this agent is, for reading the others' leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub name: String,
    pub public_ip: Ipv4Addr,
    pub mode: Mode,
    pub vni: u32,
}

/// A lease that cannot be programmed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLease {
    pub key: String,
    pub reason: String,
}

/// One lease as seen in etcd: its key and raw value.
pub type RawLeases = BTreeMap<String, Vec<u8>>;

/// A peer's name in the node set: its lease key's last part
/// (`10.244.3.0-24`), since flannel's leases carry no node name.
pub fn peer_name(subnet: Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// One lease checked on its own against the network and this agent.
fn lease_spec(
    prefix: &str,
    key: &str,
    value: &[u8],
    network: &NetworkConfig,
    me: &Me,
    mine: Ipv4Net,
) -> Result<NodeSpec, String> {
    let subnet = parse_subnet_key(prefix, key.as_bytes())?;
    let attrs = parse_lease(value)?;
    if !network.network.contains(&subnet) {
        return Err(format!("subnet {subnet} is outside the Network {}", network.network));
    }
    let want = backend_type(me.mode);
    if attrs.backend_type != want {
        return Err(format!("BackendType {:?} is not this cluster's {want:?}", attrs.backend_type));
    }
    let vtep_mac = match (me.mode, &attrs.backend_data) {
        (Mode::Vxlan, Some(data)) if data.vni != me.vni => {
            return Err(format!("BackendData.VNI {} is not this cluster's {}", data.vni, me.vni))
        }
        (Mode::Vxlan, Some(data)) => data.vtep_mac,
        (Mode::Vxlan, None) => return Err("a vxlan lease without BackendData".into()),
        (Mode::Native, _) => None,
    };
    if let Some(mac) = vtep_mac {
        if !mac.is_valid_unicast() {
            return Err(format!("VtepMAC {mac} is not a unicast address"));
        }
    }
    if subnet == mine {
        if attrs.public_ip != me.public_ip {
            return Err(format!("this node's subnet {subnet} is leased to PublicIP {}", attrs.public_ip));
        }
        return Ok(NodeSpec { name: me.name.clone(), underlay_ip: me.public_ip, pod_cidr: subnet, vtep_mac });
    }
    if attrs.public_ip == me.public_ip {
        return Err(format!("PublicIP {} is this node's, which holds {mine}", attrs.public_ip));
    }
    Ok(NodeSpec { name: peer_name(subnet), underlay_ip: attrs.public_ip, pod_cidr: subnet, vtep_mac })
}

/// The node set the leases describe, for the agent `me` holding `mine`:
/// every lease is checked on its own, leases that clash with another
/// (a PublicIP, an overlapping subnet) are all skipped, and whatever
/// `NodeSet::validate` still refuses is skipped one lease at a time. A
/// skipped lease is never half-applied: it is in the set whole or not at
/// all. Errs only when this node's own lease is missing or unusable.
pub fn node_set(
    prefix: &str,
    leases: &RawLeases,
    network: &NetworkConfig,
    me: &Me,
    mine: Ipv4Net,
) -> Result<(NodeSet, Vec<SkippedLease>), String> {
    let mut skipped = Vec::new();
    let mut specs: Vec<(String, NodeSpec)> = Vec::new();
    for (key, value) in leases {
        match lease_spec(prefix, key, value, network, me, mine) {
            Ok(spec) => specs.push((key.clone(), spec)),
            Err(reason) => skipped.push(SkippedLease { key: key.clone(), reason }),
        }
    }
    let own_key = subnet_key(prefix, mine);
    // Clashes between peers skip every party: etcd holds no order that
    // says which of two claims is the true one. This node's lease wins.
    let mut drop = vec![false; specs.len()];
    for i in 0..specs.len() {
        for j in i + 1..specs.len() {
            let (a, b) = (&specs[i].1, &specs[j].1);
            let why = if a.underlay_ip == b.underlay_ip {
                Some(format!("PublicIP {} is also leased by {}", a.underlay_ip, specs[i].0))
            } else if a.pod_cidr.contains(&b.pod_cidr.network()) || b.pod_cidr.contains(&a.pod_cidr.network()) {
                Some(format!("subnet {} overlaps {} of {}", b.pod_cidr, a.pod_cidr, specs[i].0))
            } else {
                None
            };
            if why.is_some() {
                drop[i] |= specs[i].0 != own_key;
                drop[j] |= specs[j].0 != own_key;
                if specs[j].0 != own_key {
                    skipped.push(SkippedLease { key: specs[j].0.clone(), reason: why.unwrap_or_default() });
                }
                if specs[i].0 != own_key {
                    let why = format!("clashes with {} ({})", specs[j].0, specs[j].1.underlay_ip);
                    skipped.push(SkippedLease { key: specs[i].0.clone(), reason: why });
                }
            }
        }
    }
    let mut kept: Vec<(String, NodeSpec)> = specs.into_iter().zip(drop).filter(|(_, d)| !d).map(|(s, _)| s).collect();
    if !kept.iter().any(|(k, _)| *k == own_key) {
        let why = skipped.iter().find(|s| s.key == own_key).map(|s| format!(": {}", s.reason)).unwrap_or_default();
        return Err(format!("this node's lease {own_key} is not in etcd{why}"));
    }
    loop {
        let nodes: Vec<NodeSpec> = kept.iter().map(|(_, n)| n.clone()).collect();
        match NodeSet::validate(nodes) {
            Ok(set) => return Ok((set, dedup(skipped))),
            Err(e) => {
                // Skip the lease the error names that is not this node's.
                let victim = [Some(e.index), e.other]
                    .into_iter()
                    .flatten()
                    .find(|&i| kept[i].0 != own_key)
                    .ok_or_else(|| format!("this node's lease {own_key}: {}", e.msg))?;
                let (key, _) = kept.remove(victim);
                skipped.push(SkippedLease { key, reason: e.msg });
            }
        }
    }
}

/// One line per skipped key, the first reason kept.
fn dedup(mut skipped: Vec<SkippedLease>) -> Vec<SkippedLease> {
    let mut seen = std::collections::BTreeSet::new();
    skipped.retain(|s| seen.insert(s.key.clone()));
    skipped
}

/// The lease of `public_ip` among `leases`, as flannel's `findLeaseByIP`
/// looks for it on start: the first, in key order, that parses.
pub fn find_by_public_ip(prefix: &str, leases: &RawLeases, public_ip: Ipv4Addr) -> Option<(String, Ipv4Net)> {
    leases.iter().find_map(|(key, value)| {
        let subnet = parse_subnet_key(prefix, key.as_bytes()).ok()?;
        let attrs = parse_lease(value).ok()?;
        (attrs.public_ip == public_ip).then(|| (key.clone(), subnet))
    })
}

/// Every subnet the leases hold, unusable ones too: a subnet is taken as
/// long as its key exists, whatever its value says.
pub fn taken_subnets(prefix: &str, leases: &RawLeases) -> Vec<Ipv4Net> {
    leases.keys().filter_map(|k| parse_subnet_key(prefix, k.as_bytes()).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/coreos.com/network";

    fn cfg(json: &str) -> Result<NetworkConfig, String> {
        parse_config(json.as_bytes())
    }

    fn me() -> Me {
        Me { name: "node-0".into(), public_ip: "192.168.77.10".parse().unwrap(), mode: Mode::Vxlan, vni: 1 }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn lease(ip: &str, mac: &str) -> Vec<u8> {
        format!(
            r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
        )
        .into_bytes()
    }

    fn leases(items: &[(&str, Vec<u8>)]) -> RawLeases {
        items.iter().map(|(k, v)| (format!("{P}/subnets/{k}"), v.clone())).collect()
    }

    #[test]
    fn the_network_config_gets_flannels_defaults() {
        let c = cfg(r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#).unwrap();
        assert_eq!(c.subnet_len, 24);
        assert_eq!((c.subnet_min.to_string(), c.subnet_max.to_string()), ("10.244.1.0".into(), "10.244.255.0".into()));
        assert_eq!((c.backend_type.as_str(), c.vni), ("vxlan", 1));
        let c = cfg(r#"{"Network": "10.5.0.0/24"}"#).unwrap();
        assert_eq!((c.subnet_len, c.backend_type.as_str()), (26, "udp"));
        let c = cfg(
            r#"{"Network": "10.244.0.0/16", "SubnetLen": 25, "SubnetMin": "10.244.8.0", "SubnetMax": "10.244.9.128",
                "Backend": {"Type": "vxlan", "VNI": 4096}}"#,
        )
        .unwrap();
        assert_eq!((c.subnet_len, c.vni, c.subnet_max.to_string()), (25, 4096, "10.244.9.128".into()));
    }

    #[test]
    fn bad_network_configs_are_named() {
        for (json, needle) in [
            ("not json", "not flannel's JSON"),
            (r#"{"SubnetLen": 24}"#, "no Network"),
            (r#"{"Network": "10.244.0.0/33"}"#, "not an IPv4 CIDR"),
            (r#"{"Network": "fd00::/64"}"#, "not an IPv4 CIDR"),
            (r#"{"Network": "10.244.0.0/29"}"#, "too small"),
            (r#"{"Network": "10.244.0.0/16", "SubnetLen": 31}"#, "at most 30"),
            (r#"{"Network": "10.244.0.0/16", "SubnetLen": 17}"#, "at least four"),
            (r#"{"Network": "10.244.0.0/16", "SubnetMin": "10.245.0.0"}"#, "not in Network"),
            (r#"{"Network": "10.244.0.0/16", "SubnetMax": "10.244.1.7"}"#, "boundary"),
            (r#"{"Network": "10.244.0.0/16", "SubnetLen": "24"}"#, "not flannel's JSON"),
            (r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": -1}}"#, "not flannel's JSON"),
        ] {
            let e = cfg(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn the_config_must_match_the_agents_backend() {
        let c = cfg(r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 2}}"#).unwrap();
        assert!(c.check_agent(Mode::Vxlan, 1).unwrap_err().contains("VNI is 2"));
        assert!(c.check_agent(Mode::Vxlan, 2).is_ok());
        assert!(c.check_agent(Mode::Native, 2).unwrap_err().contains("needs \"host-gw\""));
    }

    #[test]
    fn keys_are_flannels() {
        assert_eq!(subnet_key(P, net("10.244.3.0/24")), "/coreos.com/network/subnets/10.244.3.0-24");
        assert_eq!(parse_subnet_key(P, b"/coreos.com/network/subnets/10.244.3.0-24"), Ok(net("10.244.3.0/24")));
        assert_eq!(
            parse_subnet_key(P, b"/coreos.com/network/subnets/10.244.3.0-24&fd00:10:244:3::-64"),
            Ok(net("10.244.3.0/24"))
        );
        for (key, needle) in [
            ("/coreos.com/network/config", "not under"),
            ("/other/subnets/10.244.3.0-24", "not under"),
            ("/coreos.com/network/subnets/10.244.3.0", "not <a.b.c.d>-<len>"),
            ("/coreos.com/network/subnets/10.244.3-24", "not an IPv4"),
            ("/coreos.com/network/subnets/10.244.3.0-33", "not a prefix length"),
            ("/coreos.com/network/subnets/10.244.3.0-+24", "not a prefix length"),
            ("/coreos.com/network/subnets/10.244.3.0-024", "not a prefix length"),
            ("/coreos.com/network/subnets/10.244.03.0-24", "not an IPv4"),
            ("/coreos.com/network/subnets/10.244.3.7-24", "host bits"),
        ] {
            let e = parse_subnet_key(P, key.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{key}: {e}");
        }
        assert!(parse_subnet_key(P, b"/coreos.com/network/subnets/\xff").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn our_lease_is_written_as_flanneld_writes_it() {
        let json = own_lease("192.168.77.10".parse().unwrap(), Mode::Vxlan, 1).to_json();
        assert_eq!(
            json,
            r#"{"PublicIP":"192.168.77.10","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:6b:c0:a8:4d:0a"}}"#
        );
        assert_eq!(
            own_lease("192.168.77.10".parse().unwrap(), Mode::Native, 1).to_json(),
            r#"{"PublicIP":"192.168.77.10","PublicIPv6":null,"BackendType":"host-gw"}"#
        );
        assert_eq!(parse_lease(json.as_bytes()).unwrap().public_ip.to_string(), "192.168.77.10");
    }

    #[test]
    fn free_subnets_skip_taken_ones_from_subnet_min() {
        let c = cfg(r#"{"Network": "10.244.0.0/22", "Backend": {"Type": "vxlan"}}"#).unwrap();
        assert_eq!(c.free_subnets(&[], 100), vec![net("10.244.1.0/24"), net("10.244.2.0/24"), net("10.244.3.0/24")]);
        assert_eq!(c.free_subnets(&[net("10.244.2.0/24")], 100), vec![net("10.244.1.0/24"), net("10.244.3.0/24")]);
        assert_eq!(c.free_subnets(&[net("10.244.0.0/22")], 100), vec![]);
        assert_eq!(c.free_subnets(&[net("10.244.1.128/25")], 1), vec![net("10.244.2.0/24")]);
        assert!(c.fits(net("10.244.3.0/24")) && !c.fits(net("10.244.0.0/24")) && !c.fits(net("10.244.3.0/25")));
        let top = cfg(r#"{"Network": "255.255.255.0/24"}"#).unwrap();
        assert_eq!(top.free_subnets(&[], 100).len(), 3, "no overflow at the top of the address space");
    }

    #[test]
    fn the_node_set_takes_good_leases_and_skips_each_bad_one_with_a_reason() {
        let c = cfg(r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 1}}"#).unwrap();
        let raw = leases(&[
            ("10.244.1.0-24", lease("192.168.77.10", "02:6b:c0:a8:4d:0a")),
            ("10.244.2.0-24", lease("192.168.77.11", "aa:bb:cc:dd:ee:01")),
            ("10.244.3.0-24", b"{not json".to_vec()),
            ("10.244.4.0-24", br#"{"PublicIP": 7, "BackendType": "vxlan"}"#.to_vec()),
            ("10.245.5.0-24", lease("192.168.77.15", "aa:bb:cc:dd:ee:05")),
            ("10.244.6.0-24", lease("192.168.77.16", "01:00:5e:00:00:01")),
            ("10.244.7.0-24", lease("192.168.77.17", "aa:bb:cc:dd:ee:07")),
            ("10.244.8.0-24", lease("192.168.77.17", "aa:bb:cc:dd:ee:08")),
            ("10.244.9.0-24", lease("192.168.77.10", "aa:bb:cc:dd:ee:09")),
            ("10.244.10.0-24", br#"{"PublicIP":"192.168.77.20","BackendType":"host-gw"}"#.to_vec()),
            (
                "10.244.11.0-24",
                br#"{"PublicIP":"192.168.77.21","BackendType":"vxlan","BackendData":{"VNI":2}}"#.to_vec(),
            ),
            ("10.244.12.7-24", lease("192.168.77.22", "aa:bb:cc:dd:ee:12")),
            ("10.244.13.0-24", lease("10.244.1.9", "aa:bb:cc:dd:ee:13")),
        ]);
        let (set, skipped) = node_set(P, &raw, &c, &me(), net("10.244.1.0/24")).unwrap();
        let names: Vec<&str> = set.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["10.244.2.0-24", "node-0"]);
        let peer = set.get("10.244.2.0-24").unwrap();
        assert_eq!(peer.vtep_mac.unwrap().to_string(), "aa:bb:cc:dd:ee:01");
        assert_eq!(set.get("node-0").unwrap().vtep_mac, Some(MacAddr::vtep_for(me().public_ip)));
        let reason = |k: &str| {
            skipped.iter().find(|s| s.key.ends_with(k)).map(|s| s.reason.clone()).unwrap_or_else(|| panic!("{k} kept"))
        };
        assert!(reason("/10.244.3.0-24").contains("not a flannel lease"));
        assert!(reason("/10.244.4.0-24").contains("not a flannel lease"));
        assert!(reason("/10.245.5.0-24").contains("outside the Network"));
        assert!(reason("/10.244.6.0-24").contains("not a unicast"));
        assert!(reason("/10.244.7.0-24").contains("clashes with"));
        assert!(reason("/10.244.8.0-24").contains("PublicIP 192.168.77.17 is also leased"));
        assert!(reason("/10.244.9.0-24").contains("is this node's"));
        assert!(reason("/10.244.10.0-24").contains("BackendType \"host-gw\""));
        assert!(reason("/10.244.11.0-24").contains("VNI 2"));
        assert!(reason("/10.244.12.7-24").contains("host bits"));
        assert!(reason("/10.244.13.0-24").contains("underlay IP lies inside a pod CIDR"));
        assert_eq!(skipped.len(), 11, "{skipped:?}");
    }

    #[test]
    fn overlapping_peers_are_both_skipped_and_our_own_lease_is_required() {
        let c = cfg(r#"{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}"#).unwrap();
        let mut raw = leases(&[
            ("10.244.1.0-24", lease("192.168.77.10", "02:6b:c0:a8:4d:0a")),
            ("10.244.2.0-24", lease("192.168.77.11", "aa:bb:cc:dd:ee:01")),
            ("10.244.2.0-25", lease("192.168.77.12", "aa:bb:cc:dd:ee:02")),
            ("10.244.1.0-25", lease("192.168.77.13", "aa:bb:cc:dd:ee:03")),
        ]);
        let (set, skipped) = node_set(P, &raw, &c, &me(), net("10.244.1.0/24")).unwrap();
        assert_eq!(set.len(), 1, "{skipped:?}");
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        raw.insert(format!("{P}/subnets/10.244.1.0-24"), lease("192.168.77.99", "aa:bb:cc:dd:ee:09"));
        let e = node_set(P, &raw, &c, &me(), net("10.244.1.0/24")).unwrap_err();
        assert!(e.contains("leased to PublicIP 192.168.77.99"), "{e}");
        raw.remove(&format!("{P}/subnets/10.244.1.0-24"));
        let e = node_set(P, &raw, &c, &me(), net("10.244.1.0/24")).unwrap_err();
        assert!(e.contains("10.244.1.0-24 is not in etcd"), "{e}");
    }

    #[test]
    fn a_restart_finds_its_lease_by_public_ip() {
        let raw = leases(&[
            ("10.244.3.0-24", b"junk".to_vec()),
            ("10.244.5.0-24", lease("192.168.77.10", "02:6b:c0:a8:4d:0a")),
        ]);
        let found = find_by_public_ip(P, &raw, "192.168.77.10".parse().unwrap());
        assert_eq!(found.map(|f| f.1), Some(net("10.244.5.0/24")));
        assert_eq!(find_by_public_ip(P, &raw, "192.168.77.11".parse().unwrap()), None);
        assert_eq!(taken_subnets(P, &raw), vec![net("10.244.3.0/24"), net("10.244.5.0/24")]);
    }
}
