//! What a committed change announces, to this replica's change streams and
//! caches at once and to every other replica through PostgreSQL.
//!
//! A transaction that changes an integration ends with
//! [`Store::commit_announcing`]: on PostgreSQL it queues a notification on
//! [`INTEGRATION_CHANGED`], which PostgreSQL delivers to every listening
//! replica when, and only if, the transaction commits; once the commit
//! returns, it tells this process's own subscribers (`crate::changes`). Replicas ignore their own notifications,
//! which they have already published.
//!
//! A change that may change what ValidateClient answers
//! ([`Change::revalidates`]: an activation, the revocation of the active
//! secret, a change of the effective domain, a deletion) tells every replica
//! to forget its cached answers for the client; the others (a generation, a
//! pending secret discarded or expired, a creation) leave the caches alone.
//! The first kind also notifies the channel of earlier versions,
//! [`SECRET_ACTIVATED`], so that replicas not yet upgraded still forget
//! during a rolling upgrade.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement};
use uuid::Uuid;

use super::{ActivationNotice, SECRET_ACTIVATED, Store};
use crate::domain::{ClientId, OrganizationId};
use crate::error::Error;

/// The PostgreSQL notification channel every change is announced on.
pub const INTEGRATION_CHANGED: &str = "integration_changed";

/// What kind of change an integration went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Created,
    /// A secret generated, activated, revoked, discarded or expired, or the
    /// domain set or verified.
    Updated,
    Deleted,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(Self::Created),
            "updated" => Some(Self::Updated),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// One committed change of one integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub organization_id: OrganizationId,
    pub client_id: ClientId,
    /// When the transaction made it.
    pub at: DateTime<Utc>,
    /// The replica that made it.
    pub replica: Uuid,
    /// Whether it may change what ValidateClient answers for the client, so
    /// that every cache must forget what it holds for it.
    pub revalidates: bool,
}

impl Change {
    /// The same change, marked as one that changes what ValidateClient
    /// answers (or not).
    pub fn revalidating(mut self, revalidates: bool) -> Self {
        self.revalidates = revalidates;
        self
    }

    /// A notification's payload: `<replica> <kind> <microseconds since the
    /// epoch> <r if it revalidates, else -> <client ID> <organization id>`
    /// (an organization id holds no space).
    pub fn to_payload(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.replica,
            self.kind.as_str(),
            self.at.timestamp_micros(),
            if self.revalidates { "r" } else { "-" },
            self.client_id,
            self.organization_id.as_str()
        )
    }

    /// Reads a payload [`Change::to_payload`] wrote; `None` for anything
    /// else.
    pub fn parse(payload: &str) -> Option<Self> {
        let mut parts = payload.splitn(6, ' ');
        let replica = parts.next()?.parse().ok()?;
        let kind = ChangeKind::parse(parts.next()?)?;
        let at = DateTime::from_timestamp_micros(parts.next()?.parse().ok()?)?;
        let revalidates = match parts.next()? {
            "r" => true,
            "-" => false,
            _ => return None,
        };
        let client_id = ClientId::parse(parts.next()?)?;
        let organization_id = OrganizationId::parse(parts.next()?.to_owned()).ok()?;
        Some(Self {
            kind,
            organization_id,
            client_id,
            at,
            replica,
            revalidates,
        })
    }
}

impl Store {
    /// A change this replica is making at `at`; it revalidates if it is a
    /// deletion, unless [`Change::revalidating`] says otherwise.
    pub(super) fn change(
        &self,
        kind: ChangeKind,
        organization_id: &OrganizationId,
        client_id: &ClientId,
        at: DateTime<Utc>,
    ) -> Change {
        Change {
            kind,
            organization_id: organization_id.clone(),
            client_id: client_id.clone(),
            at,
            replica: self.replica,
            revalidates: kind == ChangeKind::Deleted,
        }
    }

    /// Commits `txn`, which made `change`: announced to the other replicas
    /// by the commit itself, and to this process's subscribers once it has
    /// committed.
    pub(super) async fn commit_announcing(
        &self,
        txn: DatabaseTransaction,
        change: Change,
    ) -> Result<(), Error> {
        self.announce(&txn, &change).await?;
        txn.commit().await?;
        self.published(change);
        Ok(())
    }

    /// Announces `change` to the other replicas when `txn` commits.
    async fn announce(&self, txn: &DatabaseTransaction, change: &Change) -> Result<(), Error> {
        if self.backend() != DbBackend::Postgres {
            return Ok(());
        }
        notify(txn, INTEGRATION_CHANGED, change.to_payload()).await?;
        if change.revalidates {
            let notice = ActivationNotice {
                client_id: change.client_id.as_str(),
                replica: self.replica,
            };
            notify(txn, SECRET_ACTIVATED, notice.to_string()).await?;
        }
        Ok(())
    }

    /// Tells this process's subscribers of `change`, which has committed.
    fn published(&self, change: Change) {
        // No subscriber is no error.
        let _ = self.changes.send(change);
    }

    /// This process's committed changes, from now on. A receiver that
    /// falls more than the channel's capacity behind is told it lagged.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

async fn notify(txn: &DatabaseTransaction, channel: &str, payload: String) -> Result<(), Error> {
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [channel.into(), payload.into()],
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_reads_back_what_was_written() {
        let change = Change {
            kind: ChangeKind::Updated,
            organization_id: OrganizationId::parse("org-1:x".into()).expect("valid"),
            client_id: ClientId::parse("abcDEF0123456789abcdefGH").expect("valid"),
            at: DateTime::from_timestamp_micros(1_780_000_000_123_456).expect("a time"),
            replica: Uuid::new_v4(),
            revalidates: true,
        };
        assert_eq!(Change::parse(&change.to_payload()), Some(change.clone()));
        let quiet = change.revalidating(false);
        assert_eq!(Change::parse(&quiet.to_payload()), Some(quiet));
        for bad in ["", "x updated 1 r a b", "not a change at all"] {
            assert_eq!(Change::parse(bad), None, "{bad:?}");
        }
    }
}
