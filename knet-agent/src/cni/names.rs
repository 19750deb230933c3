//! Names of the host-side links, derived from the container so that DEL
//! and CHECK find what ADD created without any state of their own.

/// The host veth of (container, interface): `knet` + 11 hex digits of a
/// 64-bit FNV-1a hash, 15 bytes, the longest name Linux allows. 44 bits
/// make a clash between two pods of one node negligible; the owner is also
/// written into the link's alias (see [`owner_alias`]), so DEL never
/// deletes a clashing link of another container.
pub fn host_veth(container_id: &str, ifname: &str) -> String {
    format!("knet{}", hash11(container_id, ifname))
}

/// The name the pod end had in the node's namespace, between its creation
/// and its move into the pod, in plugins before the pod end was created in
/// the pod directly: DEL still removes one an interrupted ADD of such a
/// plugin left behind.
pub fn temp_peer(container_id: &str, ifname: &str) -> String {
    format!("kntp{}", hash11(container_id, ifname))
}

/// The alias ADD sets on the host veth: which container and interface own it.
pub fn owner_alias(container_id: &str, ifname: &str) -> String {
    format!("knet {container_id} {ifname}")
}

fn hash11(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    // A separator no container ID or interface name contains.
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:016x}", h)[..11].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_fit_ifnamsiz() {
        let a = host_veth("0123456789abcdef", "eth0");
        assert_eq!(a, host_veth("0123456789abcdef", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("knet"));
        assert!(a[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        let t = temp_peer("0123456789abcdef", "eth0");
        assert_eq!(t.len(), 15);
        assert_ne!(t, a);
        assert_eq!(&t[4..], &a[4..]);
    }

    #[test]
    fn names_differ_by_container_and_interface() {
        let base = host_veth("c1", "eth0");
        assert_ne!(base, host_veth("c2", "eth0"));
        assert_ne!(base, host_veth("c1", "eth1"));
        // The separator keeps ("c1e", "th0") from meeting ("c1", "eth0").
        assert_ne!(base, host_veth("c1e", "th0"));
    }

    #[test]
    fn a_known_value_pins_the_hash() {
        // FNV-1a 64 of "c1\0eth0"; a change here breaks DEL of pods added
        // by an older plugin.
        assert_eq!(host_veth("c1", "eth0"), "knetf53f02b3bfe");
        assert_eq!(hash11("", ""), "af63bd4c860");
    }

    #[test]
    fn thousands_of_containers_get_distinct_names() {
        let names: std::collections::HashSet<String> =
            (0..5000).map(|i| host_veth(&format!("container-{i}"), "eth0")).collect();
        assert_eq!(names.len(), 5000);
    }
}
