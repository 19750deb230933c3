//! Ethernet addresses as the API and the maps carry them.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A unicast address that is not all zeros: the only kind a pod's
    /// interface can have.
    pub fn is_valid_unicast(self) -> bool {
        self.0[0] & 0x01 == 0 && self.0 != [0; 6]
    }

    /// This node's VXLAN MAC (its VTEP MAC), published for peers to put as
    /// the inner destination: locally administered, `02:6b` ('k') then the
    /// underlay address, so it is stable across restarts and reinstalls
    /// and unique wherever underlay addresses are.
    pub fn vtep_for(underlay: std::net::Ipv4Addr) -> MacAddr {
        // One derivation for the agent and the programs (their inner source).
        MacAddr(knet_common::node::vtep_mac(knet_common::ipv4_key(underlay.octets())))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a MAC address (expected six hex octets like 02:42:0a:f4:00:05)")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;

    /// Six hex octets, as `macaddr` reads them (colons or dashes between
    /// octets); never signs, spaces or short octets.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<macaddr::MacAddr6>().map(|m| MacAddr(m.into_array())).map_err(|_| BadMac(s.to_string()))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        let mac: MacAddr = "02:42:0A:f4:00:05".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x42, 0x0a, 0xf4, 0x00, 0x05]);
        assert_eq!(mac.to_string(), "02:42:0a:f4:00:05");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "02:42:0a:f4:00",
            "02:42:0a:f4:00:05:06",
            "0242:0a:f4:00:05:0",
            "zz:42:0a:f4:00:05",
            "2:42:0a:f4:00:05",
            "+2:00:00:00:00:09",
            " 02:00:00:00:00:09",
            "02:00:00:00:00:09 ",
            "0x:00:00:00:00:09",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn vtep_mac_is_stable_unicast_and_names_the_node() {
        let mac = MacAddr::vtep_for("192.168.77.10".parse().unwrap());
        assert_eq!(mac.to_string(), "02:6b:c0:a8:4d:0a");
        assert!(mac.is_valid_unicast());
        assert_ne!(mac, MacAddr::vtep_for("192.168.77.11".parse().unwrap()));
    }

    #[test]
    fn unicast_check() {
        assert!(MacAddr([2, 0, 0, 0, 0, 1]).is_valid_unicast());
        assert!(!MacAddr([1, 0, 0x5e, 0, 0, 1]).is_valid_unicast());
        assert!(!MacAddr([0; 6]).is_valid_unicast());
    }
}
