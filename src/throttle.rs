//! Limits on the validations that the cache cannot answer.
//!
//! A validation that misses the cache costs a database read and an argon2
//! verify, so misses are rationed: per client ID, so that no one client can
//! use up the service's capacity, and overall, so that the queue in front of
//! argon2 stays short. A refused attempt is answered `RESOURCE_EXHAUSTED` at
//! once, for the price of a map lookup.
//!
//! Hits are never rationed: a client whose correct secret is already cached
//! keeps validating however hard someone hammers its client ID with wrong
//! values. Both limits apply alike to every well-formed client ID, known or
//! not, so that the answers do not reveal which client IDs exist.
//!
//! Per-client budgets live in a fixed table of slots, chosen by a hash of the
//! client ID under a key drawn at start: a flood of made-up client IDs costs
//! neither memory nor an insertion, and nobody can aim two IDs at one slot.
//! Two IDs share a slot by chance with a probability of one in the table's
//! size, and then share a budget.
//!
//! ActivateSecret has a limit of its own, on failures per organization (see
//! [`ActivationThrottle`]).
//!
//! This file holds every rationing rule of the service; `crate::validation`
//! and `crate::integrations` each own the limiter they apply.

use std::{
    hash::{BuildHasher, Hash, RandomState},
    marker::PhantomData,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use governor::{
    DefaultDirectRateLimiter, Quota, RateLimiter,
    clock::DefaultClock,
    nanos::Nanos,
    state::{InMemoryState, NotKeyed, StateStore},
};

use crate::config::ThrottleSettings;
use crate::domain::{ClientId, OrganizationId};
use crate::error::Error;

/// The limits on ValidateClient's cache misses: per client ID and overall.
pub struct ValidationThrottle {
    per_client: RateLimiter<ClientId, Slots<ClientId>, DefaultClock>,
    overall: DefaultDirectRateLimiter,
    overall_per_second: NonZeroU32,
}

/// A fixed table of GCRA states (an atomic word each), one chosen per key
/// by a keyed hash.
struct Slots<K> {
    slots: Box<[InMemoryState]>,
    hasher: RandomState,
    key: PhantomData<fn(&K)>,
}

impl<K: Hash> Slots<K> {
    fn new(tracked: u64) -> Self {
        Self {
            slots: (0..table_len(tracked))
                .map(|_| InMemoryState::default())
                .collect(),
            hasher: RandomState::new(),
            key: PhantomData,
        }
    }

    fn index(&self, key: &K) -> usize {
        slot_of(&self.hasher, key, self.slots.len())
    }
}

/// A table's length for `tracked` keys: a power of two, within bounds.
fn table_len(tracked: u64) -> usize {
    tracked.clamp(1, 1 << 24).next_power_of_two() as usize
}

fn slot_of<K: Hash>(hasher: &RandomState, key: &K, len: usize) -> usize {
    // The length is a power of two: the mask keeps the hash's low bits.
    hasher.hash_one(key) as usize & (len - 1)
}

impl<K: Hash + Eq + Clone> StateStore for Slots<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.slots[self.index(key)].measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ValidationThrottle {
    /// Builds the limits. Without an explicit overall rate, it admits twice
    /// what `threads` argon2 threads can verify at `verify_time` each, with a
    /// second's worth of burst: enough to keep every thread busy, not enough
    /// to queue more than the deadline allows.
    pub fn new(settings: &ThrottleSettings, threads: usize, verify_time: Duration) -> Self {
        let overall_per_second = settings.overall_per_second.unwrap_or_else(|| {
            let per_second = 2.0 * threads.max(1) as f64 / verify_time.as_secs_f64().max(1e-3);
            NonZeroU32::new(per_second.ceil().min(f64::from(u32::MAX)) as u32)
                .unwrap_or(NonZeroU32::MIN)
        });
        let per_client_quota = Quota::per_second(settings.per_client_per_second)
            .allow_burst(settings.per_client_burst);
        Self {
            per_client: RateLimiter::new(
                per_client_quota,
                Slots::new(settings.tracked_clients),
                DefaultClock::default(),
            ),
            overall: RateLimiter::direct(Quota::per_second(overall_per_second)),
            overall_per_second,
        }
    }

    /// The overall rate in force.
    pub fn overall_per_second(&self) -> NonZeroU32 {
        self.overall_per_second
    }

    /// Admits one cache miss for `client_id`, or refuses it.
    pub fn admit(&self, client_id: &ClientId) -> Result<(), Error> {
        if self.per_client.check_key(client_id).is_err() {
            return Err(Error::ResourceExhausted(
                "too many validations of this client ID could not be answered from cache; \
                 retry later"
                    .into(),
            ));
        }
        if self.overall.check().is_err() {
            return Err(Error::ResourceExhausted(
                "the service is receiving more validations than it can verify; retry with backoff"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The limit on ActivateSecret attempts with wrong values, per organization.
///
/// Only failures are charged, so a dashboard that activates the right value
/// never meets it. An organization that has used up its budget is refused
/// at once, before any verify and whatever the value, until its budget has
/// a unit again: its next attempt cannot be known right without the argon2
/// work the limit is there to save.
pub struct ActivationThrottle {
    failures: RateLimiter<OrganizationId, Slots<OrganizationId>, DefaultClock>,
    clock: DefaultClock,
    /// Per slot of the same table: until when (in nanoseconds since `epoch`)
    /// attempts are refused.
    refused_until: Box<[AtomicU64]>,
    hasher: RandomState,
    epoch: Instant,
}

impl ActivationThrottle {
    pub fn new(settings: &ThrottleSettings) -> Self {
        let per_minute = settings.activation_failures_per_minute;
        let quota = Quota::per_minute(per_minute).allow_burst(per_minute);
        let len = table_len(settings.tracked_clients);
        Self {
            failures: RateLimiter::new(quota, Slots::new(len as u64), DefaultClock::default()),
            clock: DefaultClock::default(),
            refused_until: (0..len).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Refuses an attempt for `organization` while its budget is used up.
    pub fn admit(&self, organization: &OrganizationId) -> Result<(), Error> {
        let until = self.refused_until[self.slot(organization)].load(Ordering::Relaxed);
        if self.now() < until {
            return Err(Self::refusal());
        }
        Ok(())
    }

    /// Charges a failed attempt for `organization`; once its budget is used
    /// up, refuses its attempts until a unit comes back.
    pub fn failed(&self, organization: &OrganizationId) {
        if let Err(not_until) = self.failures.check_key(organization) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(&self.clock));
            let until = self.now().saturating_add(wait.as_nanos() as u64);
            self.refused_until[self.slot(organization)].fetch_max(until, Ordering::Relaxed);
        }
    }

    fn slot(&self, organization: &OrganizationId) -> usize {
        slot_of(&self.hasher, organization, self.refused_until.len())
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn refusal() -> Error {
        Error::ResourceExhausted(
            "too many ActivateSecret attempts with a wrong value for this organization; wait a \
             minute, then activate the value GenerateSecret returned"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn throttle(per_client_burst: u32, overall: Option<u32>) -> ValidationThrottle {
        let settings = ThrottleSettings {
            per_client_per_second: nz(1),
            per_client_burst: nz(per_client_burst),
            overall_per_second: overall.map(nz),
            tracked_clients: 1_000,
            activation_failures_per_minute: nz(3),
        };
        ValidationThrottle::new(&settings, 2, Duration::from_millis(40))
    }

    #[test]
    fn one_client_id_gets_its_burst_and_then_is_refused() {
        let throttle = throttle(3, Some(1_000));
        let client = ClientId::generate().expect("RNG");
        for n in 0..3 {
            assert!(
                throttle.admit(&client).is_ok(),
                "attempt {n} is within the burst"
            );
        }
        let refused = throttle.admit(&client).expect_err("the fourth is refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        let other = ClientId::generate().expect("RNG");
        assert!(
            throttle.admit(&other).is_ok(),
            "another client ID has its own budget"
        );
    }

    #[test]
    fn the_overall_limit_applies_across_client_ids() {
        let throttle = throttle(100, Some(5));
        let admitted = (0..50)
            .filter(|_| throttle.admit(&ClientId::generate().expect("RNG")).is_ok())
            .count();
        assert_eq!(admitted, 5, "a second's worth of burst, then refusals");
    }

    #[test]
    fn the_overall_rate_defaults_to_twice_the_measured_capacity() {
        // 2 threads at 40 ms per verify: 50 a second; twice that is 100.
        let throttle = throttle(1, None);
        assert_eq!(throttle.overall_per_second().get(), 100);
    }

    #[test]
    fn the_table_has_a_fixed_size_whatever_the_number_of_client_ids() {
        let settings = ThrottleSettings {
            per_client_per_second: nz(1),
            per_client_burst: nz(1),
            overall_per_second: Some(nz(1_000_000)),
            tracked_clients: 100,
            activation_failures_per_minute: nz(3),
        };
        let throttle = ValidationThrottle::new(&settings, 1, Duration::from_millis(40));
        let mut admitted = 0;
        for _ in 0..2_000 {
            admitted += usize::from(throttle.admit(&ClientId::generate().expect("RNG")).is_ok());
        }
        // 128 slots of one cell each: at most 128 of 2,000 fresh IDs get in
        // within a second, and at least one per slot that was hit.
        assert!(admitted <= 128, "{admitted} admitted");
        assert!(admitted >= 64, "{admitted} admitted");
    }

    #[test]
    fn activations_are_refused_only_after_the_failure_budget_is_spent() {
        let settings = ThrottleSettings {
            per_client_per_second: nz(1),
            per_client_burst: nz(1),
            overall_per_second: None,
            tracked_clients: 1_000,
            activation_failures_per_minute: nz(3),
        };
        let throttle = ActivationThrottle::new(&settings);
        let org = OrganizationId::parse("org-a".into()).expect("valid");
        let other = OrganizationId::parse("org-b".into()).expect("valid");
        for _ in 0..10 {
            assert!(
                throttle.admit(&org).is_ok(),
                "admissions alone cost nothing"
            );
        }
        for n in 0..3 {
            throttle.failed(&org);
            assert!(throttle.admit(&org).is_ok(), "failure {n} is within budget");
        }
        throttle.failed(&org);
        let refused = throttle.admit(&org).expect_err("over budget");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            throttle.admit(&other).is_ok(),
            "another organization has its own budget"
        );
    }
}
