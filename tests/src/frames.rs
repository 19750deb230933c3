//! Crafted Ethernet frames, byte by byte, for the packet table and for
//! injecting hostile traffic into a namespace cluster.
//!
//! Deliberately written from the RFCs rather than from the structs the
//! eBPF programs use: the frames are the tests' independent oracle.

use std::net::Ipv4Addr;

pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_VLAN: u16 = 0x8100;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_LLDP: u16 = 0x88cc;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;

/// `dst | src | ethertype | payload`.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_LEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header to build. `Default` is a plain TCP packet with TTL 64.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub tos: u8,
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// In 8-byte units.
    pub fragment_offset: u16,
    /// Bytes after the fixed header (a multiple of 4 for a valid header).
    pub options: Vec<u8>,
    /// Written instead of the computed total length, to make it wrong.
    pub total_len_override: Option<u16>,
    /// Written instead of version 4 and the computed IHL (the whole byte).
    pub version_ihl_override: Option<u8>,
}

impl Default for Ipv4 {
    fn default() -> Self {
        Ipv4 {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            ttl: 64,
            proto: PROTO_TCP,
            tos: 0,
            id: 0x1234,
            dont_fragment: false,
            more_fragments: false,
            fragment_offset: 0,
            options: Vec::new(),
            total_len_override: None,
            version_ihl_override: None,
        }
    }
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Ipv4 { src, dst, proto, ..Default::default() }
    }

    /// Header and payload, with a correct header checksum.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let header_len = IPV4_LEN + self.options.len();
        let total = self.total_len_override.unwrap_or((header_len + payload.len()) as u16);
        let version_ihl = self.version_ihl_override.unwrap_or(0x40 | (header_len / 4) as u8);
        let flags_offset = (u16::from(self.dont_fragment) << 14)
            | (u16::from(self.more_fragments) << 13)
            | (self.fragment_offset & 0x1fff);
        let mut h = Vec::with_capacity(header_len + payload.len());
        h.push(version_ihl);
        h.push(self.tos);
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&flags_offset.to_be_bytes());
        h.push(self.ttl);
        h.push(self.proto);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }
}

/// A UDP datagram with checksum 0 (allowed over IPv4).
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&src_port.to_be_bytes());
    d.extend_from_slice(&dst_port.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// A VXLAN header (I flag set) with `vni`, then the inner frame.
pub fn vxlan(vni: u32, inner_frame: &[u8]) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut d = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
    d.extend_from_slice(inner_frame);
    d
}

/// An ICMP message with a correct checksum: type, code, the 4 bytes after
/// the checksum, then `body`.
pub fn icmp(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let sum = checksum(&m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// An ICMP echo request.
pub fn icmp_echo(id: u16, seq: u16, body: &[u8]) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    icmp(8, 0, [a, b, c, d], body)
}

/// A minimal TCP SYN header (no options, checksum left 0: the programs
/// never look at it).
pub fn tcp_syn(src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut s = Vec::with_capacity(20);
    s.extend_from_slice(&src_port.to_be_bytes());
    s.extend_from_slice(&dst_port.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    s.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    s
}

/// An IPv6 header (no extension headers) followed by `payload`.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], next_header: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + payload.len());
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.push(next_header);
    p.push(hop_limit);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// An ARP request for `target` from `sender` (`sender_mac`).
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    a
}

/// The IPv4 header of a frame (at `ETH_LEN`), read back field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4View {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: u16,
    pub id: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    pub fragment_offset: u16,
    pub ttl: u8,
    pub proto: u8,
    pub checksum_ok: bool,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// Reads the IPv4 header at `offset` of `frame`, if there is one.
pub fn ipv4_at(frame: &[u8], offset: usize) -> Option<Ipv4View> {
    let h = frame.get(offset..offset + IPV4_LEN)?;
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let full = frame.get(offset..offset + header_len)?;
    let flags = u16::from_be_bytes([h[6], h[7]]);
    Some(Ipv4View {
        version_ihl: h[0],
        tos: h[1],
        total_len: u16::from_be_bytes([h[2], h[3]]),
        id: u16::from_be_bytes([h[4], h[5]]),
        dont_fragment: flags & 0x4000 != 0,
        more_fragments: flags & 0x2000 != 0,
        fragment_offset: flags & 0x1fff,
        ttl: h[8],
        proto: h[9],
        checksum_ok: checksum(full) == 0,
        src: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        dst: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies_and_reads_back() {
        let mut ip = Ipv4::new(Ipv4Addr::new(10, 244, 0, 2), Ipv4Addr::new(10, 244, 1, 2), PROTO_UDP);
        ip.dont_fragment = true;
        ip.ttl = 7;
        let frame = eth([2; 6], [4; 6], ETH_IPV4, &ip.packet(&udp(1, 2, b"hi")));
        let v = ipv4_at(&frame, ETH_LEN).unwrap();
        assert!(v.checksum_ok);
        assert_eq!((v.version_ihl, v.total_len, v.ttl, v.proto), (0x45, 30, 7, PROTO_UDP));
        assert!(v.dont_fragment && !v.more_fragments);
        assert_eq!(v.dst, Ipv4Addr::new(10, 244, 1, 2));
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
    }

    #[test]
    fn icmp_checksum_verifies() {
        assert_eq!(checksum(&icmp_echo(7, 1, b"abc")), 0);
    }
}
