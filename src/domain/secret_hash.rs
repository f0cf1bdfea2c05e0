use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{
        self,
        phc::{Output, ParamsString, Salt},
    },
};

use super::{ClientSecret, Invalid, RandomUnavailable, random};

/// The cost of argon2id: memory in KiB, passes over it, and lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl HashParams {
    /// The floor, OWASP's recommendation for argon2id: 19 MiB, 2 passes,
    /// 1 lane. Nothing is hashed, nor accepted from storage, below it.
    pub const MINIMUM: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    /// The ceiling: 256 MiB, 16 passes, 8 lanes, each dimension well above
    /// what a service that verifies on its hot path would configure, and no
    /// further. RFC 9106 (§4) recommends 64 MiB, 3 passes and 4 lanes where
    /// 2 GiB per computation cannot be had, as on a server that runs one per
    /// core for every cold validation; OWASP's argon2id options trade
    /// memory for passes between 46 MiB with 1 pass and 7 MiB with 5, around
    /// the 19 MiB and 2 passes of [`HashParams::MINIMUM`]. The ceiling
    /// leaves four times RFC 9106's memory, five times its passes and twice
    /// its lanes. Lanes run one after the other here, so a computation's time
    /// is memory times passes: at the ceiling, a hundred times the floor's
    /// work, about 3.5 s of one core (measured beside the floor's 75 ms),
    /// against about a minute at the 1 GiB and 64 passes once allowed.
    ///
    /// It bounds the configured cost, and what is accepted from storage: a
    /// stored hash above it is corruption or an attack on a hashing thread
    /// (a row claiming terabytes), and is not verified.
    pub const MAXIMUM: Self = Self {
        memory_kib: 256 * 1024,
        iterations: 16,
        parallelism: 8,
    };

    /// Accepts parameters at or above [`HashParams::MINIMUM`] in every
    /// dimension, so that no configuration can weaken stored hashes, and at
    /// most [`HashParams::MAXIMUM`].
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, Invalid> {
        let params = Self {
            memory_kib,
            iterations,
            parallelism,
        };
        if !params.at_least(Self::MINIMUM) {
            return Err(Invalid(format!(
                "argon2id parameters must be at least m={} KiB, t={}, p={}; got m={memory_kib}, \
                 t={iterations}, p={parallelism}",
                Self::MINIMUM.memory_kib,
                Self::MINIMUM.iterations,
                Self::MINIMUM.parallelism,
            )));
        }
        if !Self::MAXIMUM.at_least(params) {
            return Err(Invalid(format!(
                "argon2id parameters must be at most m={} KiB, t={}, p={}; got m={memory_kib}, \
                 t={iterations}, p={parallelism}",
                Self::MAXIMUM.memory_kib,
                Self::MAXIMUM.iterations,
                Self::MAXIMUM.parallelism,
            )));
        }
        Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| Invalid(format!("argon2id refuses these parameters: {e}")))?;
        Ok(params)
    }

    /// Whether these parameters cost at least `floor` in every dimension
    /// (memory, passes, lanes).
    pub fn at_least(self, floor: Self) -> bool {
        self.memory_kib >= floor.memory_kib
            && self.iterations >= floor.iterations
            && self.parallelism >= floor.parallelism
    }

    /// The 1 KiB blocks a computation at these parameters fills.
    fn block_count(self) -> usize {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_or(self.memory_kib as usize, |params| params.block_count())
    }

    /// Within the floor and the ceiling.
    fn within_bounds(self) -> bool {
        self.at_least(Self::MINIMUM) && Self::MAXIMUM.at_least(self)
    }
}

impl Default for HashParams {
    fn default() -> Self {
        Self::MINIMUM
    }
}

/// As a PHC string spells them: `m=19456,t=2,p=1`.
impl std::fmt::Display for HashParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "m={},t={},p={}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

/// A secret as it is stored: an argon2id PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), salted with 16 bytes
/// from the OS CSPRNG.
///
/// Verification reads the parameters from the string itself, so raising the
/// configured cost later keeps older hashes verifiable; [`SecretHash::params`]
/// tells whether one is below it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash {
    phc: String,
    /// Those the PHC string names, read when it was made or parsed.
    params: HashParams,
}

/// Hashing could not run. Never says anything of the value being hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error("argon2id failed: {0}")]
    Argon2(password_hash::Error),
}

impl SecretHash {
    const SALT_LEN: usize = 16;

    /// Hashes `secret` with argon2id at `params`, in `memory`. Takes tens of
    /// milliseconds of one core: call it off the async runtime (see
    /// `crate::hashing`).
    pub fn compute(
        secret: &ClientSecret,
        params: HashParams,
        memory: &mut Memory,
    ) -> Result<Self, HashError> {
        let mut salt = [0u8; Self::SALT_LEN];
        random::fill(&mut salt)?;
        let argon2_params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| HashError::Argon2(e.into()))?;
        let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
        argon2id(secret, &salt, &argon2_params, &mut output, memory)?;
        let phc = PasswordHash {
            algorithm: ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&argon2_params).map_err(HashError::Argon2)?,
            salt: Some(Salt::new(&salt).map_err(|e| HashError::Argon2(e.into()))?),
            hash: Some(Output::new(&output).map_err(|e| HashError::Argon2(e.into()))?),
        };
        Ok(Self {
            phc: phc.to_string(),
            params,
        })
    }

    /// Accepts a PHC string read back from storage only if it is argon2id
    /// between [`HashParams::MINIMUM`] and [`HashParams::MAXIMUM`]: a weaker
    /// hash in the database, or one that would tie up a hashing thread, is
    /// treated as corruption, not verified.
    pub fn parse(phc: String) -> Result<Self, Invalid> {
        let parsed =
            PasswordHash::new(&phc).map_err(|e| Invalid(format!("not a PHC string: {e}")))?;
        if parsed.algorithm != ARGON2ID_IDENT {
            return Err(Invalid(format!("{} is not argon2id", parsed.algorithm)));
        }
        if parsed.version != Some(Version::V0x13.into()) {
            return Err(Invalid("not argon2 version 19".into()));
        }
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err(Invalid("the PHC string lacks a salt or a hash".into()));
        }
        let params = Params::try_from(&parsed)
            .map_err(|e| Invalid(format!("unreadable argon2 parameters: {e}")))?;
        let params = HashParams {
            memory_kib: params.m_cost(),
            iterations: params.t_cost(),
            parallelism: params.p_cost(),
        };
        if !params.within_bounds() {
            return Err(Invalid(format!(
                "argon2id parameters outside the floor and the ceiling: {params:?}"
            )));
        }
        Ok(Self { phc, params })
    }

    /// The cost this hash was computed at.
    pub fn params(&self) -> HashParams {
        self.params
    }

    /// Whether `secret` is the value this hash was computed from, computed
    /// in `memory`. The final comparison is constant-time; the cost is one
    /// argon2id computation, so call it off the async runtime too.
    pub fn matches(&self, secret: &ClientSecret, memory: &mut Memory) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(&self.phc).map_err(|e| HashError::Argon2(e.into()))?;
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return Err(HashError::Argon2(password_hash::Error::EncodingInvalid));
        };
        let params = Params::try_from(&parsed).map_err(HashError::Argon2)?;
        let mut output = [0u8; Output::MAX_LENGTH];
        let output = &mut output[..expected.len()];
        argon2id(secret, salt, &params, output, memory)?;
        // Output's equality is constant-time.
        let computed = Output::new(output).map_err(|e| HashError::Argon2(e.into()))?;
        Ok(&computed == expected)
    }

    /// The PHC string, for storage.
    pub fn as_str(&self) -> &str {
        &self.phc
    }
}

/// The memory argon2id fills: 1 KiB blocks, as many as the cost asks for.
/// Kept by each hashing thread and reused, so that a computation does not
/// fault in 19 MiB of fresh pages from the kernel every time.
///
/// It grows to the largest cost it meets; [`Memory::give_back_beyond`]
/// returns what a costlier stored hash took.
#[derive(Default)]
pub struct Memory(Vec<Block>);

impl Memory {
    /// Frees what this memory holds beyond what a computation at `params`
    /// fills: after a verify of a hash costlier than the configured cost, a
    /// thread keeps only what the configured cost needs, not the largest
    /// cost any stored row ever asked of it.
    pub fn give_back_beyond(&mut self, params: HashParams) {
        let blocks = params.block_count();
        if self.0.capacity() > blocks {
            self.0.truncate(blocks);
            self.0.shrink_to_fit();
        }
    }

    /// The 1 KiB blocks held, filled or not.
    pub fn blocks_held(&self) -> usize {
        self.0.capacity()
    }
}

/// Runs argon2id (v19) over `secret` and `salt` into `output`, growing
/// `memory` if `params` needs more than it has.
fn argon2id(
    secret: &ClientSecret,
    salt: &[u8],
    params: &Params,
    output: &mut [u8],
    memory: &mut Memory,
) -> Result<(), HashError> {
    let blocks = params.block_count();
    if memory.0.len() < blocks {
        // Exactly what is needed: the default growth could double it.
        memory.0.reserve_exact(blocks - memory.0.len());
        memory.0.resize(blocks, Block::default());
    }
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            secret.expose().as_bytes(),
            salt,
            output,
            &mut memory.0[..blocks],
        )
        .map_err(|e| HashError::Argon2(e.into()))
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(<argon2id>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ClientSecret {
        ClientSecret::generate().expect("the OS RNG works in tests")
    }

    fn hash(secret: &ClientSecret) -> SecretHash {
        SecretHash::compute(secret, HashParams::MINIMUM, &mut Memory::default())
            .expect("hashing works")
    }

    fn matches(hash: &SecretHash, secret: &ClientSecret) -> bool {
        hash.matches(secret, &mut Memory::default())
            .expect("verify runs")
    }

    #[test]
    fn a_hash_matches_its_secret_and_no_other() {
        let (right, wrong) = (secret(), secret());
        let hash = hash(&right);
        assert!(matches(&hash, &right), "own secret");
        assert!(!matches(&hash, &wrong), "another secret");
    }

    #[test]
    fn a_hash_is_argon2id_at_the_configured_cost_and_parses_back() {
        let hash = hash(&secret());
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            hash.as_str()
        );
        assert_eq!(SecretHash::parse(hash.as_str().to_owned()), Ok(hash));
    }

    #[test]
    fn two_hashes_of_one_secret_differ_by_their_salt() {
        let secret = secret();
        assert_ne!(hash(&secret), hash(&secret));
    }

    #[test]
    fn the_hash_contains_nothing_of_the_value() {
        let secret = secret();
        let hash = hash(&secret);
        let random_part = &secret.expose()[4..60];
        for window in random_part.as_bytes().windows(8) {
            let window = std::str::from_utf8(window).expect("ASCII");
            assert!(!hash.as_str().contains(window), "{window} is in the hash");
        }
        assert!(
            !format!("{hash:?}").contains("$argon2id$v"),
            "Debug prints the hash"
        );
    }

    #[test]
    fn parameters_below_the_floor_or_above_the_ceiling_are_refused() {
        for (m, t, p) in [
            (19_455, 2, 1),
            (19_456, 1, 1),
            (19_456, 2, 0),
            (8, 1, 1),
            (256 * 1024 + 1, 2, 1),
            (19_456, 17, 1),
            (19_456, 2, 9),
            (1024 * 1024, 64, 16),
        ] {
            assert!(HashParams::new(m, t, p).is_err(), "m={m} t={t} p={p}");
        }
        assert_eq!(HashParams::new(19_456, 2, 1), Ok(HashParams::MINIMUM));
        assert_eq!(
            HashParams::new(256 * 1024, 16, 8),
            Ok(HashParams::MAXIMUM),
            "the ceiling itself is allowed"
        );
        for (m, t, p) in [(65_536, 3, 4), (47_104, 2, 1), (131_072, 4, 2)] {
            assert!(HashParams::new(m, t, p).is_ok(), "m={m} t={t} p={p}");
        }
    }

    #[test]
    fn a_hash_knows_the_cost_it_was_computed_at_or_read_with() {
        let computed = hash(&secret());
        assert_eq!(computed.params(), HashParams::MINIMUM, "computed");
        let parsed = SecretHash::parse(computed.as_str().to_owned()).expect("parses back");
        assert_eq!(parsed.params(), HashParams::MINIMUM, "parsed back");
        let stronger = "$argon2id$v=19$m=65536,t=3,p=4$\
                        c29tZXNhbHRzb21lc2FsdA$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU";
        let stronger = SecretHash::parse(stronger.to_owned()).expect("within the bounds");
        assert_eq!(
            stronger.params(),
            HashParams::new(65_536, 3, 4).expect("valid"),
            "read from the PHC string"
        );
        assert_eq!(stronger.params().to_string(), "m=65536,t=3,p=4");
        assert!(
            stronger.params().at_least(HashParams::MINIMUM)
                && !HashParams::MINIMUM.at_least(stronger.params()),
            "the stronger is at least the floor, not the other way round"
        );
    }

    #[test]
    fn memory_grown_for_a_costlier_hash_is_given_back_down_to_the_configured_cost() {
        let secret = secret();
        let costlier = HashParams::new(65_536, 2, 1).expect("valid");
        let mut memory = Memory::default();
        let hash = SecretHash::compute(&secret, costlier, &mut memory).expect("hashing works");
        assert_eq!(
            memory.blocks_held(),
            65_536,
            "grown to exactly the cost it met"
        );
        memory.give_back_beyond(costlier);
        assert_eq!(
            memory.blocks_held(),
            65_536,
            "nothing beyond it to give back"
        );
        memory.give_back_beyond(HashParams::MINIMUM);
        assert_eq!(memory.blocks_held(), 19_456, "given back down to the floor");
        assert!(
            hash.matches(&secret, &mut memory).expect("verify runs"),
            "memory given back still serves a costlier verify"
        );
        assert_eq!(memory.blocks_held(), 65_536, "grown again for it");
    }

    #[test]
    fn stored_hashes_that_are_weak_too_costly_or_not_argon2id_are_refused() {
        let salt_and_hash = "c29tZXNhbHRzb21lc2FsdA$YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU";
        let refused = [
            String::new(),
            "plain text".to_owned(),
            format!("$argon2i$v=19$m=19456,t=2,p=1${salt_and_hash}"),
            format!("$argon2d$v=19$m=19456,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=16$m=19456,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=4096,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=19456,t=1,p=1${salt_and_hash}"),
            // A row claiming 4 TiB would tie up a hashing thread.
            format!("$argon2id$v=19$m=4294967295,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=19456,t=4294967295,p=1${salt_and_hash}"),
            // Just above the ceiling, in each dimension.
            format!("$argon2id$v=19$m=262145,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=19456,t=17,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=19456,t=2,p=9${salt_and_hash}"),
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA".to_owned(),
        ];
        for phc in refused {
            assert!(
                SecretHash::parse(phc.clone()).is_err(),
                "{phc:?} was accepted"
            );
        }
        for accepted in [
            format!("$argon2id$v=19$m=19456,t=2,p=1${salt_and_hash}"),
            format!("$argon2id$v=19$m=262144,t=16,p=8${salt_and_hash}"),
        ] {
            assert!(SecretHash::parse(accepted.clone()).is_ok(), "{accepted:?}");
        }
    }
}

#[cfg(test)]
mod compatibility {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_phc_functions() {
        let secret = ClientSecret::generate().expect("RNG");
        let mut memory = Memory::default();
        // Ours, checked by the crate's verifier.
        let ours = SecretHash::compute(&secret, HashParams::MINIMUM, &mut memory).expect("hash");
        let parsed = PasswordHash::new(ours.as_str()).expect("PHC");
        assert!(
            Argon2::default()
                .verify_password(secret.expose().as_bytes(), &parsed)
                .is_ok()
        );
        // The crate's, checked by ours, with memory reused from the first.
        let theirs = Argon2::default()
            .hash_password_with_salt(secret.expose().as_bytes(), b"sixteen-byte-slt")
            .expect("hash")
            .to_string();
        let theirs = SecretHash::parse(theirs).expect("argon2id at the floor");
        assert!(theirs.matches(&secret, &mut memory).expect("verify"));
        let other = ClientSecret::generate().expect("RNG");
        assert!(!theirs.matches(&other, &mut memory).expect("verify"));
    }
}
