//! `ENDPOINTS`: local pod IPv4 address -> where and how to deliver to it.

/// Capacity of the `ENDPOINTS` map: local pods on one node.
pub const MAX_ENDPOINTS: u32 = 16_384;

/// Value of `ENDPOINTS`. The key is the pod's IPv4 address as [`ipv4_key`]
/// makes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// ifindex of the host-side veth; `bpf_redirect_peer` to it lands in
    /// the pod.
    pub host_ifindex: u32,
    /// Destination MAC of frames delivered into the pod.
    pub pod_mac: [u8; 6],
    /// Source MAC of those frames: the host-side veth, the pod's gateway.
    pub host_mac: [u8; 6],
}

const _: () = assert!(core::mem::size_of::<Endpoint>() == 16);

/// The map key for an IPv4 address: its four octets in wire order, read as
/// a native integer, exactly as the program loads them from the IP header.
pub const fn ipv4_key(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

#[cfg(feature = "user")]
// SAFETY: `Endpoint` is `repr(C)`, `Copy`, and has no padding (asserted above).
unsafe impl aya::Pod for Endpoint {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_keeps_wire_order() {
        let key = ipv4_key([10, 244, 0, 7]);
        assert_eq!(key.to_ne_bytes(), [10, 244, 0, 7]);
    }
}
