//! The local endpoints (pods on this node) as plain values: what a request
//! must satisfy before anything is programmed, and the set the agent holds.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// An endpoint as a client asks for it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddEndpoint {
    /// The pod's IPv4 address.
    pub ip: String,
    /// Name of the host-side end of the pod's veth pair.
    pub host_veth: String,
    /// MAC address of the pod's interface.
    pub pod_mac: String,
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub ip: Ipv4Addr,
    pub host_veth: String,
    pub pod_mac: MacAddr,
}

/// An endpoint as programmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub host_veth: String,
    pub host_ifindex: u32,
    pub pod_mac: MacAddr,
    pub host_mac: MacAddr,
}

impl Endpoint {
    pub fn map_value(&self) -> knet_common::Endpoint {
        knet_common::Endpoint { host_ifindex: self.host_ifindex, pod_mac: self.pod_mac.0, host_mac: self.host_mac.0 }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndpointError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

/// Checks a request on its own and against the node's pod subnet.
pub fn validate(req: &AddEndpoint, pod_cidr: Ipv4Net) -> Result<EndpointSpec, EndpointError> {
    let ip: Ipv4Addr =
        req.ip.parse().map_err(|_| EndpointError::Invalid(format!("ip {:?} is not an IPv4 address", req.ip)))?;
    if !pod_cidr.contains(&ip) {
        return Err(EndpointError::Invalid(format!("ip {ip} is outside this node's pod CIDR {pod_cidr}")));
    }
    if ip == pod_cidr.network() || ip == pod_cidr.broadcast() {
        return Err(EndpointError::Invalid(format!(
            "ip {ip} is the network or broadcast address of the pod CIDR {pod_cidr}"
        )));
    }
    validate_ifname(&req.host_veth)?;
    let pod_mac: MacAddr = req.pod_mac.parse().map_err(|e| EndpointError::Invalid(format!("pod_mac: {e}")))?;
    if !pod_mac.is_valid_unicast() {
        return Err(EndpointError::Invalid(format!("pod_mac {pod_mac} is not a unicast address")));
    }
    Ok(EndpointSpec { ip, host_veth: req.host_veth.clone(), pod_mac })
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or white space.
fn validate_ifname(name: &str) -> Result<(), EndpointError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(EndpointError::Invalid(format!("host_veth {name:?} is not a valid interface name")))
    }
}

/// The endpoints this agent has programmed, by IP.
#[derive(Debug, Default)]
pub struct Endpoints {
    by_ip: BTreeMap<Ipv4Addr, Endpoint>,
}

impl Endpoints {
    /// Refuses a second endpoint with the same IP or on the same veth. The
    /// same request again (ip, veth and pod MAC) is no conflict: it is the
    /// client's retry after an answer it never got, and the endpoint it
    /// already has is returned, for the caller to confirm that the veth is
    /// still the one it was programmed on.
    pub fn check_new(&self, spec: &EndpointSpec) -> Result<Option<&Endpoint>, EndpointError> {
        if let Some(existing) = self.by_ip.get(&spec.ip) {
            if existing.host_veth == spec.host_veth && existing.pod_mac == spec.pod_mac {
                return Ok(Some(existing));
            }
            return Err(EndpointError::Conflict(format!(
                "ip {} is already an endpoint (on {})",
                spec.ip, existing.host_veth
            )));
        }
        if let Some(existing) = self.by_ip.values().find(|e| e.host_veth == spec.host_veth) {
            return Err(EndpointError::Conflict(format!(
                "host_veth {} already carries endpoint {}",
                spec.host_veth, existing.ip
            )));
        }
        Ok(None)
    }

    pub fn insert(&mut self, endpoint: Endpoint) {
        self.by_ip.insert(endpoint.ip, endpoint);
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<&Endpoint> {
        self.by_ip.get(&ip)
    }

    pub fn remove(&mut self, ip: Ipv4Addr) -> Option<Endpoint> {
        self.by_ip.remove(&ip)
    }

    pub fn list(&self) -> Vec<Endpoint> {
        self.by_ip.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr() -> Ipv4Net {
        "10.244.3.0/24".parse().unwrap()
    }

    fn req(ip: &str, veth: &str, mac: &str) -> AddEndpoint {
        AddEndpoint { ip: ip.into(), host_veth: veth.into(), pod_mac: mac.into() }
    }

    fn endpoint(ip: &str, veth: &str) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            host_veth: veth.into(),
            host_ifindex: 7,
            pod_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            host_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        }
    }

    #[test]
    fn accepts_a_pod_in_the_cidr() {
        let spec = validate(&req("10.244.3.7", "kv1", "02:00:00:00:00:01"), cidr()).unwrap();
        assert_eq!(spec.ip, Ipv4Addr::new(10, 244, 3, 7));
    }

    #[test]
    fn rejects_bad_requests_with_a_reason() {
        for (r, needle) in [
            (req("10.244.4.7", "kv1", "02:00:00:00:00:01"), "outside"),
            (req("10.244.3.0", "kv1", "02:00:00:00:00:01"), "network or broadcast"),
            (req("10.244.3.255", "kv1", "02:00:00:00:00:01"), "network or broadcast"),
            (req("10.244.3", "kv1", "02:00:00:00:00:01"), "not an IPv4"),
            (req("10.244.3.7", "", "02:00:00:00:00:01"), "interface name"),
            (req("10.244.3.7", "a-name-that-is-too-long", "02:00:00:00:00:01"), "interface name"),
            (req("10.244.3.7", "a/b", "02:00:00:00:00:01"), "interface name"),
            (req("10.244.3.7", "kv1", "02:00:00:00:01"), "MAC"),
            (req("10.244.3.7", "kv1", "+2:00:00:00:00:01"), "MAC"),
            (req("10.244.3.7", "kv1", "ff:ff:ff:ff:ff:ff"), "unicast"),
        ] {
            let err = validate(&r, cidr()).unwrap_err();
            assert!(matches!(err, EndpointError::Invalid(_)));
            assert!(err.to_string().contains(needle), "{r:?}: {err}");
        }
    }

    #[test]
    fn duplicate_ip_or_veth_conflicts() {
        let mut eps = Endpoints::default();
        eps.insert(endpoint("10.244.3.7", "kv1"));
        let same_ip = validate(&req("10.244.3.7", "kv2", "02:00:00:00:00:09"), cidr()).unwrap();
        assert!(matches!(eps.check_new(&same_ip), Err(EndpointError::Conflict(_))));
        let same_veth = validate(&req("10.244.3.8", "kv1", "02:00:00:00:00:09"), cidr()).unwrap();
        assert!(matches!(eps.check_new(&same_veth), Err(EndpointError::Conflict(_))));
        let other_mac = validate(&req("10.244.3.7", "kv1", "02:00:00:00:00:09"), cidr()).unwrap();
        assert!(matches!(eps.check_new(&other_mac), Err(EndpointError::Conflict(_))));
        let fresh = validate(&req("10.244.3.8", "kv2", "02:00:00:00:00:09"), cidr()).unwrap();
        assert_eq!(eps.check_new(&fresh), Ok(None));
    }

    #[test]
    fn the_same_request_again_is_the_endpoint_it_made() {
        let mut eps = Endpoints::default();
        eps.insert(endpoint("10.244.3.7", "kv1"));
        let again = validate(&req("10.244.3.7", "kv1", "02:00:00:00:00:01"), cidr()).unwrap();
        assert_eq!(eps.check_new(&again), Ok(Some(&endpoint("10.244.3.7", "kv1"))));
    }
}
