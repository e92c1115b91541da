//! A payload any slice of which can be rebuilt from its offset, so a reader can check bytes as
//! they come without keeping what was sent.

/// `len` bytes of a stream identified by `seed`, starting at `offset`: neither a shift nor a
/// swap of chunks goes unnoticed.
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut at = offset;
    while out.len() < len {
        let word = splitmix64(seed ^ (at / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes();
        let from = (at % 8) as usize;
        let take = (8 - from).min(len - out.len());
        out.extend_from_slice(&word[from..from + take]);
        at += take as u64;
    }
    out
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_slice_is_rebuilt_from_its_offset() {
        let whole = pattern(7, 0, 100);
        assert_eq!(pattern(7, 13, 50), whole[13..63]);
        assert_ne!(pattern(8, 0, 100), whole);
    }
}
