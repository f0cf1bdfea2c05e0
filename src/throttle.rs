//! Limits on the work that the cache cannot answer: argon2 verifies.
//!
//! A validation that misses the cache costs a database read and an argon2
//! verify, so misses are rationed. What is rationed is *failure*: each miss
//! takes a unit of its budgets before its verify, and a miss that verifies
//! gives them back ([`ValidationThrottle::verified`]). A caller that holds
//! the right secret therefore never spends a budget, and nobody can spend
//! someone else's: a client ID is public (it is in every authorize URL), so
//! a budget that anyone could drain by sending wrong secrets for it would
//! turn brute-force protection into a way to lock a client out.
//!
//! The budgets of a miss, each a GCRA cell ([`Budget`]):
//! - **per client ID and source**: the source is the address of the party
//!   that presented the credentials, as the gateway saw it
//!   (`ValidateClientRequest.remote_address`). Without a source, per client
//!   ID alone, which is all the service can do then.
//! - **per source**, over all client IDs: one address spraying made-up
//!   client IDs spends only its own budget. An IPv6 source is its /64, the
//!   block one subscriber or host gets, so that walking through the
//!   addresses of one's own prefix buys nothing.
//! - **overall**, which bounds the argon2 work whatever the number of
//!   sources. A miss in good standing (its source has spent at most a
//!   quarter of its budget) may take the overall budget's last units; a
//!   miss from a source that has failed more must leave half the overall
//!   burst for those. A flood from sources that keep failing thus gets only
//!   what callers in good standing leave, and good standing also puts a
//!   miss at the front of argon2's queue ([`Standing`]). A miss without a
//!   source is treated as before sources were known: the whole overall
//!   budget, first come first served.
//!
//! A refused attempt is answered `RESOURCE_EXHAUSTED` at once, for the price
//! of a few atomic operations. Hits are never rationed, nor are pairs this
//! process has verified before (`crate::validation::cache`): they are
//! confirmed with a database read, not a verify. Every limit applies alike
//! to every well-formed client ID, known or not, so that the answers do not
//! reveal which client IDs exist.
//!
//! Budgets live in fixed tables of cells, chosen by a hash of the key under a
//! key drawn at start: a flood of made-up client IDs or addresses costs
//! neither memory nor an insertion, and nobody can aim two keys at one cell.
//! Two keys share a cell by chance with a probability of one in the table's
//! size, and then share a budget.
//!
//! ActivateSecret has a budget of its own, of verifies that failed per
//! organization ([`ActivationThrottle`]).
//!
//! This file holds every rationing rule of the service; `crate::validation`
//! and `crate::integrations` each own the limiter they apply.

use std::{
    hash::{BuildHasher, Hash, RandomState},
    net::IpAddr,
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::config::ThrottleSettings;
use crate::domain::{ClientId, OrganizationId};
use crate::error::Error;

/// Nanoseconds since a clock's origin.
type Nanos = u64;

/// A rate and a burst: `burst` units at once, then one every `interval`.
#[derive(Debug, Clone, Copy)]
struct Quota {
    interval: Nanos,
    burst: u64,
}

impl Quota {
    fn per_second(rate: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::per(Duration::from_secs(1), rate, burst)
    }

    fn per(period: Duration, rate: NonZeroU32, burst: NonZeroU32) -> Self {
        Self {
            interval: (period.as_nanos() / u128::from(rate.get())).max(1) as Nanos,
            burst: u64::from(burst.get()),
        }
    }

    /// How far ahead of now a full budget's theoretical arrival time may be.
    fn tolerance(self) -> Nanos {
        self.interval.saturating_mul(self.burst)
    }
}

/// One budget: the generic cell rate algorithm in one atomic word, the
/// theoretical arrival time of the next unit. Unlike a token bucket kept in
/// two words, it takes and gives back units without a lock.
#[derive(Debug, Default)]
struct Budget(AtomicU64);

impl Budget {
    /// Takes one unit if, after it, at least `keep` units remain.
    fn take(&self, quota: Quota, now: Nanos, keep: u64) -> bool {
        let reserve = quota.interval.saturating_mul(keep.min(quota.burst));
        let limit = now.saturating_add(quota.tolerance().saturating_sub(reserve));
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                let next = tat.max(now).saturating_add(quota.interval);
                (next <= limit).then_some(next)
            })
            .is_ok()
    }

    /// Gives back a unit taken earlier. The budget never holds more than its
    /// burst: what was given back while it was full is lost. A unit given
    /// back after the budget has refilled past it cancels another unit
    /// taken since: at most one per verify that succeeded, which is what
    /// a lock-free cell allows.
    fn give_back(&self, quota: Quota) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(quota.interval))
            });
    }

    /// Units left now.
    fn available(&self, quota: Quota, now: Nanos) -> u64 {
        let tat = self.0.load(Ordering::Acquire).max(now);
        now.saturating_add(quota.tolerance()).saturating_sub(tat) / quota.interval
    }
}

/// A fixed table of budgets sharing one quota, one chosen per key by a
/// keyed hash.
struct Budgets {
    cells: Box<[Budget]>,
    hasher: RandomState,
    quota: Quota,
}

impl Budgets {
    fn new(quota: Quota, tracked: u64) -> Self {
        Self {
            cells: (0..table_len(tracked)).map(|_| Budget::default()).collect(),
            hasher: RandomState::new(),
            quota,
        }
    }

    fn cell(&self, key: &impl Hash) -> usize {
        // The length is a power of two: the mask keeps the hash's low bits.
        self.hasher.hash_one(key) as usize & (self.cells.len() - 1)
    }

    fn take(&self, cell: usize, now: Nanos) -> bool {
        self.cells[cell].take(self.quota, now, 0)
    }

    fn give_back(&self, cell: usize) {
        self.cells[cell].give_back(self.quota);
    }

    /// Whether the cell has spent at most a quarter of its burst: a caller
    /// that rarely fails. Strict, so that a new source's first failures put
    /// little work ahead of others in argon2's queue.
    fn in_good_standing(&self, cell: usize, now: Nanos) -> bool {
        4 * self.cells[cell].available(self.quota, now) >= 3 * self.quota.burst
    }
}

/// A table's length for `tracked` keys: a power of two, within bounds.
fn table_len(tracked: u64) -> usize {
    tracked.clamp(1, 1 << 24).next_power_of_two() as usize
}

/// A monotonic clock in nanoseconds, starting at 0 when it is made.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        Self(Instant::now())
    }

    fn now(&self) -> Nanos {
        self.0.elapsed().as_nanos().min(u128::from(u64::MAX)) as Nanos
    }
}

/// The budget key of a source address: an IPv4 address (IPv4-mapped IPv6
/// included), or the /64 of an IPv6 address.
fn source_key(address: IpAddr) -> u128 {
    match address.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

/// What the throttle knows of where a miss comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// From a source that has rarely failed: it may take the overall
    /// budget's last units, and its verify goes ahead of the others in
    /// argon2's queue.
    Good,
    /// From a source that has failed more: it must leave the overall
    /// budget's last half to others.
    Doubtful,
    /// From an unknown source: as before sources were known, the whole
    /// overall budget, first come first served.
    Unknown,
}

/// The units one admitted miss took: hand it back through
/// [`ValidationThrottle::verified`] if the miss verifies.
#[derive(Debug)]
#[must_use = "a miss that verifies gives its units back"]
pub struct Admission {
    client_cell: usize,
    source_cell: Option<usize>,
    standing: Standing,
}

impl Admission {
    pub fn standing(&self) -> Standing {
        self.standing
    }
}

/// The limits on ValidateClient's cache misses (see the module's doc).
pub struct ValidationThrottle {
    clock: Clock,
    /// Per client ID and source, or per client ID when the source is unknown.
    per_client: Budgets,
    per_source: Budgets,
    overall: Budget,
    overall_quota: Quota,
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
        Self {
            clock: Clock::new(),
            per_client: Budgets::new(
                Quota::per_second(settings.per_client_per_second, settings.per_client_burst),
                settings.tracked_clients,
            ),
            per_source: Budgets::new(
                Quota::per_second(settings.per_source_per_second, settings.per_source_burst),
                settings.tracked_clients,
            ),
            overall: Budget::default(),
            overall_quota: Quota::per_second(overall_per_second, overall_per_second),
        }
    }

    /// The overall rate in force.
    pub fn overall_per_second(&self) -> u64 {
        Duration::from_secs(1).as_nanos() as u64 / self.overall_quota.interval
    }

    /// Admits one cache miss for `client_id` from `source`, or refuses it.
    pub fn admit(&self, client_id: &ClientId, source: Option<IpAddr>) -> Result<Admission, Error> {
        let now = self.clock.now();
        let source = source.map(source_key);
        let client_cell = self.per_client.cell(&(client_id, source));
        if !self.per_client.take(client_cell, now) {
            return Err(Error::ResourceExhausted(match source {
                Some(_) => "too many failed validations of this client ID from this \
                            remote_address; retry later"
                    .into(),
                None => "too many failed validations of this client ID; retry later".into(),
            }));
        }
        let (source_cell, standing) = match source {
            Some(source) => {
                let cell = self.per_source.cell(&source);
                let standing = if self.per_source.in_good_standing(cell, now) {
                    Standing::Good
                } else {
                    Standing::Doubtful
                };
                if !self.per_source.take(cell, now) {
                    self.per_client.give_back(client_cell);
                    return Err(Error::ResourceExhausted(
                        "too many failed validations from this remote_address; retry later".into(),
                    ));
                }
                (Some(cell), standing)
            }
            None => (None, Standing::Unknown),
        };
        let keep = match standing {
            Standing::Good | Standing::Unknown => 0,
            Standing::Doubtful => self.overall_quota.burst / 2,
        };
        if !self.overall.take(self.overall_quota, now, keep) {
            self.per_client.give_back(client_cell);
            if let Some(cell) = source_cell {
                self.per_source.give_back(cell);
            }
            return Err(Error::ResourceExhausted(
                "the service is receiving more validations than it can verify; retry with backoff"
                    .into(),
            ));
        }
        Ok(Admission {
            client_cell,
            source_cell,
            standing,
        })
    }

    /// The admitted miss verified: it was no failure, and its client and
    /// source budgets get their units back. The overall unit stays spent:
    /// the verify did cost argon2 work.
    pub fn verified(&self, admission: Admission) {
        self.per_client.give_back(admission.client_cell);
        if let Some(cell) = admission.source_cell {
            self.per_source.give_back(cell);
        }
    }

    /// The admitted miss could not be verified (the database or argon2's
    /// queue failed it): no failure of the client's either, so its client
    /// budget gets its unit back. Its source's unit stays spent, so that
    /// calls refused for load still count against whoever sends them.
    pub fn unverified(&self, admission: Admission) {
        self.per_client.give_back(admission.client_cell);
    }
}

/// How the refusal of [`ActivationThrottle::admit`] begins, so that the log
/// can tell it from a refusal for load.
pub const ACTIVATION_BUDGET_SPENT: &str = "too many ActivateSecret attempts with a wrong value";

/// The limit on ActivateSecret's verifies that fail, per organization.
///
/// Only an attempt that costs a verify takes a unit, and one that verifies
/// gives it back, so a dashboard that activates the right value never meets
/// the limit, and values that are ruled out without argon2 (by their hint)
/// never spend it. Once an organization's units are spent, its attempts that
/// need a verify are refused until a unit comes back: the next one cannot be
/// known right without the argon2 work the limit is there to save.
pub struct ActivationThrottle {
    clock: Clock,
    failures: Budgets,
}

/// A unit taken for one activation's verify: give it back through
/// [`ActivationThrottle::verified`] if the value matched.
#[derive(Debug)]
#[must_use = "a verify that matches gives its unit back"]
pub struct ActivationAttempt {
    cell: usize,
}

impl ActivationThrottle {
    pub fn new(settings: &ThrottleSettings) -> Self {
        let per_minute = settings.activation_failures_per_minute;
        Self {
            clock: Clock::new(),
            failures: Budgets::new(
                Quota::per(Duration::from_secs(60), per_minute, per_minute),
                settings.tracked_clients,
            ),
        }
    }

    /// Takes a unit for a verify of a value `organization` sent, or refuses
    /// it while the organization's units are spent.
    pub fn admit(&self, organization: &OrganizationId) -> Result<ActivationAttempt, Error> {
        let cell = self.failures.cell(organization);
        if self.failures.take(cell, self.clock.now()) {
            Ok(ActivationAttempt { cell })
        } else {
            Err(Error::ResourceExhausted(format!(
                "{ACTIVATION_BUDGET_SPENT} for this organization; wait a minute, then activate \
                 the value GenerateSecret returned"
            )))
        }
    }

    /// The value matched: no failure, the unit comes back.
    pub fn verified(&self, attempt: ActivationAttempt) {
        self.failures.give_back(attempt.cell);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).expect("non-zero")
    }

    fn settings(client_burst: u32, source_burst: u32, overall: Option<u32>) -> ThrottleSettings {
        ThrottleSettings {
            per_client_per_second: nz(1),
            per_client_burst: nz(client_burst),
            per_source_per_second: nz(1),
            per_source_burst: nz(source_burst),
            overall_per_second: overall.map(nz),
            tracked_clients: 1_000,
            activation_failures_per_minute: nz(3),
        }
    }

    fn throttle(client_burst: u32, source_burst: u32, overall: Option<u32>) -> ValidationThrottle {
        ValidationThrottle::new(
            &settings(client_burst, source_burst, overall),
            2,
            Duration::from_millis(40),
        )
    }

    fn client() -> ClientId {
        ClientId::generate().expect("RNG")
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("an address"))
    }

    /// Admits and drops the admission: a failed attempt.
    fn fail(throttle: &ValidationThrottle, client: &ClientId, source: Option<IpAddr>) -> bool {
        throttle.admit(client, source).is_ok()
    }

    #[test]
    fn a_budget_takes_its_burst_then_one_unit_per_interval() {
        let quota = Quota::per_second(nz(10), nz(3));
        let budget = Budget::default();
        let start = 1_000_000_000;
        assert_eq!(budget.available(quota, start), 3, "full");
        assert!((0..3).all(|_| budget.take(quota, start, 0)), "the burst");
        assert!(!budget.take(quota, start, 0), "then nothing");
        let later = start + quota.interval;
        assert!(budget.take(quota, later, 0), "one unit an interval later");
        assert!(!budget.take(quota, later, 0));
    }

    #[test]
    fn a_budget_keeps_a_reserve_when_asked_and_takes_back_what_it_gave() {
        let quota = Quota::per_second(nz(10), nz(4));
        let budget = Budget::default();
        let now = 1_000_000_000;
        assert!(budget.take(quota, now, 2));
        assert!(budget.take(quota, now, 2));
        assert!(!budget.take(quota, now, 2), "two are kept in reserve");
        assert!(budget.take(quota, now, 0), "which others may take");
        budget.give_back(quota);
        budget.give_back(quota);
        assert_eq!(budget.available(quota, now), 3, "given back");
        for _ in 0..10 {
            budget.give_back(quota);
        }
        assert_eq!(budget.available(quota, now), 4, "never more than the burst");
    }

    #[test]
    fn without_a_source_one_client_id_gets_its_burst_and_then_is_refused() {
        let throttle = throttle(3, 100, Some(1_000));
        let first = client();
        for n in 0..3 {
            assert!(
                fail(&throttle, &first, None),
                "attempt {n} is within the burst"
            );
        }
        let refused = throttle
            .admit(&first, None)
            .expect_err("the fourth is refused");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            fail(&throttle, &client(), None),
            "another client ID has its own budget"
        );
    }

    #[test]
    fn failures_from_one_source_do_not_spend_another_sources_budget_for_that_client() {
        let throttle = throttle(3, 100, Some(1_000));
        let victim = client();
        while fail(&throttle, &victim, ip("198.51.100.9")) {}
        assert!(
            throttle.admit(&victim, ip("203.0.113.7")).is_ok(),
            "the victim's own address still has its budget"
        );
    }

    #[test]
    fn a_verified_miss_spends_nothing() {
        let throttle = throttle(2, 2, Some(1_000));
        let client = client();
        for _ in 0..10 {
            let admitted = throttle
                .admit(&client, ip("203.0.113.7"))
                .expect("admitted");
            throttle.verified(admitted);
        }
        assert!(
            fail(&throttle, &client, ip("203.0.113.7")),
            "the budget is whole"
        );
    }

    #[test]
    fn a_miss_that_could_not_be_verified_spends_its_sources_unit_only() {
        let throttle = throttle(1, 2, Some(1_000));
        let victim = client();
        let admitted = throttle
            .admit(&victim, ip("203.0.113.7"))
            .expect("admitted");
        throttle.unverified(admitted);
        let admitted = throttle
            .admit(&victim, ip("203.0.113.7"))
            .expect("the client's unit came back");
        throttle.unverified(admitted);
        assert!(
            throttle.admit(&client(), ip("203.0.113.7")).is_err(),
            "the source's two units are spent"
        );
    }

    #[test]
    fn one_source_spraying_client_ids_spends_only_its_own_budget() {
        let throttle = throttle(100, 5, Some(1_000));
        let admitted = (0..50)
            .filter(|_| fail(&throttle, &client(), ip("198.51.100.9")))
            .count();
        assert_eq!(admitted, 5, "the source's burst");
        assert!(
            fail(&throttle, &client(), ip("203.0.113.7")),
            "another source"
        );
        assert!(fail(&throttle, &client(), None), "an unknown source");
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let throttle = throttle(100, 3, Some(1_000));
        let mut admitted = 0;
        for n in 0..30u16 {
            let address = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, n, 0, 0, n);
            admitted += usize::from(fail(&throttle, &client(), Some(address.into())));
        }
        assert_eq!(admitted, 3, "one budget for the whole /64");
        let next = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1);
        assert!(
            fail(&throttle, &client(), Some(next.into())),
            "the next /64"
        );
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("an address");
        assert_eq!(
            source_key(mapped),
            source_key("192.0.2.1".parse().expect("v4"))
        );
    }

    #[test]
    fn the_overall_limit_keeps_its_last_half_for_sources_in_good_standing() {
        // The overall budget refills a unit every 50 ms: a run that the
        // machine stalls for that long proves nothing, and runs again.
        for _ in 0..20 {
            let started = Instant::now();
            let outcome = overall_limit_scenario();
            if started.elapsed() < Duration::from_millis(40) {
                let (admitted, newcomers, last_refused) = outcome;
                // 4 flooders × 2 in good standing; doubtful, they must leave
                // 10 of the 20, so 2 more get in.
                assert_eq!(admitted, 10, "{admitted} admitted");
                assert!(
                    newcomers.iter().all(|s| *s == Some(Standing::Good)),
                    "good standing takes the last units: {newcomers:?}"
                );
                assert!(last_refused, "and then the overall budget is spent");
                return;
            }
        }
        panic!("every run of the scenario was stalled for 40 ms or more");
    }

    /// Flooders from four sources, then ten newcomers, then one more: how
    /// many flooders were admitted, the newcomers' standings, and whether
    /// the last was refused.
    fn overall_limit_scenario() -> (usize, Vec<Option<Standing>>, bool) {
        // Sources of a burst of 4 are in good standing for 2 failures. The
        // table of budgets is large, so that no newcomer's address shares a
        // cell with a flooder's (with 1,000 cells, one run in about 25 had
        // a newcomer refused for a flooder's spent budget).
        let mut large = settings(100, 4, Some(20));
        large.tracked_clients = 1 << 20;
        let throttle = ValidationThrottle::new(&large, 2, Duration::from_millis(40));
        let mut admitted = 0;
        for n in 0..40 {
            let flooder = ip(&format!("198.51.100.{}", n % 4));
            admitted += usize::from(fail(&throttle, &client(), flooder));
        }
        let newcomers = (0..10)
            .map(|n| {
                throttle
                    .admit(&client(), ip(&format!("203.0.113.{n}")))
                    .ok()
                    .map(|admission| admission.standing())
            })
            .collect();
        let last_refused = throttle.admit(&client(), ip("203.0.113.99")).is_err();
        (admitted, newcomers, last_refused)
    }

    #[test]
    fn a_source_that_keeps_failing_loses_its_standing() {
        let throttle = throttle(100, 4, Some(1_000));
        let standings: Vec<_> = (0..4)
            .map(|_| {
                throttle
                    .admit(&client(), ip("198.51.100.1"))
                    .expect("admitted")
                    .standing()
            })
            .collect();
        assert_eq!(
            standings,
            [
                Standing::Good,
                Standing::Good,
                Standing::Doubtful,
                Standing::Doubtful
            ]
        );
    }

    #[test]
    fn without_a_source_a_miss_may_take_the_whole_overall_budget_in_the_ordinary_queue() {
        let throttle = throttle(100, 100, Some(4));
        for _ in 0..4 {
            let admitted = throttle.admit(&client(), None).expect("admitted");
            assert_eq!(admitted.standing(), Standing::Unknown);
        }
        assert!(
            throttle.admit(&client(), None).is_err(),
            "the overall budget is spent"
        );
    }

    #[test]
    fn the_overall_rate_defaults_to_twice_the_measured_capacity() {
        // 2 threads at 40 ms per verify: 50 a second; twice that is 100.
        assert_eq!(throttle(1, 1, None).overall_per_second(), 100);
    }

    #[test]
    fn the_table_has_a_fixed_size_whatever_the_number_of_client_ids() {
        let mut settings = settings(1, 1_000_000, Some(1_000_000));
        settings.tracked_clients = 100;
        let throttle = ValidationThrottle::new(&settings, 1, Duration::from_millis(40));
        let admitted = (0..2_000)
            .filter(|_| fail(&throttle, &client(), None))
            .count();
        // 128 cells of one unit each: at most 128 of 2,000 fresh IDs get in
        // within a second, and at least one per cell that was hit.
        assert!(admitted <= 128, "{admitted} admitted");
        assert!(admitted >= 64, "{admitted} admitted");
    }

    #[test]
    fn activations_are_refused_only_after_the_failure_budget_is_spent() {
        let throttle = ActivationThrottle::new(&settings(1, 1, None));
        let org = OrganizationId::parse("org-a".into()).expect("valid");
        let other = OrganizationId::parse("org-b".into()).expect("valid");
        for _ in 0..10 {
            let attempt = throttle.admit(&org).expect("a match gives its unit back");
            throttle.verified(attempt);
        }
        for n in 0..3 {
            assert!(throttle.admit(&org).is_ok(), "failure {n} is within budget");
        }
        let refused = throttle.admit(&org).expect_err("over budget");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            throttle.admit(&other).is_ok(),
            "another organization has its own budget"
        );
    }

    #[test]
    fn the_default_budget_lets_exactly_ten_failures_through_at_once() {
        let mut ten = settings(1, 1, None);
        ten.activation_failures_per_minute = nz(10);
        let throttle = ActivationThrottle::new(&ten);
        let org = OrganizationId::parse("org-a".into()).expect("valid");
        let admitted = (0..20).filter(|_| throttle.admit(&org).is_ok()).count();
        assert_eq!(admitted, 10, "the budget is 10, not 11");
    }
}
