//! The audit trail: written inside each change's transaction, read newest
//! first.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QuerySelect,
};
use uuid::Uuid;

use super::Store;
use super::integrations::stored_organization_id;
use super::pages::{Cursor, Page, Paged, newest_first, paged};
use super::schema::{audit_event, client_id};
use crate::audit::{Attribution, AuditAction};
use crate::domain::OrganizationId;
use crate::error::Error;

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub id: Uuid,
    pub organization_id: OrganizationId,
    pub action: AuditAction,
    pub caller: String,
    pub actor: String,
    pub secret_id: Option<Uuid>,
    pub domain: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What a change records besides who made it and when.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Subject<'a> {
    pub secret_id: Option<Uuid>,
    pub domain: Option<&'a str>,
}

impl<'a> Subject<'a> {
    pub fn secret(id: Uuid) -> Self {
        Self {
            secret_id: Some(id),
            domain: None,
        }
    }

    pub fn domain(name: &'a str) -> Self {
        Self {
            secret_id: None,
            domain: Some(name),
        }
    }
}

/// Records `action` on `organization` by `by`, in `txn`.
pub(super) async fn record(
    txn: &DatabaseTransaction,
    organization: &OrganizationId,
    action: AuditAction,
    by: &Attribution,
    subject: Subject<'_>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    audit_event::Entity::insert(audit_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(organization.as_str().to_owned()),
        action: Set(action),
        caller: Set(by.caller.clone()),
        actor: Set(by.actor.clone()),
        secret_id: Set(subject.secret_id),
        domain: Set(subject.domain.map(str::to_owned)),
        created_at: Set(now),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

impl Store {
    /// A page of `organization`'s audit trail, newest first. `None` when
    /// the organization never had an integration (a deleted one's trail is
    /// still there).
    pub async fn audit_events(
        &self,
        organization: &OrganizationId,
        page: Page,
    ) -> Result<Option<Paged<AuditEvent>>, Error> {
        if !ever_had_integration(&self.db, organization).await? {
            return Ok(None);
        }
        let select = audit_event::Entity::find()
            .filter(audit_event::Column::OrganizationId.eq(organization.as_str()));
        let rows = newest_first(
            select,
            audit_event::Column::CreatedAt,
            audit_event::Column::Id,
            page,
        )
        .all(&self.db)
        .await?;
        let events = rows
            .into_iter()
            .map(|row| {
                Ok(AuditEvent {
                    id: row.id,
                    organization_id: stored_organization_id(row.organization_id)?,
                    action: row.action,
                    caller: row.caller,
                    actor: row.actor,
                    secret_id: row.secret_id,
                    domain: row.domain,
                    created_at: row.created_at,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Some(paged(events, page, |event| Cursor {
            created_at: event.created_at,
            id: event.id,
        })))
    }
}

/// Whether a client ID was ever issued to `organization`.
async fn ever_had_integration(
    db: &impl ConnectionTrait,
    organization: &OrganizationId,
) -> Result<bool, Error> {
    let found = client_id::Entity::find()
        .filter(client_id::Column::OrganizationId.eq(organization.as_str()))
        .select_only()
        .column(client_id::Column::ClientId)
        .into_tuple::<String>()
        .one(db)
        .await?;
    Ok(found.is_some())
}
