//! The Integration tab's operations, in domain terms: what the admin RPCs
//! (CreateIntegration, GetIntegration, GenerateSecret, ActivateSecret,
//! ListSecrets, RevokeSecret, ListAuditEvents, DeleteIntegration, and the
//! custom domain's in `domains`) do once their input is parsed. The state machine's transitions themselves are transactions in
//! `crate::store`; the gateway's check is `crate::validation`.

mod domains;

use std::{sync::Arc, time::Duration};

use tracing::info;
use uuid::Uuid;

use crate::audit::Attribution;
use crate::dns::DnsVerifier;
use crate::domain::{
    ClientId, ClientSecret, DomainName, MalformedSecret, OrganizationId, login_domain,
};
use crate::error::Error;
use crate::hashing::Hasher;
use crate::store::{
    Activation, AuditEvent, Created, Integration, NewSecret, Page, Paged, Revocation,
    SecretMetadata, Store,
};
use crate::throttle::ActivationThrottle;
use crate::validation::ValidClient;
use crate::validation::cache::{CredentialCache, Verified};

/// The operations, over the store and the hasher. They share the gateway's
/// cache, which an activation keeps honest.
pub struct Integrations {
    store: Store,
    hasher: Hasher,
    cache: Arc<CredentialCache>,
    failed_activations: ActivationThrottle,
    default_domain: DomainName,
    pending_secret_ttl: Duration,
    dns: Arc<DnsVerifier>,
}

/// Client IDs drawn before creation gives up (see [`Integrations::create`]).
const CLIENT_ID_DRAWS: usize = 3;

impl Integrations {
    pub fn new(
        store: Store,
        hasher: Hasher,
        cache: Arc<CredentialCache>,
        failed_activations: ActivationThrottle,
        default_domain: DomainName,
        pending_secret_ttl: Duration,
        dns: Arc<DnsVerifier>,
    ) -> Self {
        Self {
            store,
            hasher,
            cache,
            failed_activations,
            default_domain,
            pending_secret_ttl,
            dns,
        }
    }

    /// The domain users of `integration` log in at.
    pub fn login_domain<'a>(&'a self, integration: &'a Integration) -> &'a str {
        login_domain(integration.verified_domain(), &self.default_domain)
    }

    /// Creates the organization's integration with a new client ID, never
    /// issued before, and no secret.
    pub async fn create(
        &self,
        organization: &OrganizationId,
        by: &Attribution,
    ) -> Result<Integration, Error> {
        // A fresh ID is 143 random bits: drawing one issued before is not
        // going to happen, but if it did, the next draw would not be it.
        for _ in 0..CLIENT_ID_DRAWS {
            let client_id = ClientId::generate().map_err(Error::internal)?;
            match self
                .store
                .create_integration(organization, &client_id, by)
                .await?
            {
                Created::Created(integration) => {
                    info!(client_id = %integration.client_id, "integration created");
                    return Ok(*integration);
                }
                Created::OrganizationExists => {
                    return Err(Error::AlreadyExists(format!(
                        "organization \"{organization}\" already has an integration; read it \
                         with GetIntegration"
                    )));
                }
                Created::ClientIdTaken => {}
            }
        }
        Err(Error::internal(
            "every client ID drawn had been issued before",
        ))
    }

    /// Deletes the organization's integration: its secrets stop validating
    /// on this replica at once (other replicas hear of it from the
    /// database), its client ID is never issued again, and its audit trail
    /// stays.
    pub async fn delete(
        &self,
        organization: &OrganizationId,
        by: &Attribution,
    ) -> Result<(), Error> {
        let deleted = self.store.delete_integration(organization, by).await;
        if let Ok(Some(deleted)) = &deleted {
            self.cache.forget(&deleted.client_id);
            info!(client_id = %deleted.client_id, "integration deleted");
        }
        deleted?.map(|_| ()).ok_or_else(|| not_found(organization))
    }

    /// Retires one secret at once (see [`Store::revoke_secret`]): a revoked
    /// active secret stops validating on this replica before the answer,
    /// and on the others within the revalidation bound.
    pub async fn revoke_secret(
        &self,
        organization: &OrganizationId,
        secret_id: Uuid,
        by: &Attribution,
    ) -> Result<Integration, Error> {
        match self
            .store
            .revoke_secret(organization, secret_id, by)
            .await?
        {
            Revocation::Retired {
                integration,
                client_id,
                was,
            } => {
                self.cache.forget(&client_id);
                info!(%secret_id, was = ?was, "secret retired by RevokeSecret");
                Ok(*integration)
            }
            Revocation::AlreadyRetired(integration) => Ok(*integration),
            Revocation::NoSuchSecret => Err(Error::NotFound(format!(
                "organization \"{organization}\" has no secret {secret_id}; list its secrets \
                 with ListSecrets"
            ))),
            Revocation::NoIntegration => Err(not_found(organization)),
        }
    }

    /// A page of the organization's secrets, newest first.
    pub async fn secrets(
        &self,
        organization: &OrganizationId,
        page: Page,
    ) -> Result<Paged<SecretMetadata>, Error> {
        self.store
            .secrets(organization, page)
            .await?
            .ok_or_else(|| not_found(organization))
    }

    /// A page of the organization's audit trail, newest first; it outlives
    /// the integration.
    pub async fn audit_events(
        &self,
        organization: &OrganizationId,
        page: Page,
    ) -> Result<Paged<AuditEvent>, Error> {
        self.store
            .audit_events(organization, page)
            .await?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "organization \"{organization}\" never had an integration, so it has no \
                     audit trail"
                ))
            })
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
        by: &Attribution,
    ) -> Result<(ClientSecret, SecretMetadata), Error> {
        // Checked first so that a call for an unknown organization costs no
        // hashing; the transaction below checks again.
        if !self.store.integration_exists(organization).await? {
            return Err(not_found(organization));
        }
        let secret = ClientSecret::generate().map_err(Error::internal)?;
        let new = NewSecret {
            hash: self.hasher.hash(secret.clone()).await?,
            hint: secret.hint().to_owned(),
            ttl: self.pending_secret_ttl,
        };
        let generated = self
            .store
            .add_pending_secret(organization, new, by)
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
    /// Any other value, well formed or not, fails `FAILED_PRECONDITION`.
    ///
    /// A value is ruled out by its hint (its last four characters) before
    /// any argon2 work, and only a value that costs a verify and does not
    /// match spends the organization's budget of failures
    /// (`RESOURCE_EXHAUSTED` once spent). So whoever tries every value they
    /// hold, in any order, activates the right one.
    pub async fn activate_secret(
        &self,
        organization: &OrganizationId,
        value: &Result<ClientSecret, MalformedSecret>,
        by: &Attribution,
    ) -> Result<Integration, Error> {
        let integration = self.get(organization).await?;
        let no_match = |detail: &str| {
            Error::FailedPrecondition(format!(
                "client_secret is neither the pending nor the active secret of organization \
                 \"{organization}\"{detail}; check the value and enter it again exactly as \
                 GenerateSecret returned it (cas_ and 60 more characters); a pending secret \
                 stays ready to activate until it expires or a newer one is generated"
            ))
        };
        let secret = match value {
            Ok(secret) => secret,
            Err(malformed) => return Err(no_match(&format!(" ({malformed})"))),
        };

        if let Some(pending) = &integration.pending_secret
            && self.holds(organization, pending, secret).await?
        {
            return match self.activate(&integration, pending.id, secret, by).await? {
                Activation::Activated {
                    integration,
                    revoked,
                } => {
                    info!(
                        secret_id = %pending.id,
                        revoked_secret_id = revoked.map(tracing::field::display),
                        "secret activated"
                    );
                    Ok(*integration)
                }
                // A concurrent activation of the same value won the race.
                Activation::AlreadyActive => self.get(organization).await,
                Activation::NoLongerPending(_) => Err(Error::FailedPrecondition(format!(
                    "the secret with this value was replaced by a newer pending secret of \
                     organization \"{organization}\" before it could be activated; activate \
                     the newer secret's value"
                ))),
                Activation::Expired(at) => Err(Error::FailedPrecondition(format!(
                    "the pending secret of organization \"{organization}\" expired at {} \
                     without being activated; generate a new secret and activate it within \
                     the pending secret TTL",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ))),
                Activation::NoIntegration => Err(not_found(organization)),
            };
        }

        if let Some(active) = &integration.active_secret
            && self.holds(organization, active, secret).await?
        {
            // Already active: perhaps an earlier activation committed and its
            // answer was lost. Whatever this replica remembered of the
            // client's previous secret then is forgotten now. The read behind
            // what is remembered began before this call's own forgetting, so
            // the entry is born untrusted and confirmed by its first use.
            let read = self.cache.before_read(&integration.client_id);
            self.cache.forget(&integration.client_id);
            self.cache.remember(
                read,
                self.cache.fingerprint(&integration.client_id, secret),
                self.verified(&integration, active.id),
            );
            return Ok(integration);
        }
        Err(no_match(""))
    }

    /// Whether `secret` is the value of `stored`. The hint (the last four
    /// characters) rules a secret out without an argon2 verify, or even a
    /// read of its hash; a verify that does not match spends a unit of the
    /// organization's budget.
    async fn holds(
        &self,
        organization: &OrganizationId,
        stored: &SecretMetadata,
        secret: &ClientSecret,
    ) -> Result<bool, Error> {
        if stored.hint != secret.hint() {
            return Ok(false);
        }
        let Some(hash) = self.store.secret_hash(organization, stored.id).await? else {
            return Ok(false);
        };
        let attempt = self.failed_activations.admit(organization)?;
        let checked = self.hasher.check_possession(secret.clone(), hash).await;
        // Only a verify that ran and did not match is a failure: a match, or
        // a verify that could not run (argon2's lane full or too slow), gives
        // the unit back.
        if !matches!(checked, Ok(false)) {
            self.failed_activations.verified(attempt);
        }
        checked
    }

    /// What a check of `secret_id`, the active secret of `integration`,
    /// answers.
    fn verified(&self, integration: &Integration, secret_id: Uuid) -> Verified {
        Verified {
            secret_id,
            answer: ValidClient {
                organization_id: integration.organization_id.clone(),
                domain: self.login_domain(integration).to_owned(),
            },
        }
    }

    /// Makes `secret_id`, whose value `secret` the caller just proved to
    /// hold, the active secret of `integration`'s organization.
    ///
    /// This replica forgets the client's old secret as soon as the
    /// transaction ends, whatever its outcome: an error may hide a commit
    /// (its acknowledgement lost on the way back). It remembers the new one
    /// through the cache's own rule: its read began before the transaction,
    /// so the entry is born untrusted and the gateway's first check of it
    /// costs one indexed read instead of an argon2 verify. Once started it
    /// runs to its end even if the caller goes away, so that whenever the
    /// change commits this replica forgets at once (other replicas hear of
    /// it from the database).
    async fn activate(
        &self,
        integration: &Integration,
        secret_id: Uuid,
        secret: &ClientSecret,
        by: &Attribution,
    ) -> Result<Activation, Error> {
        let client_id = &integration.client_id;
        let read = self.cache.before_read(client_id);
        let fingerprint = self.cache.fingerprint(client_id, secret);
        let verified = self.verified(integration, secret_id);
        let (store, cache, organization, client_id, by) = (
            self.store.clone(),
            Arc::clone(&self.cache),
            integration.organization_id.clone(),
            client_id.clone(),
            by.clone(),
        );
        tokio::spawn(async move {
            let activation = store.activate_secret(&organization, secret_id, &by).await;
            cache.forget(&client_id);
            if let Ok(Activation::Activated { .. } | Activation::AlreadyActive) = &activation {
                cache.remember(read, fingerprint, verified);
            }
            activation
        })
        .await
        .map_err(Error::internal)?
    }
}

fn not_found(organization: &OrganizationId) -> Error {
    Error::NotFound(format!(
        "organization \"{organization}\" has no integration; create it with CreateIntegration"
    ))
}
