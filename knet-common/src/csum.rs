//! Internet checksum arithmetic (RFC 1071, RFC 1624), shared by the eBPF
//! programs that rewrite headers and by the host tests that check them.
//! Fixed-size inputs only, so the loops unroll for the verifier.

/// The ones'-complement sum of the big-endian 16-bit words of `bytes`,
/// not yet folded (add more words before `finish`).
#[inline(always)]
pub fn sum_words<const N: usize>(bytes: &[u8; N]) -> u32 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    if N % 2 == 1 {
        sum += u32::from(bytes[N - 1]) << 8;
    }
    sum
}

/// Folds a running sum into the checksum field's value (wire order).
#[inline(always)]
pub fn finish(mut sum: u32) -> [u8; 2] {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// The header checksum after the TTL is lowered by one (RFC 1624, as the
/// kernel's `ip_decrease_ttl` does): the TTL is the high byte of its word,
/// so the stored complement rises by 0x0100, with end-around carry.
#[inline(always)]
pub fn after_ttl_decrement(check: [u8; 2]) -> [u8; 2] {
    let c = u32::from(u16::from_be_bytes(check)) + 0x0100;
    let c = c + u32::from(c >= 0xffff);
    (c as u16).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ttl: u8, seed: u8) -> [u8; 20] {
        let mut h = [0x45, 0, 0, 84, seed, 0x11, 0x40, 0, ttl, 1, 0, 0, 10, 244, seed, 2, 10, 244, 1, seed];
        let c = finish(sum_words(&h));
        h[10..12].copy_from_slice(&c);
        h
    }

    #[test]
    fn a_header_with_its_checksum_sums_to_zero() {
        let h = header(64, 3);
        assert_eq!(finish(sum_words(&h)), [0, 0]);
    }

    #[test]
    fn incremental_ttl_update_matches_a_full_recompute() {
        // Every TTL and enough header variety to hit the carry cases.
        for seed in 0..=255u8 {
            for ttl in 1..=255u8 {
                let h = header(ttl, seed);
                let mut lowered = h;
                lowered[8] = ttl - 1;
                lowered[10..12].copy_from_slice(&after_ttl_decrement([h[10], h[11]]));
                assert_eq!(finish(sum_words(&lowered)), [0, 0], "ttl {ttl} seed {seed}: {lowered:?}");
            }
        }
    }

    #[test]
    fn odd_length_pads_with_a_zero_byte() {
        assert_eq!(sum_words(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
