//! Internet checksum updates (RFC 1624): when a NAT changes a few header words, the
//! checksum is patched from the old and new words instead of being summed over the packet
//! again, so the cost of a rewrite does not grow with the packet (a 64 KB GSO segment costs
//! what a 64-byte frame does).

/// How the L4 checksum field of a packet is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csum {
    /// The field holds the finished checksum (what is on the wire).
    Full,
    /// The field holds only the pseudo-header sum, not complemented, and the sender's NIC
    /// (or the kernel, for a GSO frame) finishes it later: virtio's `NEEDS_CSUM`, the
    /// kernel's `CHECKSUM_PARTIAL`. Only changes to the pseudo-header (the addresses) move
    /// it; ports are in the data the later sum covers.
    Partial,
}

/// Fold a 32-bit one's-complement accumulator into 16 bits.
#[inline]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')` for a 16-bit word `m` that became `m'`.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// [`update16`] for a 32-bit word (an IPv4 address), as its two halves.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let sum =
        u32::from(!check) + u32::from(!(old >> 16) as u16) + u32::from(!old as u16) + (new >> 16) + (new & 0xffff);
    !fold(sum)
}

/// The same change applied to a partial (not complemented) sum, as the kernel's
/// `inet_proto_csum_replace4` does for `CHECKSUM_PARTIAL`.
#[inline]
pub fn update32_partial(partial: u16, old: u32, new: u32) -> u16 {
    !update32(!partial, old, new)
}

/// The checksum of `data` from scratch (ICMP messages, and the tests' oracle).
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// One's-complement sum of `data` (from an even offset) added to `acc`, folded to 16 bits
/// but not complemented. Summed as 32-bit words into a 64-bit accumulator and folded once at
/// the end: a quarter of the steps of 16-bit words with a fold each (it sums whole 1.4 KB
/// segments in software GSO).
#[inline]
pub fn sum(data: &[u8], acc: u32) -> u32 {
    let mut wide = u64::from(acc);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        wide += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut pairs = words.remainder().chunks_exact(2);
    for p in &mut pairs {
        wide += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        wide += u64::from(*last) << 8;
    }
    while wide > 0xffff {
        wide = (wide & 0xffff) + (wide >> 16);
    }
    wide as u32
}

/// The finished value of a pseudo-header sum plus `data` (how a tests or a NIC completes a
/// partial checksum).
pub fn complete(partial: u16, data: &[u8]) -> u16 {
    !fold(sum(data, u32::from(partial)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set16(data: &mut [u8], at: usize, v: u16) {
        data[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn the_fast_sum_is_the_plain_one() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 31 + 7) as u8).collect();
        for n in [0, 1, 2, 3, 5, 64, 1001] {
            let slow: u32 = data[..n]
                .chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
                .sum();
            assert_eq!(sum(&data[..n], 0) as u16, fold(slow), "{n} bytes");
        }
    }

    proptest! {
        #[test]
        fn an_update_equals_a_recomputation(
            mut data in proptest::collection::vec(any::<u8>(), 8..200),
            at in 0usize..50, new in any::<u32>(),
        ) {
            let at = at % ((data.len() - 6) / 2) * 2 + 2; // even offset, clear of the checksum
            set16(&mut data, 0, 0);
            let c = checksum(&data);
            set16(&mut data, 0, c);
            let old = u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            // All-zero data is the one case where +0 and -0 differ (never a real header).
            prop_assume!(data[2..].iter().any(|&b| b != 0));
            let patched = update32(c, old, new);
            set16(&mut data, 0, patched);
            prop_assert_eq!(checksum(&data), 0, "a patched checksum verifies");
        }

        #[test]
        fn a_partial_update_completes_to_the_same_checksum(
            data in proptest::collection::vec(any::<u8>(), 0..100),
            pseudo in any::<u16>(), old in any::<u32>(), new in any::<u32>(),
        ) {
            // A partial sum of `pseudo + old` moved to `new` completes as if summed afresh.
            let before = fold(u32::from(pseudo) + (old >> 16) + (old & 0xffff));
            let after = update32_partial(before, old, new);
            let fresh = fold(u32::from(pseudo) + (new >> 16) + (new & 0xffff));
            prop_assert_eq!(complete(after, &data), complete(fresh, &data));
        }
    }

    #[test]
    fn rfc_1624_example() {
        // RFC 1624 section 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285 gives 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }
}
