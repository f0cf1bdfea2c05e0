use super::random::{self, BASE62, RandomUnavailable};

/// A client secret's value: what an application sends, with its client ID,
/// to authenticate.
///
/// ```text
/// cas_ 7Qk…(54 random base62 characters)…xT 0c9ZpA
/// ^^^^ prefix                                ^^^^^^ CRC32 of the rest, base62
/// ```
///
/// 64 characters from `[A-Za-z0-9_]`: the prefix lets secret scanners find
/// leaked values, the 54 random characters carry about 321 bits from the OS
/// CSPRNG, and the checksum lets this service (or a scanner) reject a
/// mistyped or made-up value without touching the database. No `:`, so it
/// fits unescaped in an HTTP Basic header.
///
/// The value is shown once, by `GenerateSecret`, and stored only as an
/// argon2id hash. This type has no `Display`, and its `Debug` prints nothing
/// of the value, so it cannot reach a log or an error message by accident;
/// [`ClientSecret::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

/// Why a value cannot be a client secret. Describes the fault, never the
/// value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedSecret {
    #[error("a client secret has exactly 64 characters")]
    Length,
    #[error("a client secret starts with \"cas_\"")]
    Prefix,
    #[error("a client secret has only letters, digits and one underscore")]
    Character,
    #[error("the client secret's checksum does not match: a character was probably mistyped")]
    Checksum,
}

impl ClientSecret {
    /// Every secret has exactly this many characters.
    pub const LEN: usize = 64;
    /// How every secret starts.
    pub const PREFIX: &'static str = "cas_";
    const CHECKSUM_LEN: usize = 6;
    const RANDOM_LEN: usize = Self::LEN - Self::PREFIX.len() - Self::CHECKSUM_LEN;
    /// How many trailing characters [`ClientSecret::hint`] shows.
    pub const HINT_LEN: usize = 4;

    /// Draws a new secret from the OS CSPRNG.
    pub fn generate() -> Result<Self, RandomUnavailable> {
        let mut value = String::with_capacity(Self::LEN);
        value.push_str(Self::PREFIX);
        value.push_str(&random::base62(Self::RANDOM_LEN)?);
        let checksum = checksum(value.as_bytes());
        value.push_str(&checksum);
        Ok(Self(value))
    }

    /// Accepts a value only if it has the shape and checksum of a secret this
    /// service issues. Costs a CRC over 58 bytes: far cheaper than a hash or a
    /// database lookup, which is why every caller checks this first.
    pub fn parse(value: &str) -> Result<Self, MalformedSecret> {
        if value.len() != Self::LEN {
            return Err(MalformedSecret::Length);
        }
        let Some(rest) = value.strip_prefix(Self::PREFIX) else {
            return Err(MalformedSecret::Prefix);
        };
        // The base62 alphabet is exactly the ASCII letters and digits.
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(MalformedSecret::Character);
        }
        let (body, sum) = value.split_at(Self::LEN - Self::CHECKSUM_LEN);
        if checksum(body.as_bytes()).as_bytes() != sum.as_bytes() {
            return Err(MalformedSecret::Checksum);
        }
        Ok(Self(value.to_owned()))
    }

    /// The last four characters: enough for a person to tell which secret an
    /// application holds, nothing that helps to guess it (they belong to the
    /// checksum).
    pub fn hint(&self) -> &str {
        &self.0[Self::LEN - Self::HINT_LEN..]
    }

    /// Another value that ends like `other`, so has its hint: what nobody
    /// can make without trying millions of values, made for tests. Its
    /// checksum does not hold.
    #[cfg(test)]
    pub(crate) fn with_hint_of(other: &Self) -> Self {
        let fresh = Self::generate().expect("the OS RNG works in tests");
        Self(format!(
            "{}{}",
            &fresh.0[..Self::LEN - Self::HINT_LEN],
            other.hint()
        ))
    }

    /// The value itself, for the one response that returns it and for the
    /// hash functions. Every other use is a leak.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// CRC32 of `body`, as 6 base62 digits, most significant first
/// (62^6 > 2^32, so every CRC fits).
fn checksum(body: &[u8]) -> String {
    let mut crc = crc32fast::hash(body);
    let mut digits = [b'0'; ClientSecret::CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    digits.iter().map(|&d| char::from(d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> ClientSecret {
        ClientSecret::generate().expect("the OS RNG works in tests")
    }

    #[test]
    fn a_generated_secret_has_the_documented_shape() {
        let secret = generated();
        let value = secret.expose();
        assert_eq!(value.len(), 64, "length of {value}");
        assert!(value.starts_with("cas_"), "prefix of {value}");
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{value} has a character outside [A-Za-z0-9_]"
        );
        assert!(!value.contains(':'), "{value} would break HTTP Basic");
        assert_eq!(value.matches('_').count(), 1, "only the prefix has '_'");
        assert_eq!(secret.hint(), &value[60..], "the hint is the last 4");
    }

    #[test]
    fn at_least_320_bits_of_the_secret_are_random() {
        let bits = ClientSecret::RANDOM_LEN as f64 * 62f64.log2();
        assert!(bits >= 320.0, "only {bits:.1} random bits");
    }

    #[test]
    fn a_generated_secret_parses_back() {
        for _ in 0..100 {
            let secret = generated();
            assert_eq!(ClientSecret::parse(secret.expose()), Ok(secret));
        }
    }

    #[test]
    fn every_single_character_typo_fails_the_checksum() {
        let secret = generated();
        let value = secret.expose().as_bytes();
        for position in ClientSecret::PREFIX.len()..ClientSecret::LEN {
            for &replacement in BASE62 {
                if replacement == value[position] {
                    continue;
                }
                let mut typo = value.to_vec();
                typo[position] = replacement;
                let typo = String::from_utf8(typo).expect("ASCII");
                assert_eq!(
                    ClientSecret::parse(&typo),
                    Err(MalformedSecret::Checksum),
                    "a typo at position {position} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn values_of_the_wrong_shape_say_what_is_wrong() {
        let valid = generated().expose().to_owned();
        let cases = [
            (String::new(), MalformedSecret::Length),
            (valid[..63].to_owned(), MalformedSecret::Length),
            (format!("{valid}x"), MalformedSecret::Length),
            (format!("cax_{}", &valid[4..]), MalformedSecret::Prefix),
            (
                format!("{}:{}", &valid[..10], &valid[11..]),
                MalformedSecret::Character,
            ),
            (
                format!("{}é{}", &valid[..10], &valid[12..]),
                MalformedSecret::Character,
            ),
            (
                format!("{}_{}", &valid[..10], &valid[11..]),
                MalformedSecret::Character,
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(
                ClientSecret::parse(&value).err(),
                Some(expected),
                "{value:?}"
            );
        }
    }

    #[test]
    fn debug_output_shows_nothing_of_the_value() {
        let secret = generated();
        let printed = format!("{secret:?} {:?}", Some(&secret));
        assert!(!printed.contains(&secret.expose()[4..12]), "{printed}");
        assert!(!printed.contains(secret.hint()), "{printed}");
    }

    #[test]
    fn the_checksum_is_crc32_in_six_base62_digits() {
        // CRC32("") = 0 and CRC32("a") = 0xE8B7BE43 = 3904355907.
        assert_eq!(checksum(b""), "000000");
        // 3904355907 = 4*62^5 + 16*62^4 + 14*62^3 + 17*62^2 + 20*62 + 23
        let expected: String = [4, 16, 14, 17, 20, 23]
            .iter()
            .map(|&d| char::from(BASE62[d]))
            .collect();
        assert_eq!(checksum(b"a"), expected);
    }
}
