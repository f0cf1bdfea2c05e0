//! Successful verifications, remembered so that a client checked once is
//! answered without argon2 and without the database.
//!
//! An entry is keyed by client ID and holds an HMAC of the client ID and the
//! secret under a key drawn at start and never stored, so the cache can tell
//! "this is the value that verified" without holding the value or anything
//! from which it could be recovered. Only successes are remembered: a
//! pending, revoked, discarded or wrong secret never enters.
//!
//! An entry stops being trusted when:
//! - its client's secret is activated on this replica ([`CredentialCache::forget`]),
//!   or on another one (the PostgreSQL notification, see `crate::invalidation`);
//! - it is older than the revalidation interval: it is then checked against
//!   the database (a cheap indexed read, no argon2) before it is used again.
//!   That bounds how long a revoked secret can validate even if a
//!   notification is lost.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::domain::{ClientId, ClientSecret, OrganizationId, RandomUnavailable, random_bytes};

/// An HMAC-SHA256 of a client ID and a secret under this process's key.
pub type Fingerprint = [u8; 32];

/// An entry nobody has used for this long is dropped to make room.
const IDLE_EXPIRY: Duration = Duration::from_secs(600);

/// A verification this process has seen succeed.
#[derive(Debug)]
pub struct Verified {
    pub secret_id: Uuid,
    pub organization_id: OrganizationId,
    pub custom_domain: Option<String>,
    mac: Fingerprint,
    checked_at: Instant,
}

/// What the cache knows of a client ID and secret.
#[derive(Debug)]
pub enum Lookup {
    /// Verified within the revalidation interval: valid.
    Fresh(Arc<Verified>),
    /// Verified, but longer ago: valid if `secret_id` is still the client's
    /// active secret.
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
    /// Bumped by every invalidation, so that a verification that read the
    /// database before an invalidation does not store what it read after.
    epoch: AtomicU64,
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
            epoch: AtomicU64::new(0),
        })
    }

    /// What the cache knows of this pair. Costs one HMAC and one map lookup.
    pub fn lookup(&self, client_id: &ClientId, secret: &ClientSecret) -> Lookup {
        let Some(entry) = self.entries.get(client_id.as_str()) else {
            return Lookup::Miss;
        };
        // Constant-time comparison: the timing says nothing of how close a
        // wrong secret came.
        if self
            .keyed(client_id, secret)
            .verify_slice(&entry.mac)
            .is_err()
        {
            return Lookup::Miss;
        }
        if entry.checked_at.elapsed() < self.revalidate_after {
            Lookup::Fresh(entry)
        } else {
            Lookup::Stale(entry)
        }
    }

    /// The invalidation count, to pass back to [`CredentialCache::remember`]
    /// or [`CredentialCache::refresh`]. Read it before reading the database.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Remembers that `secret` is the active secret `secret_id` of
    /// `client_id`, as read from the database after `epoch` was taken;
    /// nothing is remembered if an invalidation came in between.
    pub fn remember(
        &self,
        epoch: u64,
        client_id: &ClientId,
        secret: &ClientSecret,
        secret_id: Uuid,
        organization_id: OrganizationId,
        custom_domain: Option<String>,
    ) {
        let mac = self.fingerprint(client_id, secret);
        self.store(
            epoch,
            client_id,
            Verified {
                secret_id,
                organization_id,
                custom_domain,
                mac,
                checked_at: Instant::now(),
            },
        );
    }

    /// Marks `entry` as checked against the database just now.
    pub fn refresh(&self, epoch: u64, client_id: &ClientId, entry: &Verified) {
        self.store(
            epoch,
            client_id,
            Verified {
                secret_id: entry.secret_id,
                organization_id: entry.organization_id.clone(),
                custom_domain: entry.custom_domain.clone(),
                mac: entry.mac,
                checked_at: Instant::now(),
            },
        );
    }

    /// Drops what is known of `client_id`: its active secret changed.
    pub fn forget(&self, client_id: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate(client_id);
    }

    /// Drops everything: changes may have been missed.
    pub fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.invalidate_all();
    }

    /// How many clients are remembered (after pending evictions are applied).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn store(&self, epoch: u64, client_id: &ClientId, verified: Verified) {
        if self.epoch() != epoch {
            return;
        }
        self.entries
            .insert(client_id.as_str().to_owned(), Arc::new(verified));
        // An invalidation may have landed between the check and the insert;
        // then what was inserted may be stale, so drop it.
        if self.epoch() != epoch {
            self.entries.invalidate(client_id.as_str());
        }
    }

    /// The MAC of the pair: equal for equal pairs, and nothing else to
    /// anyone without this process's key.
    pub fn fingerprint(&self, client_id: &ClientId, secret: &ClientSecret) -> Fingerprint {
        self.keyed(client_id, secret).finalize().into_bytes().into()
    }

    fn keyed(&self, client_id: &ClientId, secret: &ClientSecret) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(client_id.as_str().as_bytes());
        mac.update(b":");
        mac.update(secret.expose().as_bytes());
        mac
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
        let id = Uuid::now_v7();
        let organization = OrganizationId::parse("org".into()).expect("valid");
        cache.remember(cache.epoch(), client_id, secret, id, organization, None);
        id
    }

    #[test]
    fn a_remembered_pair_is_fresh_and_any_other_value_misses() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        assert!(
            matches!(cache.lookup(&client_id, &secret), Lookup::Miss),
            "empty"
        );
        let id = remember(&cache, &client_id, &secret);
        match cache.lookup(&client_id, &secret) {
            Lookup::Fresh(entry) => assert_eq!(entry.secret_id, id),
            other => panic!("expected a fresh hit, got {other:?}"),
        }
        let (other_client, other_secret) = pair();
        assert!(matches!(
            cache.lookup(&client_id, &other_secret),
            Lookup::Miss
        ));
        assert!(matches!(cache.lookup(&other_client, &secret), Lookup::Miss));
    }

    #[test]
    fn an_entry_older_than_the_interval_is_stale_until_refreshed() {
        let cache = new_cache(10, Duration::from_millis(20));
        let (client_id, secret) = pair();
        remember(&cache, &client_id, &secret);
        std::thread::sleep(Duration::from_millis(30));
        let Lookup::Stale(entry) = cache.lookup(&client_id, &secret) else {
            panic!("expected a stale entry");
        };
        cache.refresh(cache.epoch(), &client_id, &entry);
        assert!(matches!(
            cache.lookup(&client_id, &secret),
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
        assert!(matches!(cache.lookup(&a, &a_secret), Lookup::Miss));
        assert!(matches!(cache.lookup(&b, &b_secret), Lookup::Fresh(_)));
        cache.forget_all();
        assert!(matches!(cache.lookup(&b, &b_secret), Lookup::Miss));
    }

    #[test]
    fn what_was_read_before_an_invalidation_is_not_remembered() {
        let cache = new_cache(10, Duration::from_secs(60));
        let (client_id, secret) = pair();
        let epoch = cache.epoch();
        cache.forget(client_id.as_str()); // an activation lands mid-verification
        let organization = OrganizationId::parse("org".into()).expect("valid");
        cache.remember(
            epoch,
            &client_id,
            &secret,
            Uuid::now_v7(),
            organization,
            None,
        );
        assert!(matches!(cache.lookup(&client_id, &secret), Lookup::Miss));
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
        let Lookup::Fresh(entry) = cache.lookup(&client_id, &secret) else {
            panic!("expected a hit");
        };
        let printed = format!("{entry:?}");
        assert!(!printed.contains(&secret.expose()[4..12]), "{printed}");
        // Another process (another key) derives another MAC from the same pair.
        let other = new_cache(10, Duration::from_secs(60));
        let mac = |c: &CredentialCache| c.keyed(&client_id, &secret).finalize().into_bytes();
        assert_ne!(mac(&cache), mac(&other), "the key is random per process");
        assert_eq!(mac(&cache).as_slice(), entry.mac.as_slice());
    }
}
