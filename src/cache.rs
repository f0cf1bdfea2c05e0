//! Successful verifications, remembered so that a client checked once is
//! answered without argon2 and without the database.
//!
//! An entry is keyed by client ID and holds an HMAC of the client ID and the
//! secret under a key drawn at start and never stored, so the cache can tell
//! "this is the value that verified" without holding the value or anything
//! from which it could be recovered. Only successes are remembered: a
//! pending, revoked, discarded or wrong secret never enters.
//!
//! Every entry carries the moment the database was read for it (taken
//! before the read, so before the verify that may follow). It is trusted
//! only if that moment is
//! - within the revalidation interval, and
//! - after the last invalidation that concerns its client: an activation of
//!   its client's secret on this replica ([`CredentialCache::forget`]) or on
//!   another one (the PostgreSQL notification, see `crate::invalidation`),
//!   or a reset of the whole cache ([`CredentialCache::forget_all`]) when
//!   notifications may have been missed.
//!
//! An entry that is not trusted is not thrown away: it is confirmed against
//! the database (a cheap indexed read, no argon2) before it is used again.
//! So a revoked secret validates on no replica later than the revalidation
//! interval after its revocation, even if a notification is lost, and an
//! invalidation never sends warm clients back to argon2.

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

use crate::domain::{ClientId, ClientSecret, OrganizationId, RandomUnavailable, random_bytes};

/// An HMAC-SHA256 of a client ID and a secret under this process's key:
/// equal for equal pairs, and nothing else to anyone without the key. A
/// check computes it once ([`CredentialCache::fingerprint`]) and uses it for
/// the lookup, for coalescing identical checks, and for remembering.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprint(..)")
    }
}

/// A moment of this process's life: nanoseconds since the cache was made.
pub type Moment = u64;

/// An entry nobody has used for this long is dropped to make room.
const IDLE_EXPIRY: Duration = Duration::from_secs(600);

/// Slots of the table of per-client invalidation moments. Two clients in
/// one slot only revalidate each other's entries needlessly.
const INVALIDATION_SLOTS: usize = 4096;

/// A verification this process has seen succeed.
#[derive(Debug)]
pub struct Verified {
    pub secret_id: Uuid,
    pub organization_id: OrganizationId,
    pub custom_domain: Option<String>,
    mac: Fingerprint,
    /// When the database was read for it.
    read_at: Moment,
}

/// What the cache knows of a client ID and secret.
#[derive(Debug)]
pub enum Lookup {
    /// Trusted: valid.
    Fresh(Arc<Verified>),
    /// Verified, but not trusted any more: valid if `secret_id` is still the
    /// client's active secret.
    Stale(Arc<Verified>),
    /// Unknown: verify it the slow way.
    Miss,
}

/// The verified-credentials cache; its size is bounded by configuration.
pub struct CredentialCache {
    entries: moka::sync::Cache<String, Arc<Verified>>,
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
    /// A cache of at most `capacity` clients, each trusted for
    /// `revalidate_after` between checks against the database.
    pub fn new(capacity: u64, revalidate_after: Duration) -> Result<Self, RandomUnavailable> {
        // One block of key, the most HMAC-SHA256 uses without hashing it.
        let key: [u8; 64] = random_bytes()?;
        let mac = <Hmac<Sha256> as KeyInit>::new(&key.into());
        Ok(Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(IDLE_EXPIRY)
                .build(),
            mac,
            revalidate_after,
            origin: Instant::now(),
            trusted_since: AtomicU64::new(0),
            forgotten: (0..INVALIDATION_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            slots: RandomState::new(),
        })
    }

    /// Now. Take it before reading the database, and hand it to
    /// [`Self::remember`] or [`Self::refresh`] with what was read.
    pub fn now(&self) -> Moment {
        // Starts at 1, so that nothing is ever read at moment 0, before
        // every invalidation.
        self.origin
            .elapsed()
            .as_nanos()
            .min(u128::from(u64::MAX - 1)) as u64
            + 1
    }

    /// What the cache knows of the pair whose fingerprint this is. Costs one
    /// map lookup.
    pub fn lookup(&self, client_id: &ClientId, fingerprint: &Fingerprint) -> Lookup {
        let Some(entry) = self.entries.get(client_id.as_str()) else {
            return Lookup::Miss;
        };
        // Constant-time comparison: the timing says nothing of how close a
        // wrong secret came.
        if !bool::from(entry.mac.0.ct_eq(&fingerprint.0)) {
            return Lookup::Miss;
        }
        let age = Duration::from_nanos(self.now().saturating_sub(entry.read_at));
        if entry.read_at > self.invalidated(client_id) && age < self.revalidate_after {
            Lookup::Fresh(entry)
        } else {
            Lookup::Stale(entry)
        }
    }

    /// The last invalidation that concerns `client_id`. Checks of one pair
    /// that start on either side of an invalidation must not share an
    /// answer.
    pub fn invalidated(&self, client_id: &ClientId) -> Moment {
        let slot = &self.forgotten[self.slot(client_id.as_str())];
        slot.load(Ordering::Acquire)
            .max(self.trusted_since.load(Ordering::Acquire))
    }

    /// Remembers that the pair of `fingerprint` is the active secret
    /// `secret_id` of `client_id`, as read from the database at `read_at`.
    /// If an invalidation came after that, the entry is born untrusted.
    pub fn remember(
        &self,
        read_at: Moment,
        client_id: &ClientId,
        fingerprint: Fingerprint,
        secret_id: Uuid,
        organization_id: OrganizationId,
        custom_domain: Option<String>,
    ) {
        self.entries.insert(
            client_id.as_str().to_owned(),
            Arc::new(Verified {
                secret_id,
                organization_id,
                custom_domain,
                mac: fingerprint,
                read_at,
            }),
        );
    }

    /// Records that `entry` was confirmed against the database at `read_at`.
    pub fn refresh(&self, read_at: Moment, client_id: &ClientId, entry: &Verified) {
        self.remember(
            read_at,
            client_id,
            entry.mac,
            entry.secret_id,
            entry.organization_id.clone(),
            entry.custom_domain.clone(),
        );
    }

    /// `client_id`'s active secret changed: nothing read before now is
    /// trusted for it, and its entry goes.
    pub fn forget(&self, client_id: &str) {
        let now = self.now();
        self.forgotten[self.slot(client_id)].fetch_max(now, Ordering::AcqRel);
        self.entries.invalidate(client_id);
    }

    /// Changes may have been missed: nothing read before now is trusted
    /// until the database confirms it.
    pub fn forget_all(&self) {
        self.trusted_since.fetch_max(self.now(), Ordering::AcqRel);
    }

    /// How many clients are remembered (after pending evictions are applied).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pair's [`Fingerprint`]: one HMAC-SHA256.
    pub fn fingerprint(&self, client_id: &ClientId, secret: &ClientSecret) -> Fingerprint {
        let mut mac = self.mac.clone();
        mac.update(client_id.as_str().as_bytes());
        mac.update(b":");
        mac.update(secret.expose().as_bytes());
        Fingerprint(mac.finalize().into_bytes().into())
    }

    fn slot(&self, client_id: &str) -> usize {
        self.slots.hash_one(client_id) as usize % INVALIDATION_SLOTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_cache(capacity: u64, revalidate_after: Duration) -> CredentialCache {
        CredentialCache::new(capacity, revalidate_after).expect("the OS RNG works in tests")
    }

    fn pair() -> (ClientId, ClientSecret) {
        (
            ClientId::generate().expect("RNG"),
            ClientSecret::generate().expect("RNG"),
        )
    }

    fn remember(cache: &CredentialCache, client_id: &ClientId, secret: &ClientSecret) -> Uuid {
        remember_read_at(cache, cache.now(), client_id, secret)
    }

    /// Remembers the pair as read from the database at `read_at`.
    fn remember_read_at(
        cache: &CredentialCache,
        read_at: Moment,
        client_id: &ClientId,
        secret: &ClientSecret,
    ) -> Uuid {
        let id = Uuid::now_v7();
        let organization = OrganizationId::parse("org".into()).expect("valid");
        let fingerprint = cache.fingerprint(client_id, secret);
        cache.remember(read_at, client_id, fingerprint, id, organization, None);
        id
    }

    fn lookup(cache: &CredentialCache, client_id: &ClientId, secret: &ClientSecret) -> Lookup {
        cache.lookup(client_id, &cache.fingerprint(client_id, secret))
    }

    #[test]
    fn a_remembered_pair_is_fresh_and_any_other_value_misses() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        assert!(
            matches!(lookup(&cache, &client_id, &secret), Lookup::Miss),
            "empty"
        );
        let id = remember(&cache, &client_id, &secret);
        match lookup(&cache, &client_id, &secret) {
            Lookup::Fresh(entry) => assert_eq!(entry.secret_id, id),
            other => panic!("expected a fresh hit, got {other:?}"),
        }
        let (other_client, other_secret) = pair();
        assert!(matches!(
            lookup(&cache, &client_id, &other_secret),
            Lookup::Miss
        ));
        assert!(matches!(
            lookup(&cache, &other_client, &secret),
            Lookup::Miss
        ));
    }

    #[test]
    fn an_entry_older_than_the_interval_is_stale_until_refreshed() {
        let cache = new_cache(10, Duration::from_millis(20));
        let (client_id, secret) = pair();
        remember(&cache, &client_id, &secret);
        std::thread::sleep(Duration::from_millis(30));
        let Lookup::Stale(entry) = lookup(&cache, &client_id, &secret) else {
            panic!("expected a stale entry");
        };
        cache.refresh(cache.now(), &client_id, &entry);
        assert!(matches!(
            lookup(&cache, &client_id, &secret),
            Lookup::Fresh(_)
        ));
    }

    #[test]
    fn forgetting_a_client_drops_it_and_only_it() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (a, a_secret) = pair();
        let (b, b_secret) = pair();
        remember(&cache, &a, &a_secret);
        remember(&cache, &b, &b_secret);
        cache.forget(a.as_str());
        assert!(matches!(lookup(&cache, &a, &a_secret), Lookup::Miss));
        assert!(matches!(lookup(&cache, &b, &b_secret), Lookup::Fresh(_)));
    }

    #[test]
    fn after_forgetting_everything_entries_need_confirming_and_then_are_trusted() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        remember(&cache, &client_id, &secret);
        cache.forget_all();
        let Lookup::Stale(entry) = lookup(&cache, &client_id, &secret) else {
            panic!("an entry read before the reset is not trusted");
        };
        cache.refresh(cache.now(), &client_id, &entry);
        assert!(matches!(
            lookup(&cache, &client_id, &secret),
            Lookup::Fresh(_)
        ));
    }

    #[test]
    fn what_was_read_before_an_invalidation_is_never_trusted() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        let read_at = cache.now();
        cache.forget(client_id.as_str()); // an activation lands mid-verification
        remember_read_at(&cache, read_at, &client_id, &secret);
        assert!(matches!(
            lookup(&cache, &client_id, &secret),
            Lookup::Stale(_)
        ));
        assert!(
            cache.invalidated(&client_id) >= read_at,
            "checks before and after differ"
        );
    }

    #[test]
    fn an_entry_is_as_old_as_its_database_read() {
        let cache = new_cache(10, Duration::from_millis(20));
        let (client_id, secret) = pair();
        let read_at = cache.now();
        std::thread::sleep(Duration::from_millis(30)); // a slow verify
        remember_read_at(&cache, read_at, &client_id, &secret);
        assert!(matches!(
            lookup(&cache, &client_id, &secret),
            Lookup::Stale(_)
        ));
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
        let Lookup::Fresh(entry) = lookup(&cache, &client_id, &secret) else {
            panic!("expected a hit");
        };
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
        assert_eq!(entry.mac, fingerprint);
    }
}
