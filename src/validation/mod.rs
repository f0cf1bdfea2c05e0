//! The gateway's check of a client ID and secret (ValidateClient), as a
//! token endpoint does it. Only the client's ACTIVE secret is valid.
//!
//! A check costs, from the cheapest answer to the dearest:
//! 1. credentials that cannot be ones this service issued (the wrong shape,
//!    or a secret whose checksum fails): `valid: false`, without a lookup;
//! 2. a pair verified recently: one HMAC and one map lookup in the
//!    [`cache`]; once the revalidation interval has passed, plus one indexed
//!    database read to confirm the secret is still the active one;
//! 3. anything else, if the throttle (`crate::throttle`) admits it: one
//!    database read and one argon2 verify (`crate::hashing`). Identical
//!    checks under way share one verify ([`single_flight`]). A well-formed
//!    but unknown client ID costs the same (the verify runs against a decoy
//!    hash), so an unknown client and a wrong secret cannot be told apart by
//!    their answer, their timing or their throttling.
//!
//! A value whose hint (last four characters) is not the active secret's but
//! is a retired (revoked or discarded) secret's of the client is verified
//! against the most recently retired of those instead of the active one:
//! the same read, still one verify, the same throttling, the same answer.
//! If it matches, an application still holds a secret the organization
//! retired: that is recorded and logged ([`crate::usage`]), and answered
//! `valid: false` all the same.
//!
//! Every valid answer, a cache hit as much as a verify, is a use of its
//! secret, handed to the [`UsageRecorder`] (which returns at once).
//!
//! Why a check failed ([`Rejection`]) is for the log only: the caller learns
//! nothing but `valid: false`.

pub mod cache;
mod single_flight;

use std::{net::IpAddr, sync::Arc};

use uuid::Uuid;

use self::cache::{CredentialCache, Epoch, Fingerprint, Lookup, Read, Verified};
use self::single_flight::SingleFlight;
use crate::domain::{ClientId, ClientSecret, DomainName, OrganizationId, login_domain};
use crate::error::Error;
use crate::hashing::{Hasher, Precedence};
use crate::rehash;
use crate::store::{ActiveCredentials, Candidates, Store};
use crate::throttle::{Standing, ValidationThrottle};
use crate::usage::UsageRecorder;

/// A client ID and secret as a caller presented them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Both have the shape of what this service issues: worth a lookup.
    WellFormed {
        client_id: ClientId,
        secret: ClientSecret,
    },
    /// One of them cannot be ours; the client ID is kept if it is well
    /// formed, for the log.
    Malformed { client_id: Option<ClientId> },
}

impl Credentials {
    /// Recognizes what this service could have issued: costs a CRC.
    pub fn presented(client_id: &str, secret: &str) -> Self {
        match (ClientId::parse(client_id), ClientSecret::parse(secret)) {
            (Some(client_id), Ok(secret)) => Self::WellFormed { client_id, secret },
            (client_id, _) => Self::Malformed { client_id },
        }
    }

    /// The client ID, if it is well formed (and so safe to log).
    pub fn client_id(&self) -> Option<&ClientId> {
        match self {
            Self::WellFormed { client_id, .. } => Some(client_id),
            Self::Malformed { client_id } => client_id.as_ref(),
        }
    }
}

/// The answer to a client check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    Valid(ValidClient),
    Invalid(Rejection),
}

/// What a valid check answers: whose client it is, and where its users log
/// in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidClient {
    pub organization_id: OrganizationId,
    pub domain: String,
}

/// Why a client check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The client ID or the secret cannot be one this service issued.
    Malformed,
    /// No such client, or it has no active secret.
    NoActiveSecret,
    /// The secret is not the client's active secret.
    WrongSecret,
    /// The secret is one the client had, revoked or discarded since.
    RetiredSecret,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NoActiveSecret => "no_active_secret",
            Self::WrongSecret => "wrong_secret",
            Self::RetiredSecret => "retired_secret",
        }
    }
}

/// The check, over the store, the hasher, the cache and the throttle.
pub struct Validator {
    store: Store,
    hasher: Hasher,
    cache: Arc<CredentialCache>,
    throttle: ValidationThrottle,
    /// Verifications under way, by the pair's fingerprint and the epoch of
    /// its client they started in; see [`Validator::verify_once`].
    in_flight: SingleFlight<(Fingerprint, Epoch), Result<Validation, Error>>,
    default_domain: DomainName,
    usage: UsageRecorder,
}

impl Validator {
    /// `cache` is shared with what invalidates it: activations
    /// (`crate::integrations`) and other replicas' notices
    /// (`crate::invalidation`); `usage` is told of every use of a secret.
    pub fn new(
        store: Store,
        hasher: Hasher,
        cache: Arc<CredentialCache>,
        throttle: ValidationThrottle,
        default_domain: DomainName,
        usage: UsageRecorder,
    ) -> Self {
        Self {
            store,
            hasher,
            cache,
            throttle,
            in_flight: SingleFlight::default(),
            default_domain,
            usage,
        }
    }

    /// Checks `credentials` presented from `source` (if the gateway said),
    /// in the order of cost the module describes.
    pub async fn validate(
        &self,
        credentials: &Credentials,
        source: Option<IpAddr>,
    ) -> Result<Validation, Error> {
        let Credentials::WellFormed { client_id, secret } = credentials else {
            return Ok(Validation::Invalid(Rejection::Malformed));
        };
        let fingerprint = self.cache.fingerprint(client_id, secret);
        match self.cache.lookup(client_id, &fingerprint) {
            Lookup::Fresh(Verified { secret_id, answer }) => {
                crate::metrics::cache_hit();
                self.usage.used(secret_id);
                return Ok(Validation::Valid(answer));
            }
            Lookup::Stale { secret_id } => {
                crate::metrics::cache_revalidation();
                if let Some(valid) = self.confirm(client_id, fingerprint, secret_id).await? {
                    return Ok(valid);
                }
                self.cache.discard(client_id, &fingerprint);
            }
            Lookup::Miss => crate::metrics::cache_miss(),
        }
        self.verify_once(client_id, secret, fingerprint, source)
            .await
    }

    /// Answers valid if `secret_id`, verified earlier for the pair of
    /// `fingerprint`, is still the client's active secret: one indexed read,
    /// no argon2, no throttle. `None` if it is not.
    async fn confirm(
        &self,
        client_id: &ClientId,
        fingerprint: Fingerprint,
        secret_id: Uuid,
    ) -> Result<Option<Validation>, Error> {
        // A read that took longer than the revalidation interval, or that an
        // invalidation of the client overtook, cannot be answered: read again.
        for _ in 0..CONFIRMATION_READS {
            let read = self.cache.before_read(client_id);
            match self.store.active_credentials(client_id).await? {
                Some(active) if active.secret_id == secret_id => {
                    if self.cache.still_trusts(&read) {
                        return Ok(Some(self.remember(read, fingerprint, active)));
                    }
                }
                _ => return Ok(None),
            }
        }
        Err(Error::unavailable(
            "the database answered too slowly to confirm the secret within the revalidation \
             interval",
        ))
    }

    /// Verifies a pair the cache could not answer. Identical checks that
    /// arrive while one is being verified wait for its answer instead of
    /// verifying again: after a restart or a rotation, a gateway's burst of
    /// checks of one client costs one argon2 verify, and uses one unit of the
    /// client's throttle budget, not one each. Checks that start on either
    /// side of an invalidation (an activation) are in different epochs, so
    /// they never share an answer.
    async fn verify_once(
        &self,
        client_id: &ClientId,
        secret: &ClientSecret,
        fingerprint: Fingerprint,
        source: Option<IpAddr>,
    ) -> Result<Validation, Error> {
        let read = self.cache.before_read(client_id);
        let key = (fingerprint, read.epoch());
        let share = |outcome: &Result<Validation, Error>| match outcome {
            Ok(validation) => Ok(validation.clone()),
            Err(error) => Err(error.shared()),
        };
        let verify = || self.verify(read, client_id, secret.clone(), fingerprint, source);
        self.in_flight.run(key, verify, share).await
    }

    /// The slow way: the throttle, one database read, one argon2 verify, of
    /// the active secret, a retired one with the value's hint (see the
    /// module), or the decoy.
    async fn verify(
        &self,
        read: Read,
        client_id: &ClientId,
        secret: ClientSecret,
        fingerprint: Fingerprint,
        source: Option<IpAddr>,
    ) -> Result<Validation, Error> {
        let admission = self.throttle.admit(client_id, source)?;
        // Callers that rarely fail go ahead of a flood in argon2's queue.
        let precedence = match admission.standing() {
            Standing::Good => Precedence::High,
            Standing::Doubtful | Standing::Unknown => Precedence::Normal,
        };
        let verified = async {
            let Candidates { active, retired } =
                self.store.candidates(client_id, secret.hint()).await?;
            let (checked, hash) = match (active, retired) {
                (active, Some(retired)) => (
                    Checked::Retired {
                        secret_id: retired.secret_id,
                        active: active.is_some(),
                    },
                    retired.hash,
                ),
                (Some(active), None) => {
                    let hash = active.hash.clone();
                    (Checked::Active(active), hash)
                }
                (None, None) => {
                    self.hasher.verify_decoy(secret.clone(), precedence).await?;
                    return Ok((Checked::Decoy, false));
                }
            };
            let matches = self.hasher.verify(secret.clone(), hash, precedence).await?;
            Ok::<_, Error>((checked, matches))
        };
        let active = match verified.await {
            Ok((Checked::Active(active), true)) => {
                self.throttle.verified(admission);
                active
            }
            // Refused as any wrong value is: its throttle unit stays spent.
            Ok((Checked::Retired { secret_id, .. }, true)) => {
                self.usage.retired_used(secret_id, client_id);
                return Ok(Validation::Invalid(Rejection::RetiredSecret));
            }
            Ok((Checked::Active(_) | Checked::Retired { active: true, .. }, false)) => {
                return Ok(Validation::Invalid(Rejection::WrongSecret));
            }
            Ok((Checked::Decoy | Checked::Retired { active: false, .. }, _)) => {
                return Ok(Validation::Invalid(Rejection::NoActiveSecret));
            }
            Err(error) => {
                self.throttle.unverified(admission);
                return Err(error);
            }
        };
        // A secret stored below the configured cost is stored again at it.
        rehash::upgrade(
            &self.store,
            &self.hasher,
            active.secret_id,
            secret,
            active.hash.clone(),
        );
        // The verify may have waited in argon2's queue past the revalidation
        // interval, or past an activation: then its read is not answered.
        if self.cache.still_trusts(&read) {
            return Ok(self.remember(read, fingerprint, active));
        }
        Ok(self
            .confirm(client_id, fingerprint, active.secret_id)
            .await?
            .unwrap_or(Validation::Invalid(Rejection::NoActiveSecret)))
    }

    /// Remembers that `read` found the pair to be the client's `active`
    /// secret, records the use, and answers it.
    fn remember(
        &self,
        read: Read,
        fingerprint: Fingerprint,
        active: ActiveCredentials,
    ) -> Validation {
        let answer = ValidClient {
            domain: login_domain(active.verified_domain.as_deref(), &self.default_domain)
                .to_owned(),
            organization_id: active.organization_id,
        };
        let verified = Verified {
            secret_id: active.secret_id,
            answer: answer.clone(),
        };
        self.cache.remember(read, fingerprint, verified);
        self.usage.used(active.secret_id);
        Validation::Valid(answer)
    }
}

/// What a cache miss verified the value against.
enum Checked {
    /// The client's active secret.
    Active(ActiveCredentials),
    /// A retired secret with the value's hint; `active` if the client has
    /// an active secret too.
    Retired { secret_id: Uuid, active: bool },
    /// The decoy: the client is unknown.
    Decoy,
}

/// Reads a confirmation may take before it gives up: each read that is not
/// trusted by the time it is answered takes another.
const CONFIRMATION_READS: usize = 2;

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, time::Duration};

    use super::*;
    use crate::audit::Attribution;
    use crate::config::{
        CacheSettings, DatabaseSettings, HashingSettings, Priority, ThrottleSettings, UsageSettings,
    };
    use crate::domain::HashParams;
    use crate::integrations::Integrations;
    use crate::throttle::ActivationThrottle;
    use crate::usage::UsageWriter;

    /// The service's two halves over one store: the operations that make
    /// secrets, and the check, sharing one cache; and what records uses.
    struct Service {
        integrations: Integrations,
        validator: Validator,
        cache: Arc<CredentialCache>,
        usage: UsageRecorder,
        _writer: UsageWriter,
    }

    impl Service {
        async fn validate(&self, client_id: &ClientId, secret: &ClientSecret) -> Validation {
            self.validator
                .validate(
                    &Credentials::presented(client_id.as_str(), secret.expose()),
                    None,
                )
                .await
                .expect("answered, not throttled")
        }

        /// Creates `organization`'s integration and a pending secret.
        async fn pending(&self, organization: &OrganizationId) -> (ClientId, ClientSecret) {
            let client_id = self
                .integrations
                .create(organization, &Attribution::system())
                .await
                .expect("created")
                .client_id;
            let (secret, _) = self
                .integrations
                .generate_secret(organization, &Attribution::system())
                .await
                .expect("generated");
            (client_id, secret)
        }

        async fn activate(&self, organization: &OrganizationId, secret: &ClientSecret) {
            self.integrations
                .activate_secret(organization, &Ok(secret.clone()), &Attribution::system())
                .await
                .expect("activated");
        }
    }

    /// The service over a fresh SQLite file, with a per-client burst of
    /// `burst` cache misses.
    async fn service(dir: &tempfile::TempDir, burst: u32) -> Service {
        service_hashing_at(dir, burst, HashParams::MINIMUM).await
    }

    /// The same, hashing new secrets at `params`.
    async fn service_hashing_at(
        dir: &tempfile::TempDir,
        burst: u32,
        params: HashParams,
    ) -> Service {
        let store = Store::connect(&DatabaseSettings {
            url: format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()),
            max_connections: 4,
            acquire_timeout: Duration::from_secs(10),
        })
        .await
        .expect("SQLite opens");
        store.migrate().await.expect("migrated");
        let hasher = Hasher::start(&HashingSettings {
            params,
            threads: 2,
            queue_capacity: 16,
            queue_timeout: Duration::from_secs(30),
            priority: Priority::Normal,
        })
        .await
        .expect("hasher");
        let cache = Arc::new(
            CredentialCache::new(&CacheSettings {
                capacity: 100,
                revalidate: Duration::from_secs(60),
            })
            .expect("RNG"),
        );
        let many = NonZeroU32::new(1_000).expect("non-zero");
        let throttling = ThrottleSettings {
            per_client_per_second: NonZeroU32::MIN,
            per_client_burst: NonZeroU32::new(burst).expect("non-zero"),
            per_source_per_second: NonZeroU32::MIN,
            per_source_burst: NonZeroU32::new(burst).expect("non-zero"),
            overall_per_second: Some(many),
            tracked_clients: 100,
            activation_failures_per_minute: NonZeroU32::new(burst).expect("non-zero"),
        };
        let domain = DomainName::parse("centralauth.test").expect("a domain");
        let throttle = ValidationThrottle::new(&throttling, 2, hasher.verify_time());
        let (usage, queue) = crate::usage::recorder(&UsageSettings {
            interval: Duration::from_secs(60),
            tracked_secrets: 100,
        });
        Service {
            integrations: Integrations::new(
                store.clone(),
                hasher.clone(),
                Arc::clone(&cache),
                ActivationThrottle::new(&throttling),
                domain.clone(),
                Duration::from_secs(3600),
                Arc::new(
                    crate::dns::DnsVerifier::new(Some("127.0.0.1:9".parse().expect("an address")))
                        .expect("a resolver"),
                ),
            ),
            _writer: queue.write_to(store.clone()),
            validator: Validator::new(
                store,
                hasher,
                Arc::clone(&cache),
                throttle,
                domain,
                usage.clone(),
            ),
            cache,
            usage,
        }
    }

    #[tokio::test]
    async fn only_a_successful_validation_of_the_active_secret_enters_the_cache() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let service = service(&dir, 1_000).await;
        let (integrations, cache) = (&service.integrations, &service.cache);
        let org = OrganizationId::parse("org-cache".into()).expect("valid");
        let (client_id, pending) = service.pending(&org).await;
        let wrong = ClientSecret::generate().expect("RNG");
        let unknown = ClientId::generate().expect("RNG");

        for (what, id, value) in [
            ("a pending secret", &client_id, &pending),
            ("a wrong secret", &client_id, &wrong),
            ("an unknown client", &unknown, &pending),
        ] {
            let validation = service.validate(id, value).await;
            assert!(
                matches!(validation, Validation::Invalid(_)),
                "{what} validated"
            );
            assert!(cache.is_empty(), "{what} entered the cache");
        }

        // Activating proves possession of the value: it is remembered.
        service.activate(&org, &pending).await;
        assert_eq!(cache.len(), 1, "the activated secret is remembered");
        // So is a verification of it, after the cache lost it.
        cache.forget(&client_id);
        assert!(cache.is_empty(), "forgotten");
        let validation = service.validate(&client_id, &pending).await;
        assert!(
            matches!(validation, Validation::Valid(_)),
            "the active secret validates"
        );
        assert_eq!(
            cache.len(),
            1,
            "the active secret is remembered once verified"
        );

        let (newer, _) = integrations
            .generate_secret(&org, &Attribution::system())
            .await
            .expect("generated");
        service.activate(&org, &newer).await;
        let old = service.validate(&client_id, &pending).await;
        assert!(
            matches!(old, Validation::Invalid(_)),
            "the revoked secret was forgotten"
        );
        assert_eq!(cache.len(), 1, "only the newer secret is remembered");
    }

    #[tokio::test]
    async fn an_activated_secret_is_remembered_untrusted_and_confirmed_without_a_verify() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // No cache miss allowed after the first: a verify would be refused.
        let service = service(&dir, 1).await;
        let org = OrganizationId::parse("org-proven".into()).expect("valid");
        let (client_id, secret) = service.pending(&org).await;
        service.activate(&org, &secret).await;
        let fingerprint = service.cache.fingerprint(&client_id, &secret);
        assert!(
            matches!(
                service.cache.lookup(&client_id, &fingerprint),
                Lookup::Stale { .. }
            ),
            "read before the activation's own invalidation: not trusted yet"
        );
        // Spend the client's one cache miss: a verify now would be refused.
        let wrong = ClientSecret::generate().expect("RNG");
        assert!(
            matches!(
                service.validate(&client_id, &wrong).await,
                Validation::Invalid(_)
            ),
            "a wrong secret is verified, and refused"
        );
        for n in 0..3 {
            assert!(
                matches!(
                    service.validate(&client_id, &secret).await,
                    Validation::Valid(_)
                ),
                "check {n}: confirmed by a read, not refused by the throttle"
            );
        }
        assert!(
            matches!(
                service.cache.lookup(&client_id, &fingerprint),
                Lookup::Fresh(_)
            ),
            "trusted once confirmed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identical_checks_that_arrive_together_share_one_verification() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // One cache miss per client ID: a second verification would be refused.
        let service = Arc::new(service(&dir, 1).await);
        let org = OrganizationId::parse("org-burst".into()).expect("valid");
        let (client_id, secret) = service.pending(&org).await;
        service.activate(&org, &secret).await;
        // As after a restart: nothing is cached.
        service.cache.forget(&client_id);
        assert!(service.cache.is_empty(), "forgotten");

        let checks: Vec<_> = (0..16)
            .map(|_| {
                let (service, client_id, secret) =
                    (Arc::clone(&service), client_id.clone(), secret.clone());
                tokio::spawn(async move { service.validate(&client_id, &secret).await })
            })
            .collect();
        for check in checks {
            let validation = check.await.expect("join");
            assert!(
                matches!(validation, Validation::Valid(_)),
                "every check of the burst shares the one verification"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_that_starts_after_an_activation_never_shares_an_earlier_answer() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // The old secret is hashed slowly (about half a second to verify
        // here), so that a check of it is still verifying when the
        // activation of the new one, hashed at the floor, returns.
        let slow = HashParams::new(64 * 1024, 8, 1).expect("valid");
        let slow_side = service_hashing_at(&dir, 1_000, slow).await;
        let service = Arc::new(service(&dir, 1_000).await);
        let org = OrganizationId::parse("org-swap".into()).expect("valid");
        let (client_id, old) = slow_side.pending(&org).await;
        slow_side.activate(&org, &old).await;
        let (new, _) = service
            .integrations
            .generate_secret(&org, &Attribution::system())
            .await
            .expect("generated");
        assert!(service.cache.is_empty(), "the old secret is cold here");

        let before = {
            let (service, client_id, old) = (Arc::clone(&service), client_id.clone(), old.clone());
            tokio::spawn(async move { service.validate(&client_id, &old).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        service.activate(&org, &new).await;
        assert!(
            !before.is_finished(),
            "the earlier check is still verifying"
        );
        let after = service.validate(&client_id, &old).await;
        assert!(
            matches!(after, Validation::Invalid(_)),
            "a check that started after the activation accepted the revoked secret"
        );
        // The earlier check overlapped the activation: either answer is fair.
        before.await.expect("join");
    }

    #[test]
    fn credentials_of_another_shape_are_malformed_and_keep_a_well_formed_client_id() {
        let client_id = ClientId::generate().expect("RNG");
        let secret = ClientSecret::generate().expect("RNG");
        assert_eq!(
            Credentials::presented(client_id.as_str(), secret.expose()),
            Credentials::WellFormed {
                client_id: client_id.clone(),
                secret: secret.clone()
            },
            "both well formed"
        );
        let typo = format!("{}x", &secret.expose()[..63]);
        assert_eq!(
            Credentials::presented(client_id.as_str(), &typo).client_id(),
            Some(&client_id),
            "a bad secret keeps the client ID for the log"
        );
        assert_eq!(
            Credentials::presented("not-a-client-id", secret.expose()),
            Credentials::Malformed { client_id: None },
            "a bad client ID is not kept"
        );
    }

    #[tokio::test]
    async fn a_verified_pair_needs_no_budget_once_its_entry_is_gone() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let service = service(&dir, 1).await;
        let org = OrganizationId::parse("org-remembered".into()).expect("valid");
        let (client_id, secret) = service.pending(&org).await;
        service.activate(&org, &secret).await;
        assert!(matches!(
            service.validate(&client_id, &secret).await,
            Validation::Valid(_)
        ));
        service.cache.evict(&client_id);
        // Spend the client's one unit, then be refused.
        let wrong = ClientSecret::generate().expect("RNG");
        assert!(matches!(
            service.validate(&client_id, &wrong).await,
            Validation::Invalid(_)
        ));
        let refused = service
            .validator
            .validate(
                &Credentials::presented(client_id.as_str(), wrong.expose()),
                None,
            )
            .await
            .expect_err("the budget is spent");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            matches!(
                service.validate(&client_id, &secret).await,
                Validation::Valid(_)
            ),
            "the remembered pair is confirmed by a read, without the budget"
        );
    }

    #[tokio::test]
    async fn only_activation_verifies_that_fail_spend_the_budget() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // One failed verify a minute.
        let service = service(&dir, 1).await;
        let org = OrganizationId::parse("org-activating".into()).expect("valid");
        let (_, pending) = service.pending(&org).await;
        let activate = |value: ClientSecret| {
            let (integrations, org) = (&service.integrations, &org);
            async move {
                integrations
                    .activate_secret(org, &Ok(value), &Attribution::system())
                    .await
                    .map(|_| ())
            }
        };
        let code = |result: Result<(), Error>| result.expect_err("refused").code();
        for _ in 0..20 {
            let other_hint = ClientSecret::generate().expect("RNG");
            let answer = activate(other_hint).await;
            assert_eq!(
                code(answer),
                tonic::Code::FailedPrecondition,
                "ruled out by its hint"
            );
        }
        let malformed = service
            .integrations
            .activate_secret(
                &org,
                &Err(crate::domain::MalformedSecret::Checksum),
                &Attribution::system(),
            )
            .await;
        assert_eq!(
            malformed.expect_err("refused").code(),
            tonic::Code::FailedPrecondition
        );
        let same_hint = ClientSecret::with_hint_of(&pending);
        assert_eq!(
            code(activate(same_hint.clone()).await),
            tonic::Code::FailedPrecondition,
            "verified, and wrong: the unit is spent"
        );
        assert_eq!(
            code(activate(same_hint).await),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            code(activate(ClientSecret::generate().expect("RNG")).await),
            tonic::Code::FailedPrecondition,
            "a value ruled out by its hint is still answered"
        );
        assert_eq!(
            code(activate(pending.clone()).await),
            tonic::Code::ResourceExhausted,
            "the right value needs a verify, which the spent budget refuses"
        );
    }

    /// Validates `secret` for `client_id` as the gateway presents it,
    /// without the checksum check (a value made by
    /// [`ClientSecret::with_hint_of`] has none).
    async fn check(service: &Service, client_id: &ClientId, secret: &ClientSecret) -> Validation {
        let credentials = Credentials::WellFormed {
            client_id: client_id.clone(),
            secret: secret.clone(),
        };
        service
            .validator
            .validate(&credentials, None)
            .await
            .expect("answered, not throttled")
    }

    #[tokio::test]
    async fn a_retired_value_is_refused_as_retired_and_counted() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let service = service(&dir, 1_000).await;
        let org = OrganizationId::parse("org-retired".into()).expect("valid");
        let (client_id, revoked) = service.pending(&org).await;
        service.activate(&org, &revoked).await;
        let (discarded, _) = service
            .integrations
            .generate_secret(&org, &Attribution::system())
            .await
            .expect("generated");
        let (active, _) = service
            .integrations
            .generate_secret(&org, &Attribution::system())
            .await
            .expect("generated");
        service.activate(&org, &active).await;

        for (what, value) in [("revoked", &revoked), ("discarded", &discarded)] {
            assert_eq!(
                check(&service, &client_id, value).await,
                Validation::Invalid(Rejection::RetiredSecret),
                "the {what} value"
            );
        }
        assert_eq!(service.usage.counts().retired_seen, 2, "both are counted");
        let wrong = ClientSecret::generate().expect("RNG");
        assert_eq!(
            check(&service, &client_id, &wrong).await,
            Validation::Invalid(Rejection::WrongSecret),
            "a value with another hint is checked against the active secret"
        );
        assert!(
            matches!(
                check(&service, &client_id, &active).await,
                Validation::Valid(_)
            ),
            "the active value"
        );
        assert_eq!(service.usage.counts().retired_seen, 2, "nothing more");
    }

    #[tokio::test]
    async fn a_wrong_value_with_a_retired_secrets_hint_is_a_wrong_secret() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let service = service(&dir, 1_000).await;
        let org = OrganizationId::parse("org-lookalike".into()).expect("valid");
        let (client_id, revoked) = service.pending(&org).await;
        service.activate(&org, &revoked).await;
        let (active, _) = service
            .integrations
            .generate_secret(&org, &Attribution::system())
            .await
            .expect("generated");
        service.activate(&org, &active).await;

        let lookalike = ClientSecret::with_hint_of(&revoked);
        assert_eq!(
            check(&service, &client_id, &lookalike).await,
            Validation::Invalid(Rejection::WrongSecret),
            "verified against the retired secret, and wrong"
        );
        let active_lookalike = ClientSecret::with_hint_of(&active);
        assert_eq!(
            check(&service, &client_id, &active_lookalike).await,
            Validation::Invalid(Rejection::WrongSecret),
            "verified against the active secret, and wrong"
        );
        assert_eq!(service.usage.counts().retired_seen, 0, "no retired use");
    }

    #[tokio::test]
    async fn a_retired_value_of_a_client_without_an_active_secret_is_still_seen() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let service = service(&dir, 1_000).await;
        let org = OrganizationId::parse("org-none-active".into()).expect("valid");
        let (client_id, discarded) = service.pending(&org).await;
        service
            .integrations
            .generate_secret(&org, &Attribution::system())
            .await
            .expect("generated");
        assert_eq!(
            check(&service, &client_id, &discarded).await,
            Validation::Invalid(Rejection::RetiredSecret),
            "the discarded value, verified instead of the decoy"
        );
        let lookalike = ClientSecret::with_hint_of(&discarded);
        assert_eq!(
            check(&service, &client_id, &lookalike).await,
            Validation::Invalid(Rejection::NoActiveSecret),
            "a wrong value with its hint"
        );
        assert_eq!(
            service.usage.counts().retired_seen,
            1,
            "the discarded value"
        );
    }

    #[tokio::test]
    async fn a_retired_value_spends_the_budget_a_wrong_one_spends() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // One failed cache miss per client.
        let service = service(&dir, 1).await;
        let mut clients = Vec::new();
        for name in ["org-spent-retired", "org-spent-wrong"] {
            let org = OrganizationId::parse(name.into()).expect("valid");
            let (client_id, old) = service.pending(&org).await;
            service.activate(&org, &old).await;
            let (new, _) = service
                .integrations
                .generate_secret(&org, &Attribution::system())
                .await
                .expect("generated");
            service.activate(&org, &new).await;
            clients.push((client_id, old));
        }
        let (retired_client, retired) = &clients[0];
        let (wrong_client, _) = &clients[1];
        let wrong = ClientSecret::generate().expect("RNG");
        for (what, client_id, value) in [
            ("a retired value", retired_client, retired),
            ("a wrong value", wrong_client, &wrong),
        ] {
            assert!(
                matches!(
                    check(&service, client_id, value).await,
                    Validation::Invalid(_)
                ),
                "{what}: verified and refused"
            );
            let credentials = Credentials::WellFormed {
                client_id: client_id.clone(),
                secret: value.clone(),
            };
            let again = service.validator.validate(&credentials, None).await;
            assert_eq!(
                again.expect_err("the budget is spent").code(),
                tonic::Code::ResourceExhausted,
                "{what}: its unit stays spent"
            );
        }
    }
}
