//! The secret state machine's two transitions that need a transaction:
//! generating (a new PENDING, the old one DISCARDED) and activating (PENDING
//! to ACTIVE, the old ACTIVE to REVOKED). Beside them, one change that is no
//! transition: an ACTIVE secret's hash replaced by a costlier hash of the
//! same value (see `crate::rehash`).

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QuerySelect, Statement, TransactionTrait,
};
use uuid::Uuid;

use super::integrations::load_integration;
use super::schema::{integration, secret};
use super::{Integration, SecretMetadata, Store};
use crate::domain::{OrganizationId, SecretHash, SecretState};
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
    /// The organization has no integration.
    NoIntegration,
}

impl Store {
    /// Stores `new` as the PENDING secret of `organization`, discarding the
    /// pending one it had, in one transaction. `None` when the organization
    /// has no integration. The ACTIVE secret is untouched.
    pub async fn add_pending_secret(
        &self,
        organization: &OrganizationId,
        new: NewSecret,
    ) -> Result<Option<Generated>, Error> {
        let now = super::now();
        let txn = self.db.begin().await?;
        if !lock_integration(&txn, organization, now).await? {
            txn.rollback().await?;
            return Ok(None);
        }

        let discarded = find_in_state(&txn, organization, SecretState::Pending).await?;
        if let Some(old) = discarded {
            set_state(&txn, old, SecretState::Discarded, now).await?;
        }

        let secret = SecretMetadata {
            id: Uuid::now_v7(),
            state: SecretState::Pending,
            hint: new.hint,
            created_at: now,
            activated_at: None,
            revoked_at: None,
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
        })
        .exec_without_returning(&txn)
        .await?;

        txn.commit().await?;
        Ok(Some(Generated { secret, discarded }))
    }

    /// Makes `secret_id` the ACTIVE secret of `organization` if it is still
    /// PENDING, revoking the active one in the same transaction.
    ///
    /// The caller has already proven possession of the value; this re-reads
    /// the secret's state under the organization's lock, so that of racing
    /// activations exactly one changes anything and a secret discarded in the
    /// meantime is never activated.
    pub async fn activate_secret(
        &self,
        organization: &OrganizationId,
        secret_id: Uuid,
    ) -> Result<Activation, Error> {
        let now = super::now();
        let txn = self.db.begin().await?;
        if !lock_integration(&txn, organization, now).await? {
            txn.rollback().await?;
            return Ok(Activation::NoIntegration);
        }

        let state = secret::Entity::find_by_id(secret_id)
            .filter(secret::Column::OrganizationId.eq(organization.as_str()))
            .select_only()
            .column(secret::Column::State)
            .into_tuple::<SecretState>()
            .one(&txn)
            .await?;
        let unchanged = match state {
            Some(SecretState::Pending) => None,
            Some(SecretState::Active) => Some(Activation::AlreadyActive),
            Some(other) => Some(Activation::NoLongerPending(other)),
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
        }
        set_state(&txn, secret_id, SecretState::Active, now).await?;

        let integration = load_integration(&txn, organization)
            .await?
            .ok_or_else(|| Error::internal("the locked integration vanished"))?;
        if self.backend() == DbBackend::Postgres {
            // Delivered to every replica's listener when, and only if, the
            // transaction commits (see crate::invalidation).
            let payload = ActivationNotice {
                client_id: integration.client_id.as_str(),
                replica: self.replica,
            };
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [SECRET_ACTIVATED.into(), payload.to_string().into()],
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(Activation::Activated {
            integration: Box::new(integration),
            revoked,
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
/// ends. `false` when there is no such integration.
async fn lock_integration(
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
