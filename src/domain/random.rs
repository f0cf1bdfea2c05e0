//! Random identifiers and secrets, drawn from the operating system's CSPRNG.

use rand::{TryRng, rngs::SysRng};

/// The 62 characters of base62, in the order of their digit values.
pub(crate) const BASE62: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The operating system's random number generator failed. The service cannot
/// issue credentials without it and never falls back to a weaker source.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomUnavailable(#[from] rand::rngs::SysError);

/// Fills `out` with bytes from the operating system's CSPRNG.
pub(crate) fn fill(out: &mut [u8]) -> Result<(), RandomUnavailable> {
    SysRng.try_fill_bytes(out)?;
    Ok(())
}

/// `N` bytes from the operating system's CSPRNG, for keys.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomUnavailable> {
    let mut bytes = [0u8; N];
    fill(&mut bytes)?;
    Ok(bytes)
}

/// `len` characters drawn uniformly from [`BASE62`], about 5.95 bits each.
///
/// Bytes of 248 and above are rejected rather than reduced modulo 62, which
/// would make the first eight characters more likely than the rest.
pub(crate) fn base62(len: usize) -> Result<String, RandomUnavailable> {
    const ACCEPT_BELOW: u8 = 62 * 4;
    let mut out = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while out.len() < len {
        fill(&mut bytes)?;
        out.extend(
            bytes
                .iter()
                .filter(|&&b| b < ACCEPT_BELOW)
                .map(|&b| char::from(BASE62[usize::from(b % 62)]))
                .take(len - out.len()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_strings_have_the_requested_length_and_alphabet() {
        for len in [0, 1, 22, 54, 200] {
            let s = base62(len).expect("the OS RNG works in tests");
            assert_eq!(s.len(), len, "length of a {len}-character string");
            assert!(
                s.bytes().all(|b| BASE62.contains(&b)),
                "{s:?} has a character outside base62"
            );
        }
    }

    #[test]
    fn base62_uses_every_character_about_equally() {
        let sample = base62(62 * 2_000).expect("the OS RNG works in tests");
        let mut counts = [0u32; 256];
        for b in sample.bytes() {
            counts[usize::from(b)] += 1;
        }
        for &c in BASE62 {
            let n = counts[usize::from(c)];
            // Expected 2,000 each; 1,700..2,300 is more than 6 standard deviations.
            assert!(
                (1_700..=2_300).contains(&n),
                "{} appeared {n} times in 124,000 draws",
                char::from(c)
            );
        }
    }

    #[test]
    fn two_draws_differ() {
        let a = base62(22).expect("the OS RNG works in tests");
        let b = base62(22).expect("the OS RNG works in tests");
        assert_ne!(a, b, "two 131-bit draws collided");
    }
}
