//! When secrets were last used: the writes of `crate::usage`.
//!
//! Like the gateway's lookup and the rehash that follow a verify, they are
//! keyed by secret ids alone, not by an organization: the ids are those the
//! lookup found. Each is one statement over a batch of secrets, with no
//! organization lock, no audit event and no announcement: recording a use
//! changes nothing the state machine, the Integration tab's `updated_at`
//! or any cache depends on. And each only moves a time forward, so that a
//! replica whose write arrives late (or whose clock is behind) never hides
//! a later use another one recorded.

use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, sea_query::Expr};
use uuid::Uuid;

use super::Store;
use super::schema::secret;
use crate::domain::SecretState;
use crate::error::Error;

impl Store {
    /// The secrets `secret_ids` validated now: sets their last use to now
    /// where it is unset or earlier. How many rows moved.
    pub async fn record_uses(&self, secret_ids: &[Uuid]) -> Result<u64, Error> {
        let now = super::now();
        let column = secret::Column::LastUsedAt;
        let moved = secret::Entity::update_many()
            .col_expr(column, Expr::value(now))
            .filter(secret::Column::Id.is_in(secret_ids.iter().copied()))
            .filter(Condition::any().add(column.is_null()).add(column.lt(now)))
            .exec(&self.db)
            .await?;
        Ok(moved.rows_affected)
    }

    /// The retired (revoked or discarded) secrets `secret_ids` were
    /// presented now: sets when they were last presented to now where it is
    /// unset or earlier. How many rows moved.
    pub async fn record_retired_uses(&self, secret_ids: &[Uuid]) -> Result<u64, Error> {
        let now = super::now();
        let column = secret::Column::LastRetiredUseAt;
        let moved = secret::Entity::update_many()
            .col_expr(column, Expr::value(now))
            .filter(secret::Column::Id.is_in(secret_ids.iter().copied()))
            .filter(secret::Column::State.is_in([SecretState::Revoked, SecretState::Discarded]))
            .filter(Condition::any().add(column.is_null()).add(column.lt(now)))
            .exec(&self.db)
            .await?;
        Ok(moved.rows_affected)
    }
}
