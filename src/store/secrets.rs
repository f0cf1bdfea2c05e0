//! The secret state machine's transitions, each one transaction with its
//! audit events: generating (a new PENDING, the old one DISCARDED),
//! activating (PENDING to ACTIVE, the old ACTIVE to REVOKED) and the
//! emergency retirement (ACTIVE to REVOKED, or PENDING to DISCARDED); expiry
//! is in `expiry`. Beside them, one change that is no
//! transition: an ACTIVE secret's hash replaced by a costlier hash of the
//! same value (see `crate::rehash`).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;

use super::audit::{Subject, record};
use super::changes::ChangeKind;
use super::integrations::{load_integration, locked_integration};
use super::schema::{integration, secret};
use super::{Integration, SecretMetadata, Store};
use crate::audit::{Attribution, AuditAction};
use crate::domain::{ClientId, OrganizationId, SecretHash, SecretState};
use crate::error::Error;

/// The PostgreSQL notification channel on which an activation announces the
/// client ID whose active secret changed.
pub const SECRET_ACTIVATED: &str = "integration_secret_activated";

/// What an activation notifies: the client whose active secret changed,
/// and the replica that changed it (which has already forgotten it, and may
/// have remembered the new one: it ignores its own notices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationNotice<'a> {
    pub client_id: &'a str,
    pub replica: Uuid,
}

impl<'a> ActivationNotice<'a> {
    /// Reads a notice's payload: `<client ID> <replica>`.
    pub fn parse(payload: &'a str) -> Option<Self> {
        let (client_id, replica) = payload.split_once(' ')?;
        Some(Self {
            client_id,
            replica: replica.parse().ok()?,
        })
    }
}

impl std::fmt::Display for ActivationNotice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.client_id, self.replica)
    }
}

/// A secret about to be stored as PENDING.
#[derive(Debug)]
pub struct NewSecret {
    pub hash: SecretHash,
    pub hint: String,
    /// How long it may wait for its activation.
    pub ttl: std::time::Duration,
}

/// The result of a generation: the new pending secret and the one it
/// replaced, if any.
#[derive(Debug)]
pub struct Generated {
    pub secret: SecretMetadata,
    pub discarded: Option<Uuid>,
}

/// What became of an activation.
#[derive(Debug)]
pub enum Activation {
    /// The secret is now ACTIVE; `revoked` is the secret it replaced.
    Activated {
        integration: Box<Integration>,
        revoked: Option<Uuid>,
    },
    /// It was already ACTIVE (a retried or concurrent activation): nothing
    /// changed.
    AlreadyActive,
    /// It left PENDING for good (discarded, or activated and since revoked)
    /// between the caller's check and this transaction.
    NoLongerPending(SecretState),
    /// It stayed PENDING past its expiry: it is DISCARDED now (if no
    /// replica had discarded it yet, this transaction did).
    Expired(DateTime<Utc>),
    /// The organization has no integration.
    NoIntegration,
}

/// What became of an emergency retirement.
#[derive(Debug)]
pub enum Revocation {
    /// The secret was ACTIVE and is REVOKED, or was PENDING and is
    /// DISCARDED.
    Retired {
        integration: Box<Integration>,
        client_id: ClientId,
        was: SecretState,
    },
    /// It was REVOKED or DISCARDED already: nothing changed.
    AlreadyRetired(Box<Integration>),
    /// The organization has no secret of that id.
    NoSuchSecret,
    NoIntegration,
}

impl Store {
    /// Stores `new` as the PENDING secret of `organization`, discarding the
    /// pending one it had, in one transaction with their audit events.
    /// `None` when the organization has no integration. The ACTIVE secret
    /// is untouched.
    pub async fn add_pending_secret(
        &self,
        organization: &OrganizationId,
        new: NewSecret,
        by: &Attribution,
    ) -> Result<Option<Generated>, Error> {
        let now = super::now();
        let expires_at = now
            + chrono::Duration::from_std(new.ttl)
                .map_err(|_| Error::internal("the pending secret TTL is out of range"))?;
        let txn = self.db.begin().await?;
        let Some(client_id) = lock_integration_of(&txn, organization, now).await? else {
            txn.rollback().await?;
            return Ok(None);
        };

        let discarded = find_pending(&txn, organization).await?;
        if let Some((old, old_expiry)) = discarded {
            set_state(&txn, old, SecretState::Discarded, now).await?;
            // One that had expired already, and that no sweep had found
            // yet, is recorded as what it was.
            let action = if old_expiry.is_some_and(|at| at <= now) {
                AuditAction::SecretExpired
            } else {
                AuditAction::SecretDiscarded
            };
            record(&txn, organization, action, by, Subject::secret(old), now).await?;
        }

        let secret = SecretMetadata {
            id: Uuid::now_v7(),
            state: SecretState::Pending,
            hint: new.hint,
            created_at: now,
            activated_at: None,
            revoked_at: None,
            expires_at: Some(expires_at),
            last_used_at: None,
            last_retired_use_at: None,
        };
        secret::Entity::insert(secret::ActiveModel {
            id: Set(secret.id),
            organization_id: Set(organization.as_str().to_owned()),
            state: Set(secret.state),
            hash: Set(new.hash.as_str().to_owned()),
            hint: Set(secret.hint.clone()),
            created_at: Set(now),
            activated_at: Set(None),
            revoked_at: Set(None),
            expires_at: Set(Some(expires_at)),
            last_used_at: Set(None),
            last_retired_use_at: Set(None),
        })
        .exec_without_returning(&txn)
        .await?;
        record(
            &txn,
            organization,
            AuditAction::SecretGenerated,
            by,
            Subject::secret(secret.id),
            now,
        )
        .await?;

        let change = self.change(ChangeKind::Updated, organization, &client_id, now);
        self.commit_announcing(txn, change).await?;
        Ok(Some(Generated {
            secret,
            discarded: discarded.map(|(id, _)| id),
        }))
    }

    /// Makes `secret_id` the ACTIVE secret of `organization` if it is still
    /// PENDING and not past its expiry, revoking the active one in the same
    /// transaction, with their audit events.
    ///
    /// The caller has already proven possession of the value; this re-reads
    /// the secret's state under the organization's lock, so that of racing
    /// activations exactly one changes anything and a secret discarded in the
    /// meantime is never activated. A secret past its expiry is never
    /// activated either, even if no replica was running to discard it: it
    /// is discarded here instead.
    pub async fn activate_secret(
        &self,
        organization: &OrganizationId,
        secret_id: Uuid,
        by: &Attribution,
    ) -> Result<Activation, Error> {
        let now = super::now();
        let txn = self.db.begin().await?;
        let Some(client_id) = lock_integration_of(&txn, organization, now).await? else {
            txn.rollback().await?;
            return Ok(Activation::NoIntegration);
        };

        let found = secret::Entity::find_by_id(secret_id)
            .filter(secret::Column::OrganizationId.eq(organization.as_str()))
            .select_only()
            .column(secret::Column::State)
            .column(secret::Column::ExpiresAt)
            .into_tuple::<(SecretState, Option<DateTime<Utc>>)>()
            .one(&txn)
            .await?;
        let unchanged = match found {
            Some((SecretState::Pending, Some(expiry))) if expiry <= now => {
                set_state(&txn, secret_id, SecretState::Discarded, now).await?;
                record(
                    &txn,
                    organization,
                    AuditAction::SecretExpired,
                    &Attribution::system(),
                    Subject::secret(secret_id),
                    now,
                )
                .await?;
                let change = self.change(ChangeKind::Updated, organization, &client_id, now);
                self.commit_announcing(txn, change).await?;
                return Ok(Activation::Expired(expiry));
            }
            Some((SecretState::Pending, _)) => None,
            Some((SecretState::Active, _)) => Some(Activation::AlreadyActive),
            Some((other, _)) => Some(Activation::NoLongerPending(other)),
            None => {
                return Err(Error::internal(format!(
                    "secret {secret_id} vanished from organization {organization}"
                )));
            }
        };
        if let Some(unchanged) = unchanged {
            txn.rollback().await?;
            return Ok(unchanged);
        }

        let revoked = find_in_state(&txn, organization, SecretState::Active).await?;
        if let Some(old) = revoked {
            // Before the activation below: the one-active-per-organization
            // index would refuse two ACTIVE rows even within the transaction.
            set_state(&txn, old, SecretState::Revoked, now).await?;
            record(
                &txn,
                organization,
                AuditAction::SecretRevoked,
                by,
                Subject::secret(old),
                now,
            )
            .await?;
        }
        set_state(&txn, secret_id, SecretState::Active, now).await?;
        record(
            &txn,
            organization,
            AuditAction::SecretActivated,
            by,
            Subject::secret(secret_id),
            now,
        )
        .await?;

        let integration = locked_integration(&txn, organization).await?;
        // Delivered to every replica's listener when, and only if, the
        // transaction commits (see crate::invalidation).
        let change = self
            .change(ChangeKind::Updated, organization, &client_id, now)
            .revalidating(true);
        self.commit_announcing(txn, change).await?;
        Ok(Activation::Activated {
            integration: Box::new(integration),
            revoked,
        })
    }

    /// Retires `secret_id` of `organization` at once: ACTIVE becomes
    /// REVOKED (the organization is then left without an active secret),
    /// PENDING becomes DISCARDED; a secret already retired stays as it is.
    pub async fn revoke_secret(
        &self,
        organization: &OrganizationId,
        secret_id: Uuid,
        by: &Attribution,
    ) -> Result<Revocation, Error> {
        let now = super::now();
        let txn = self.db.begin().await?;
        let Some(client_id) = lock_integration_of(&txn, organization, now).await? else {
            txn.rollback().await?;
            return Ok(Revocation::NoIntegration);
        };
        let state = secret::Entity::find_by_id(secret_id)
            .filter(secret::Column::OrganizationId.eq(organization.as_str()))
            .select_only()
            .column(secret::Column::State)
            .into_tuple::<SecretState>()
            .one(&txn)
            .await?;
        let (was, retired, action) = match state {
            None => {
                txn.rollback().await?;
                return Ok(Revocation::NoSuchSecret);
            }
            Some(SecretState::Revoked | SecretState::Discarded) => {
                // Nothing changes, not even `updated_at`.
                txn.rollback().await?;
                let integration = load_integration(&self.db, organization)
                    .await?
                    .ok_or_else(|| Error::internal("the integration vanished"))?;
                return Ok(Revocation::AlreadyRetired(Box::new(integration)));
            }
            Some(was @ SecretState::Active) => {
                (was, SecretState::Revoked, AuditAction::SecretRevoked)
            }
            Some(was @ SecretState::Pending) => {
                (was, SecretState::Discarded, AuditAction::SecretDiscarded)
            }
        };
        set_state(&txn, secret_id, retired, now).await?;
        record(
            &txn,
            organization,
            action,
            by,
            Subject::secret(secret_id),
            now,
        )
        .await?;
        let integration = locked_integration(&txn, organization).await?;
        let change = self
            .change(ChangeKind::Updated, organization, &client_id, now)
            .revalidating(was == SecretState::Active);
        self.commit_announcing(txn, change).await?;
        Ok(Revocation::Retired {
            integration: Box::new(integration),
            client_id,
            was,
        })
    }

    /// Stores `new` as the hash of secret `secret_id` if that row still
    /// holds exactly `old` and is still ACTIVE, in one statement; whether
    /// it did. A rotation, a revocation or another replica's rehash between
    /// the read of `old` and this write wins, and nothing changes.
    ///
    /// Like the gateway's lookup it follows, it is keyed by the secret
    /// alone, not by an organization: `secret_id` is the one that lookup
    /// found. One statement needs no organization lock: PostgreSQL checks
    /// its conditions again on the row as a concurrent transaction left it,
    /// and SQLite runs one writer at a time. It leaves `updated_at` alone:
    /// the secret is the same one, and nothing the Integration tab shows
    /// changes.
    pub async fn replace_active_hash(
        &self,
        secret_id: Uuid,
        old: &SecretHash,
        new: &SecretHash,
    ) -> Result<bool, Error> {
        let replaced = secret::Entity::update_many()
            .set(secret::ActiveModel {
                hash: Set(new.as_str().to_owned()),
                ..Default::default()
            })
            .filter(secret::Column::Id.eq(secret_id))
            .filter(secret::Column::State.eq(SecretState::Active))
            .filter(secret::Column::Hash.eq(old.as_str()))
            .exec(&self.db)
            .await?;
        Ok(replaced.rows_affected == 1)
    }
}

/// Touches the organization's row, which locks it until the transaction
/// ends, and reads its client ID. `None` when there is no such integration.
pub(super) async fn lock_integration_of(
    txn: &DatabaseTransaction,
    organization: &OrganizationId,
    now: DateTime<Utc>,
) -> Result<Option<ClientId>, Error> {
    if !lock_integration(txn, organization, now).await? {
        return Ok(None);
    }
    let client_id = integration::Entity::find_by_id(organization.as_str())
        .select_only()
        .column(integration::Column::ClientId)
        .into_tuple::<String>()
        .one(txn)
        .await?
        .ok_or_else(|| Error::internal("the locked integration vanished"))?;
    Ok(Some(ClientId::from_stored(client_id)))
}

/// Touches the organization's row, which locks it until the transaction
/// ends. `false` when there is no such integration.
pub(super) async fn lock_integration(
    txn: &DatabaseTransaction,
    organization: &OrganizationId,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let touched = integration::Entity::update_many()
        .set(integration::ActiveModel {
            updated_at: Set(now),
            ..Default::default()
        })
        .filter(integration::Column::OrganizationId.eq(organization.as_str()))
        .exec(txn)
        .await?;
    Ok(touched.rows_affected == 1)
}

/// The id of the organization's secret in `state` (ACTIVE or PENDING, of
/// which there is at most one each).
async fn find_in_state(
    txn: &DatabaseTransaction,
    organization: &OrganizationId,
    state: SecretState,
) -> Result<Option<Uuid>, Error> {
    let id = secret::Entity::find()
        .filter(secret::Column::OrganizationId.eq(organization.as_str()))
        .filter(secret::Column::State.eq(state))
        .select_only()
        .column(secret::Column::Id)
        .into_tuple::<Uuid>()
        .one(txn)
        .await?;
    Ok(id)
}

/// The organization's PENDING secret, and when it expires.
async fn find_pending(
    txn: &DatabaseTransaction,
    organization: &OrganizationId,
) -> Result<Option<(Uuid, Option<DateTime<Utc>>)>, Error> {
    let found = secret::Entity::find()
        .filter(secret::Column::OrganizationId.eq(organization.as_str()))
        .filter(secret::Column::State.eq(SecretState::Pending))
        .select_only()
        .column(secret::Column::Id)
        .column(secret::Column::ExpiresAt)
        .into_tuple::<(Uuid, Option<DateTime<Utc>>)>()
        .one(txn)
        .await?;
    Ok(found)
}

/// Moves a secret to `state`, stamping the matching time.
async fn set_state(
    txn: &DatabaseTransaction,
    secret_id: Uuid,
    state: SecretState,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let mut change = secret::ActiveModel {
        state: Set(state),
        ..Default::default()
    };
    match state {
        SecretState::Active => change.activated_at = Set(Some(now)),
        SecretState::Revoked | SecretState::Discarded => change.revoked_at = Set(Some(now)),
        SecretState::Pending => {}
    }
    secret::Entity::update_many()
        .set(change)
        .filter(secret::Column::Id.eq(secret_id))
        .exec(txn)
        .await?;
    Ok(())
}
