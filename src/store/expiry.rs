//! Pending secrets that outlived their time: found through the partial
//! index on pending rows, and discarded one organization at a time.
//!
//! Replicas may sweep at the same moment. Each secret is discarded by a
//! statement that changes it only if it is still PENDING, under the
//! organization's lock, and only the transaction whose statement changed it
//! records the audit event and announces the change: however many replicas
//! race, a secret expires once.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use uuid::Uuid;

use super::Store;
use super::audit::{Subject, record};
use super::changes::ChangeKind;
use super::integrations::stored_organization_id;
use super::schema::secret;
use super::secrets::lock_integration_of;
use crate::audit::{Attribution, AuditAction};
use crate::domain::{ClientId, OrganizationId, SecretState};
use crate::error::Error;

/// A pending secret this replica discarded because it expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub organization_id: OrganizationId,
    pub client_id: ClientId,
    pub secret_id: Uuid,
}

impl Store {
    /// Discards up to `limit` pending secrets whose expiry has passed, the
    /// earliest first; those this call discarded (not those another
    /// replica discarded first).
    pub async fn expire_due(&self, limit: u64) -> Result<Vec<Expired>, Error> {
        let due = secret::Entity::find()
            .filter(secret::Column::State.eq(SecretState::Pending))
            .filter(secret::Column::ExpiresAt.lte(super::now()))
            .order_by(secret::Column::ExpiresAt, Order::Asc)
            .select_only()
            .column(secret::Column::Id)
            .column(secret::Column::OrganizationId)
            .limit(limit)
            .into_tuple::<(Uuid, String)>()
            .all(&self.db)
            .await?;
        let mut expired = Vec::new();
        for (secret_id, organization) in due {
            let organization = stored_organization_id(organization)?;
            if let Some(client_id) = self.expire(&organization, secret_id).await? {
                expired.push(Expired {
                    organization_id: organization,
                    client_id,
                    secret_id,
                });
            }
        }
        Ok(expired)
    }

    /// Discards `secret_id` if it is still pending; its client if it did.
    async fn expire(
        &self,
        organization: &OrganizationId,
        secret_id: Uuid,
    ) -> Result<Option<ClientId>, Error> {
        let now = super::now();
        let txn = self.db.begin().await?;
        let Some(client_id) = lock_integration_of(&txn, organization, now).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let discarded = secret::Entity::update_many()
            .set(secret::ActiveModel {
                state: Set(SecretState::Discarded),
                revoked_at: Set(Some(now)),
                ..Default::default()
            })
            .filter(secret::Column::Id.eq(secret_id))
            .filter(secret::Column::State.eq(SecretState::Pending))
            .filter(secret::Column::ExpiresAt.lte(now))
            .exec(&txn)
            .await?;
        if discarded.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(None);
        }
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
        Ok(Some(client_id))
    }

    /// When the next pending secret expires, if any is pending.
    pub async fn next_expiry(&self) -> Result<Option<DateTime<Utc>>, Error> {
        let next = secret::Entity::find()
            .filter(secret::Column::State.eq(SecretState::Pending))
            .filter(secret::Column::ExpiresAt.is_not_null())
            .order_by(secret::Column::ExpiresAt, Order::Asc)
            .select_only()
            .column(secret::Column::ExpiresAt)
            .into_tuple::<DateTime<Utc>>()
            .one(&self.db)
            .await?;
        Ok(next)
    }

    /// Gives every pending secret stored before expiry existed (no
    /// `expires_at`) the expiry `ttl` after its creation; how many.
    pub async fn backfill_expiry(&self, ttl: std::time::Duration) -> Result<usize, Error> {
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| Error::internal("the pending secret TTL is out of range"))?;
        let undated = secret::Entity::find()
            .filter(secret::Column::State.eq(SecretState::Pending))
            .filter(secret::Column::ExpiresAt.is_null())
            .select_only()
            .column(secret::Column::Id)
            .column(secret::Column::CreatedAt)
            .into_tuple::<(Uuid, DateTime<Utc>)>()
            .all(&self.db)
            .await?;
        for (id, created_at) in &undated {
            secret::Entity::update_many()
                .set(secret::ActiveModel {
                    expires_at: Set(Some(*created_at + ttl)),
                    ..Default::default()
                })
                .filter(secret::Column::Id.eq(*id))
                .filter(secret::Column::ExpiresAt.is_null())
                .exec(&self.db)
                .await?;
        }
        Ok(undated.len())
    }
}
