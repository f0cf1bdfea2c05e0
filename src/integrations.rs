//! The Integration tab's operations and the gateway's check, in domain
//! terms: what each RPC does once its input is parsed.

use std::sync::Arc;

use tracing::info;

use crate::cache::{CredentialCache, Fingerprint, Lookup, Moment, Verified};
use crate::domain::{ClientId, ClientSecret, DomainName, OrganizationId};
use crate::error::Error;
use crate::hashing::Hasher;
use crate::single_flight::SingleFlight;
use crate::store::{Activation, Integration, NewSecret, Store, StoredSecret};
use crate::throttle::Throttle;

/// The operations, over the store, the hasher, and the gateway's cache and
/// throttle.
pub struct Integrations {
    store: Store,
    hasher: Hasher,
    cache: Arc<CredentialCache>,
    throttle: Throttle,
    /// Verifications under way, by the pair's fingerprint and its client's
    /// last invalidation; see [`Integrations::verify_once`].
    in_flight: SingleFlight<(Fingerprint, Moment), Result<Validation, Error>>,
    default_domain: DomainName,
}

/// The answer to a client check. Why a check failed is for the log only:
/// the caller learns nothing but `valid = false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    Valid {
        organization_id: OrganizationId,
        domain: String,
    },
    Invalid(Rejection),
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
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NoActiveSecret => "no_active_secret",
            Self::WrongSecret => "wrong_secret",
        }
    }
}

impl Integrations {
    pub fn new(
        store: Store,
        hasher: Hasher,
        cache: Arc<CredentialCache>,
        throttle: Throttle,
        default_domain: DomainName,
    ) -> Self {
        Self {
            store,
            hasher,
            cache,
            throttle,
            in_flight: SingleFlight::default(),
            default_domain,
        }
    }

    /// The domain users of this integration log in at: its custom domain
    /// if it has one, otherwise the service's default.
    pub fn domain<'a>(&'a self, custom_domain: Option<&'a str>) -> &'a str {
        custom_domain.unwrap_or(self.default_domain.as_str())
    }

    /// Creates the organization's integration with a new client ID and no
    /// secret.
    pub async fn create(&self, organization: &OrganizationId) -> Result<Integration, Error> {
        let client_id = ClientId::generate().map_err(Error::internal)?;
        let integration = self
            .store
            .create_integration(organization, &client_id)
            .await?
            .ok_or_else(|| {
                Error::AlreadyExists(format!(
                    "organization \"{organization}\" already has an integration; \
                     read it with GetIntegration"
                ))
            })?;
        info!(client_id = %integration.client_id, "integration created");
        Ok(integration)
    }

    pub async fn get(&self, organization: &OrganizationId) -> Result<Integration, Error> {
        self.store
            .integration(organization)
            .await?
            .ok_or_else(|| not_found(organization))
    }

    /// Generates a new PENDING secret and returns its value, the only time
    /// it is ever available. The pending secret it replaces is DISCARDED;
    /// the active one stays active.
    ///
    /// The value is returned only after the transaction that stores its hash
    /// has committed, so a value a caller receives can always be activated.
    pub async fn generate_secret(
        &self,
        organization: &OrganizationId,
    ) -> Result<(ClientSecret, StoredSecret), Error> {
        // Checked first so that a call for an unknown organization costs no
        // hashing; the transaction below checks again.
        if !self.store.integration_exists(organization).await? {
            return Err(not_found(organization));
        }
        let secret = ClientSecret::generate().map_err(Error::internal)?;
        let new = NewSecret {
            hash: self.hasher.hash(secret.clone()).await?,
            hint: secret.hint().to_owned(),
        };
        let generated = self
            .store
            .add_pending_secret(organization, new)
            .await?
            .ok_or_else(|| not_found(organization))?;
        info!(
            secret_id = %generated.secret.id,
            discarded_secret_id = generated.discarded.map(tracing::field::display),
            "secret generated"
        );
        Ok((secret, generated.secret))
    }

    /// Activates the secret whose value the caller holds.
    ///
    /// The value of the PENDING secret makes it ACTIVE and revokes the
    /// previous active one, in one transaction. The value of the ACTIVE
    /// secret succeeds and changes nothing, so a retried activation succeeds.
    /// Any other value fails `FAILED_PRECONDITION`, and counts against the
    /// organization's budget of failures (`RESOURCE_EXHAUSTED` once spent).
    pub async fn activate_secret(
        &self,
        organization: &OrganizationId,
        value: &str,
    ) -> Result<Integration, Error> {
        let failures = self.throttle.activations();
        failures.admit(organization)?;
        let integration = self.get(organization).await?;
        let no_match = |detail: &str| {
            Error::FailedPrecondition(format!(
                "client_secret is neither the pending nor the active secret of organization \
                 \"{organization}\"{detail}; generate a new secret and activate it with the \
                 value GenerateSecret returned"
            ))
        };
        let secret = ClientSecret::parse(value).map_err(|e| {
            failures.failed(organization);
            no_match(&format!(" ({e})"))
        })?;

        // The hint (the last four characters) rules out a candidate without
        // spending an argon2 verify on it.
        let candidate = |stored: &Option<StoredSecret>| {
            stored
                .as_ref()
                .filter(|s| s.hint == secret.hint())
                .map(|s| (s.id, s.hash.clone()))
        };

        if let Some((pending_id, hash)) = candidate(&integration.pending_secret)
            && self.hasher.check_possession(secret.clone(), hash).await?
        {
            return match self.activate(organization, pending_id).await? {
                Activation::Activated {
                    integration,
                    revoked,
                } => {
                    // The caller just proved it holds the new active secret:
                    // the gateway's first check of it needs no verify here.
                    self.cache.remember(
                        self.cache.now(),
                        &integration.client_id,
                        self.cache.fingerprint(&integration.client_id, &secret),
                        pending_id,
                        integration.organization_id.clone(),
                        integration.custom_domain.clone(),
                    );
                    info!(
                        secret_id = %pending_id,
                        revoked_secret_id = revoked.map(tracing::field::display),
                        "secret activated"
                    );
                    Ok(*integration)
                }
                // A concurrent activation of the same value won the race.
                Activation::AlreadyActive => self.get(organization).await,
                Activation::NoLongerPending(_) => Err(no_match(
                    " (it was replaced by a newer secret before it could be activated)",
                )),
                Activation::NoIntegration => Err(not_found(organization)),
            };
        }

        if let Some((_, hash)) = candidate(&integration.active_secret)
            && self.hasher.check_possession(secret, hash).await?
        {
            return Ok(integration);
        }
        failures.failed(organization);
        Err(no_match(""))
    }

    /// Activates `secret_id` and makes this replica forget the client's old
    /// secret. Once started it runs to its end even if the caller goes away,
    /// so that whenever the change commits, this replica forgets at once
    /// (other replicas hear of it from the database).
    async fn activate(
        &self,
        organization: &OrganizationId,
        secret_id: uuid::Uuid,
    ) -> Result<Activation, Error> {
        let (store, cache, organization) = (
            self.store.clone(),
            Arc::clone(&self.cache),
            organization.clone(),
        );
        tokio::spawn(async move {
            let activation = store.activate_secret(&organization, secret_id).await;
            if let Ok(Activation::Activated { integration, .. }) = &activation {
                cache.forget(integration.client_id.as_str());
            }
            activation
        })
        .await
        .map_err(Error::internal)?
    }

    /// Checks a client ID and secret as a token endpoint does. Only the
    /// client's ACTIVE secret is valid.
    ///
    /// In order of cost:
    /// - a malformed client ID or secret is refused without a lookup;
    /// - a pair verified recently is answered from the cache: one HMAC and
    ///   one map lookup (after the revalidation interval, plus one indexed
    ///   read to confirm the secret is still active);
    /// - anything else, if the throttle admits it, costs one database read
    ///   and one argon2 verify. A well-formed but unknown client ID costs the
    ///   same (the verify runs against a decoy hash), so an unknown client
    ///   and a wrong secret cannot be told apart by their answer, their
    ///   timing or their throttling.
    pub async fn validate_client(&self, client_id: &str, value: &str) -> Result<Validation, Error> {
        let (Some(client_id), Ok(secret)) =
            (ClientId::parse(client_id), ClientSecret::parse(value))
        else {
            return Ok(Validation::Invalid(Rejection::Malformed));
        };
        let fingerprint = self.cache.fingerprint(&client_id, &secret);
        match self.cache.lookup(&client_id, &fingerprint) {
            Lookup::Fresh(verified) => return Ok(self.valid(&verified)),
            Lookup::Stale(verified) => {
                let read_at = self.cache.now();
                if self.store.active_secret_id(&client_id).await? == Some(verified.secret_id) {
                    self.cache.refresh(read_at, &client_id, &verified);
                    return Ok(self.valid(&verified));
                }
                self.cache.forget(client_id.as_str());
            }
            Lookup::Miss => {}
        }

        self.verify_once(&client_id, secret, fingerprint).await
    }

    /// Verifies a pair the cache could not answer. Identical checks that
    /// arrive while one is being verified wait for its answer instead of
    /// verifying again: after a restart or a rotation, a gateway's burst of
    /// checks of one client costs one argon2 verify, and uses one unit of the
    /// client's throttle budget, not one each.
    async fn verify_once(
        &self,
        client_id: &ClientId,
        secret: ClientSecret,
        fingerprint: Fingerprint,
    ) -> Result<Validation, Error> {
        // Checks that start on either side of an invalidation (an
        // activation) must not share an answer.
        let key = (fingerprint, self.cache.invalidated(client_id));
        let share = |outcome: &Result<Validation, Error>| match outcome {
            Ok(validation) => Ok(validation.clone()),
            Err(error) => Err(error.shared()),
        };
        self.in_flight
            .run(key, || self.verify(client_id, secret, fingerprint), share)
            .await
    }

    /// The slow way: the throttle, one database read, one argon2 verify.
    async fn verify(
        &self,
        client_id: &ClientId,
        secret: ClientSecret,
        fingerprint: Fingerprint,
    ) -> Result<Validation, Error> {
        self.throttle.admit(client_id)?;
        let read_at = self.cache.now();
        let Some(credentials) = self.store.active_credentials(client_id).await? else {
            self.hasher.verify_decoy(secret).await?;
            return Ok(Validation::Invalid(Rejection::NoActiveSecret));
        };
        if !self.hasher.verify(secret, credentials.hash).await? {
            return Ok(Validation::Invalid(Rejection::WrongSecret));
        }
        let domain = self.domain(credentials.custom_domain.as_deref()).to_owned();
        self.cache.remember(
            read_at,
            client_id,
            fingerprint,
            credentials.secret_id,
            credentials.organization_id.clone(),
            credentials.custom_domain,
        );
        Ok(Validation::Valid {
            organization_id: credentials.organization_id,
            domain,
        })
    }

    fn valid(&self, verified: &Verified) -> Validation {
        Validation::Valid {
            organization_id: verified.organization_id.clone(),
            domain: self.domain(verified.custom_domain.as_deref()).to_owned(),
        }
    }
}

fn not_found(organization: &OrganizationId) -> Error {
    Error::NotFound(format!(
        "organization \"{organization}\" has no integration; create it with CreateIntegration"
    ))
}

#[cfg(test)]
mod tests {
    use std::{num::NonZeroU32, time::Duration};

    use super::*;
    use crate::domain::HashParams;
    use crate::config::{DatabaseSettings, HashingSettings, Priority, ThrottleSettings};

    /// The operations over a fresh SQLite file, and their cache, with a
    /// per-client burst of `burst` cache misses.
    async fn integrations(
        dir: &tempfile::TempDir,
        burst: u32,
    ) -> (Integrations, Arc<CredentialCache>) {
        integrations_hashing_at(dir, burst, HashParams::MINIMUM).await
    }

    /// The same, hashing new secrets at `params`.
    async fn integrations_hashing_at(
        dir: &tempfile::TempDir,
        burst: u32,
        params: HashParams,
    ) -> (Integrations, Arc<CredentialCache>) {
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
        let cache = Arc::new(CredentialCache::new(100, Duration::from_secs(60)).expect("RNG"));
        let many = NonZeroU32::new(1_000).expect("non-zero");
        let throttle = Throttle::new(
            &ThrottleSettings {
                per_client_per_second: NonZeroU32::MIN,
                per_client_burst: NonZeroU32::new(burst).expect("non-zero"),
                overall_per_second: Some(many),
                tracked_clients: 100,
                activation_failures_per_minute: many,
            },
            2,
            hasher.verify_time(),
        );
        let domain = DomainName::parse("centralauth.test").expect("a domain");
        let integrations = Integrations::new(store, hasher, Arc::clone(&cache), throttle, domain);
        (integrations, cache)
    }

    #[tokio::test]
    async fn only_a_successful_validation_of_the_active_secret_enters_the_cache() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (integrations, cache) = integrations(&dir, 1_000).await;
        let org = OrganizationId::parse("org-cache".into()).expect("valid");
        let client_id = integrations.create(&org).await.expect("created").client_id;
        let (pending, _) = integrations.generate_secret(&org).await.expect("generated");
        let wrong = ClientSecret::generate().expect("RNG");
        let unknown = ClientId::generate().expect("RNG");

        for (what, id, value) in [
            ("a pending secret", &client_id, &pending),
            ("a wrong secret", &client_id, &wrong),
            ("an unknown client", &unknown, &pending),
        ] {
            let validation = integrations
                .validate_client(id.as_str(), value.expose())
                .await
                .expect("answered");
            assert!(
                matches!(validation, Validation::Invalid(_)),
                "{what} validated"
            );
            assert!(cache.is_empty(), "{what} entered the cache");
        }

        // Activating proves possession of the value: it is remembered.
        integrations
            .activate_secret(&org, pending.expose())
            .await
            .expect("activated");
        assert_eq!(cache.len(), 1, "the activated secret is remembered");
        // So is a verification of it, after the cache lost it.
        cache.forget(client_id.as_str());
        assert!(cache.is_empty());
        let validation = integrations
            .validate_client(client_id.as_str(), pending.expose())
            .await
            .expect("answered");
        assert!(matches!(validation, Validation::Valid { .. }));
        assert_eq!(
            cache.len(),
            1,
            "the active secret is remembered once verified"
        );

        let (newer, _) = integrations.generate_secret(&org).await.expect("generated");
        integrations
            .activate_secret(&org, newer.expose())
            .await
            .expect("activated");
        let old = integrations
            .validate_client(client_id.as_str(), pending.expose())
            .await
            .expect("answered");
        assert!(
            matches!(old, Validation::Invalid(_)),
            "the revoked secret was forgotten"
        );
        assert_eq!(cache.len(), 1, "only the newer secret is remembered");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identical_checks_that_arrive_together_share_one_verification() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // One cache miss per client ID: a second verification would be refused.
        let (integrations, cache) = integrations(&dir, 1).await;
        let integrations = Arc::new(integrations);
        let org = OrganizationId::parse("org-burst".into()).expect("valid");
        let client_id = integrations.create(&org).await.expect("created").client_id;
        let (secret, _) = integrations.generate_secret(&org).await.expect("generated");
        integrations
            .activate_secret(&org, secret.expose())
            .await
            .expect("activated");
        // As after a restart: nothing is cached.
        cache.forget(client_id.as_str());
        assert!(cache.is_empty());

        let checks: Vec<_> = (0..16)
            .map(|_| {
                let (integrations, client_id, secret) =
                    (Arc::clone(&integrations), client_id.clone(), secret.clone());
                tokio::spawn(async move {
                    integrations
                        .validate_client(client_id.as_str(), secret.expose())
                        .await
                })
            })
            .collect();
        for check in checks {
            let validation = check.await.expect("join").expect("answered, not throttled");
            assert!(matches!(validation, Validation::Valid { .. }));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_check_that_starts_after_an_activation_never_shares_an_earlier_answer() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // The old secret is hashed slowly (about half a second to verify
        // here), so that a check of it is still verifying when the
        // activation of the new one, hashed at the floor, returns.
        let slow = HashParams::new(64 * 1024, 8, 1).expect("valid");
        let (slow_side, _) = integrations_hashing_at(&dir, 1_000, slow).await;
        let (integrations, cache) = integrations(&dir, 1_000).await;
        let integrations = Arc::new(integrations);
        let org = OrganizationId::parse("org-swap".into()).expect("valid");
        let client_id = slow_side.create(&org).await.expect("created").client_id;
        let (old, _) = slow_side.generate_secret(&org).await.expect("generated");
        slow_side
            .activate_secret(&org, old.expose())
            .await
            .expect("activated");
        let (new, _) = integrations.generate_secret(&org).await.expect("generated");
        assert!(cache.is_empty(), "the old secret is cold here");

        let before = {
            let (integrations, client_id, old) =
                (Arc::clone(&integrations), client_id.clone(), old.clone());
            tokio::spawn(async move {
                integrations
                    .validate_client(client_id.as_str(), old.expose())
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        integrations
            .activate_secret(&org, new.expose())
            .await
            .expect("activated");
        assert!(
            !before.is_finished(),
            "the earlier check is still verifying"
        );
        let after = integrations
            .validate_client(client_id.as_str(), old.expose())
            .await
            .expect("answered");
        assert!(
            matches!(after, Validation::Invalid(_)),
            "a check that started after the activation accepted the revoked secret"
        );
        // The earlier check overlapped the activation: either answer is fair.
        before.await.expect("join").expect("answered");
    }
}
