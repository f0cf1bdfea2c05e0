//! Successful verifications, remembered so that a client checked once is
//! answered without argon2 and without the database.
//!
//! An entry is keyed by client ID and holds an HMAC of the client ID and the
//! secret under a key drawn at start and never stored, so the cache can tell
//! "this is the value that verified" without holding the value or anything
//! from which it could be recovered. Only successes are remembered: a
//! pending, revoked, discarded or wrong secret never enters.
//!
//! # The consistency rule
//!
//! Every entry carries the moment the database was read for it. An entry is
//! trusted only if that moment is
//! - within the revalidation interval, and
//! - after the last invalidation that concerns its client: a change of the
//!   client's active secret on this replica ([`CredentialCache::forget`]) or
//!   on another one (the PostgreSQL notification, see `crate::invalidation`),
//!   or a reset of the whole cache ([`CredentialCache::forget_all`]) when
//!   notifications may have been missed.
//!
//! Besides its entry, a verified pair leaves a smaller *proof* (the same HMAC
//! and the secret's id), kept far longer than an entry and for more clients.
//! A pair whose entry is gone (idle for ten minutes, or evicted) but whose
//! proof remains is answered like an untrusted entry: one indexed read
//! confirms it, without argon2 and without spending a throttle budget. So a
//! client that logs users in once an hour never pays for a verify again, and
//! nobody can make it need one.
//!
//! An entry that is not trusted is not thrown away: it is confirmed against
//! the database (a cheap indexed read, no argon2) before it is used again.
//! So a revoked secret validates on no replica later than the revalidation
//! interval after its revocation, even if a notification is lost, and an
//! invalidation never sends warm clients back to argon2.
//!
//! The rule depends on the moment being taken *before* the read, and on
//! checks that start on either side of an invalidation never sharing an
//! answer. The API keeps both: the only way to remember a verification is
//! with the [`Read`] that [`CredentialCache::before_read`] handed out before
//! the database was read, and that read says which [`Epoch`] of its client
//! it belongs to. Callers never see a time.

use std::{
    hash::{BuildHasher, RandomState},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::ValidClient;
use crate::config::CacheSettings;
use crate::domain::{ClientId, ClientSecret, RandomUnavailable, random_bytes};

/// An HMAC-SHA256 of a client ID and a secret under this process's key:
/// equal for equal pairs, and nothing else to anyone without the key. A
/// check computes it once ([`CredentialCache::fingerprint`]) and uses it for
/// the lookup, for coalescing identical checks, and for remembering.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Constant-time equality: the timing says nothing of how close a wrong
    /// secret came.
    fn is(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprint(..)")
    }
}

/// A moment of this process's life: nanoseconds since the cache was made.
type Moment = u64;

/// Which invalidations of a client had happened when a read began. Two
/// checks of one pair in the same epoch may share an answer; checks in
/// different epochs may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(Moment);

/// A database read about one client, begun at a moment the cache took
/// itself. Whatever the read finds can be remembered through it, once.
#[derive(Debug)]
#[must_use = "a read is how what it finds is remembered"]
pub struct Read {
    client_id: ClientId,
    at: Moment,
    epoch: Epoch,
}

impl Read {
    /// The epoch of its client this read belongs to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
}

/// What a read found: the client's active secret, and the answer a check of
/// it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub secret_id: Uuid,
    pub answer: ValidClient,
}

/// What the cache knows of a client ID and secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Trusted: valid, as the secret it names, with its answer.
    Fresh(Verified),
    /// Verified once, but not trusted any more: valid if `secret_id` is
    /// still the client's active secret.
    Stale { secret_id: Uuid },
    /// Unknown: verify it the slow way.
    Miss,
}

/// An entry nobody has used for this long is dropped to make room.
const IDLE_EXPIRY: Duration = Duration::from_secs(600);

/// A proof nobody has used for this long is dropped.
const PROOF_IDLE_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// Proofs kept per entry the cache may hold: a proof is about a fifth of an
/// entry's size.
const PROOFS_PER_ENTRY: u64 = 4;

/// Slots of the table of per-client invalidation moments. Two clients in
/// one slot only revalidate each other's entries needlessly.
const INVALIDATION_SLOTS: usize = 4096;

/// A verification this process has seen succeed.
#[derive(Debug)]
struct Entry {
    verified: Verified,
    mac: Fingerprint,
    /// When the database was read for it.
    read_at: Moment,
}

/// What remains of a verification once its entry is gone: enough to know
/// the pair verified, and which secret it was.
#[derive(Debug, Clone, Copy)]
struct Proof {
    mac: Fingerprint,
    secret_id: Uuid,
}

/// The verified-credentials cache; its size is bounded by configuration.
pub struct CredentialCache {
    entries: moka::sync::Cache<ClientId, Arc<Entry>>,
    proofs: moka::sync::Cache<ClientId, Proof>,
    /// HMAC-SHA256 keyed with random bytes, cloned for each use.
    mac: Hmac<Sha256>,
    revalidate_after: Duration,
    origin: Instant,
    /// Entries read before this moment are not trusted ([`Self::forget_all`]).
    trusted_since: AtomicU64,
    /// Per slot of client IDs: entries read before this moment are not
    /// trusted ([`Self::forget`]).
    forgotten: Box<[AtomicU64]>,
    slots: RandomState,
}

impl CredentialCache {
    /// A cache of at most `settings.capacity` clients, each trusted for
    /// `settings.revalidate` between checks against the database.
    pub fn new(settings: &CacheSettings) -> Result<Self, RandomUnavailable> {
        // One block of key, the most HMAC-SHA256 uses without hashing it.
        let key: [u8; 64] = random_bytes()?;
        let mac = <Hmac<Sha256> as KeyInit>::new(&key.into());
        Ok(Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_idle(IDLE_EXPIRY)
                .build(),
            proofs: moka::sync::Cache::builder()
                .max_capacity(settings.capacity.saturating_mul(PROOFS_PER_ENTRY))
                .time_to_idle(PROOF_IDLE_EXPIRY)
                .build(),
            mac,
            revalidate_after: settings.revalidate,
            origin: Instant::now(),
            trusted_since: AtomicU64::new(0),
            forgotten: (0..INVALIDATION_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            slots: RandomState::new(),
        })
    }

    /// The pair's [`Fingerprint`]: one HMAC-SHA256.
    pub fn fingerprint(&self, client_id: &ClientId, secret: &ClientSecret) -> Fingerprint {
        let mut mac = self.mac.clone();
        mac.update(client_id.as_str().as_bytes());
        mac.update(b":");
        mac.update(secret.expose().as_bytes());
        Fingerprint(mac.finalize().into_bytes().into())
    }

    /// What the cache knows of the pair whose fingerprint this is. Costs one
    /// map lookup, and one more if its entry is not there.
    pub fn lookup(&self, client_id: &ClientId, fingerprint: &Fingerprint) -> Lookup {
        if let Some(entry) = self.entries.get(client_id)
            && entry.mac.is(fingerprint)
        {
            return if self.trusts(client_id, entry.read_at) {
                Lookup::Fresh(entry.verified.clone())
            } else {
                Lookup::Stale {
                    secret_id: entry.verified.secret_id,
                }
            };
        }
        match self.proofs.get(client_id) {
            Some(proof) if proof.mac.is(fingerprint) => Lookup::Stale {
                secret_id: proof.secret_id,
            },
            _ => Lookup::Miss,
        }
    }

    /// Whether what `read` found may still be answered: it began within the
    /// revalidation interval, and after the last invalidation of its client.
    pub fn still_trusts(&self, read: &Read) -> bool {
        self.trusts(&read.client_id, read.at)
    }

    fn trusts(&self, client_id: &ClientId, read_at: Moment) -> bool {
        let age = Duration::from_nanos(self.now().saturating_sub(read_at));
        read_at > self.invalidated(client_id) && age < self.revalidate_after
    }

    /// Call before reading the database about `client_id`; hand what the
    /// read finds to [`Self::remember`] with the returned [`Read`].
    pub fn before_read(&self, client_id: &ClientId) -> Read {
        let epoch = Epoch(self.invalidated(client_id));
        Read {
            client_id: client_id.clone(),
            at: self.now(),
            epoch,
        }
    }

    /// Remembers that the pair of `fingerprint` is the client's active
    /// secret, as `read` found it. If an invalidation of the client came
    /// after the read began, the entry is born untrusted: its first use
    /// confirms it against the database.
    pub fn remember(&self, read: Read, fingerprint: Fingerprint, verified: Verified) {
        self.proofs.insert(
            read.client_id.clone(),
            Proof {
                mac: fingerprint,
                secret_id: verified.secret_id,
            },
        );
        self.entries.insert(
            read.client_id,
            Arc::new(Entry {
                verified,
                mac: fingerprint,
                read_at: read.at,
            }),
        );
    }

    /// `client_id`'s active secret changed: nothing read before now is
    /// trusted for it, and its entry goes.
    pub fn forget(&self, client_id: &ClientId) {
        let now = self.now();
        self.forgotten[self.slot(client_id)].fetch_max(now, Ordering::AcqRel);
        self.entries.invalidate(client_id);
        self.proofs.invalidate(client_id);
    }

    /// The database says the pair of `fingerprint` is no longer the
    /// client's active secret: its entry and proof go, and only they (an
    /// entry or proof of another value of the client stays, and no epoch
    /// ends: whoever still presents a revoked value cannot make the current
    /// one need a verify).
    pub fn discard(&self, client_id: &ClientId, fingerprint: &Fingerprint) {
        use moka::ops::compute::Op;
        self.entries
            .entry_by_ref(client_id)
            .and_compute_with(|entry| match entry {
                Some(entry) if entry.value().mac.is(fingerprint) => Op::Remove,
                _ => Op::Nop,
            });
        self.proofs
            .entry_by_ref(client_id)
            .and_compute_with(|proof| match proof {
                Some(proof) if proof.value().mac.is(fingerprint) => Op::Remove,
                _ => Op::Nop,
            });
    }

    /// Changes may have been missed: nothing read before now is trusted
    /// until the database confirms it.
    pub fn forget_all(&self) {
        self.trusted_since.fetch_max(self.now(), Ordering::AcqRel);
    }

    /// How many clients have an entry (after pending evictions are applied).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops `client_id`'s entry as idle expiry or eviction would, leaving
    /// its proof.
    #[cfg(test)]
    pub(crate) fn evict(&self, client_id: &ClientId) {
        self.entries.invalidate(client_id);
    }

    fn now(&self) -> Moment {
        // Starts at 1, so that nothing is ever read at moment 0, before
        // every invalidation.
        self.origin
            .elapsed()
            .as_nanos()
            .min(u128::from(u64::MAX - 1)) as u64
            + 1
    }

    /// The last invalidation that concerns `client_id`.
    fn invalidated(&self, client_id: &ClientId) -> Moment {
        let slot = &self.forgotten[self.slot(client_id)];
        slot.load(Ordering::Acquire)
            .max(self.trusted_since.load(Ordering::Acquire))
    }

    fn slot(&self, client_id: &ClientId) -> usize {
        self.slots.hash_one(client_id) as usize % INVALIDATION_SLOTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrganizationId;

    fn new_cache(capacity: u64, revalidate: Duration) -> CredentialCache {
        CredentialCache::new(&CacheSettings {
            capacity,
            revalidate,
        })
        .expect("the OS RNG works in tests")
    }

    fn pair() -> (ClientId, ClientSecret) {
        (
            ClientId::generate().expect("RNG"),
            ClientSecret::generate().expect("RNG"),
        )
    }

    fn verified() -> Verified {
        Verified {
            secret_id: Uuid::now_v7(),
            answer: ValidClient {
                organization_id: OrganizationId::parse("org".into()).expect("valid"),
                domain: "login.example".into(),
            },
        }
    }

    /// Remembers the pair as found by `read`; returns what was remembered.
    fn remember_from(
        cache: &CredentialCache,
        read: Read,
        client_id: &ClientId,
        secret: &ClientSecret,
    ) -> Verified {
        let verified = verified();
        cache.remember(read, cache.fingerprint(client_id, secret), verified.clone());
        verified
    }

    fn remember(cache: &CredentialCache, client_id: &ClientId, secret: &ClientSecret) -> Verified {
        remember_from(cache, cache.before_read(client_id), client_id, secret)
    }

    fn lookup(cache: &CredentialCache, client_id: &ClientId, secret: &ClientSecret) -> Lookup {
        cache.lookup(client_id, &cache.fingerprint(client_id, secret))
    }

    #[test]
    fn a_remembered_pair_is_fresh_and_any_other_value_misses() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        assert_eq!(lookup(&cache, &client_id, &secret), Lookup::Miss, "empty");
        let verified = remember(&cache, &client_id, &secret);
        assert_eq!(
            lookup(&cache, &client_id, &secret),
            Lookup::Fresh(verified),
            "a fresh hit, with the remembered secret and answer"
        );
        let (other_client, other_secret) = pair();
        assert_eq!(lookup(&cache, &client_id, &other_secret), Lookup::Miss);
        assert_eq!(lookup(&cache, &other_client, &secret), Lookup::Miss);
    }

    #[test]
    fn an_entry_older_than_the_interval_is_stale_until_confirmed() {
        let cache = new_cache(10, Duration::from_millis(20));
        let (client_id, secret) = pair();
        let verified = remember(&cache, &client_id, &secret);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            lookup(&cache, &client_id, &secret),
            Lookup::Stale {
                secret_id: verified.secret_id
            },
            "past the interval"
        );
        remember_from(&cache, cache.before_read(&client_id), &client_id, &secret);
        assert!(
            matches!(lookup(&cache, &client_id, &secret), Lookup::Fresh(_)),
            "a new read makes it fresh"
        );
    }

    #[test]
    fn forgetting_a_client_drops_it_and_only_it() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (a, a_secret) = pair();
        let (b, b_secret) = pair();
        remember(&cache, &a, &a_secret);
        remember(&cache, &b, &b_secret);
        cache.forget(&a);
        assert_eq!(lookup(&cache, &a, &a_secret), Lookup::Miss, "a is gone");
        assert!(
            matches!(lookup(&cache, &b, &b_secret), Lookup::Fresh(_)),
            "b is untouched"
        );
    }

    #[test]
    fn after_forgetting_everything_entries_need_confirming_and_then_are_trusted() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        remember(&cache, &client_id, &secret);
        cache.forget_all();
        assert!(
            matches!(lookup(&cache, &client_id, &secret), Lookup::Stale { .. }),
            "an entry read before the reset is not trusted"
        );
        remember(&cache, &client_id, &secret);
        assert!(
            matches!(lookup(&cache, &client_id, &secret), Lookup::Fresh(_)),
            "a read after the reset is"
        );
    }

    #[test]
    fn what_was_read_before_an_invalidation_is_never_trusted() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        let read = cache.before_read(&client_id);
        let epoch = read.epoch();
        cache.forget(&client_id); // an activation lands mid-verification
        remember_from(&cache, read, &client_id, &secret);
        assert!(
            matches!(lookup(&cache, &client_id, &secret), Lookup::Stale { .. }),
            "born untrusted"
        );
        assert_ne!(
            cache.before_read(&client_id).epoch(),
            epoch,
            "checks before and after the invalidation are in different epochs"
        );
    }

    #[test]
    fn reads_with_no_invalidation_between_them_share_an_epoch() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, _) = pair();
        let first = cache.before_read(&client_id).epoch();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(cache.before_read(&client_id).epoch(), first);
        cache.forget_all();
        assert_ne!(
            cache.before_read(&client_id).epoch(),
            first,
            "a reset starts a new epoch for every client"
        );
    }

    #[test]
    fn an_entry_is_as_old_as_its_database_read() {
        let cache = new_cache(10, Duration::from_millis(20));
        let (client_id, secret) = pair();
        let read = cache.before_read(&client_id);
        std::thread::sleep(Duration::from_millis(30)); // a slow verify
        remember_from(&cache, read, &client_id, &secret);
        assert!(
            matches!(lookup(&cache, &client_id, &secret), Lookup::Stale { .. }),
            "its age counts from the read, not from remembering"
        );
    }

    #[test]
    fn the_cache_holds_no_more_than_its_capacity() {
        let cache = new_cache(50, Duration::from_secs(60));
        for _ in 0..1_000 {
            let (client_id, secret) = pair();
            remember(&cache, &client_id, &secret);
        }
        assert!(cache.len() <= 50, "{} entries", cache.len());
    }

    #[test]
    fn entries_hold_nothing_of_the_value() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        remember(&cache, &client_id, &secret);
        let entry = cache.entries.get(&client_id).expect("remembered");
        let printed = format!("{entry:?}");
        assert!(!printed.contains(&secret.expose()[4..12]), "{printed}");
        // Another process (another key) derives another MAC from the same pair.
        let other = new_cache(10, Duration::from_secs(60));
        let fingerprint = cache.fingerprint(&client_id, &secret);
        assert_ne!(
            fingerprint,
            other.fingerprint(&client_id, &secret),
            "the key is random per process"
        );
        assert_eq!(entry.mac, fingerprint, "the entry holds the MAC");
    }

    #[test]
    fn a_pair_whose_entry_is_gone_keeps_its_proof_until_discarded() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        let verified = remember(&cache, &client_id, &secret);
        cache.evict(&client_id);
        assert_eq!(
            lookup(&cache, &client_id, &secret),
            Lookup::Stale {
                secret_id: verified.secret_id
            },
            "its proof asks for one confirming read"
        );
        let (_, other) = pair();
        assert_eq!(lookup(&cache, &client_id, &other), Lookup::Miss);
        cache.discard(&client_id, &cache.fingerprint(&client_id, &other));
        assert!(
            matches!(lookup(&cache, &client_id, &secret), Lookup::Stale { .. }),
            "discarding another value leaves it"
        );
        cache.discard(&client_id, &cache.fingerprint(&client_id, &secret));
        assert_eq!(
            lookup(&cache, &client_id, &secret),
            Lookup::Miss,
            "discarded"
        );
    }

    #[test]
    fn discarding_a_revoked_value_leaves_the_current_one_trusted() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, old) = pair();
        let (_, current) = pair();
        remember(&cache, &client_id, &old);
        remember(&cache, &client_id, &current);
        cache.discard(&client_id, &cache.fingerprint(&client_id, &old));
        assert!(
            matches!(lookup(&cache, &client_id, &current), Lookup::Fresh(_)),
            "whoever presents a revoked value cannot make the current one need a read"
        );
    }

    #[test]
    fn a_read_is_trusted_within_the_interval_and_until_an_invalidation() {
        let cache = new_cache(10, Duration::from_millis(30));
        let (client_id, _) = pair();
        let read = cache.before_read(&client_id);
        assert!(cache.still_trusts(&read), "just read");
        std::thread::sleep(Duration::from_millis(40));
        assert!(!cache.still_trusts(&read), "older than the interval");
        let read = cache.before_read(&client_id);
        cache.forget(&client_id);
        assert!(!cache.still_trusts(&read), "overtaken by an invalidation");
        let read = cache.before_read(&client_id);
        cache.forget_all();
        assert!(!cache.still_trusts(&read), "overtaken by a reset");
    }
}
