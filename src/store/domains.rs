//! An organization's custom domain: set (unverified, with a code to
//! publish), cleared, and proven.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};

use super::audit::{Subject, record};
use super::changes::ChangeKind;
use super::integrations::{load_integration, locked_integration};
use super::schema::integration;
use super::secrets::lock_integration_of;
use super::{CustomDomain, Integration, Store};
use crate::audit::{Attribution, AuditAction};
use crate::domain::{DomainState, OrganizationId};
use crate::error::Error;

/// What became of an UpdateDomain.
#[derive(Debug)]
pub enum DomainUpdate {
    /// The domain was set or cleared; `was_verified` says whether the
    /// effective domain changed with it (the one replaced had been proven).
    Changed {
        integration: Box<Integration>,
        was_verified: bool,
    },
    /// The organization already had exactly that: nothing changed.
    Unchanged(Box<Integration>),
    NoIntegration,
}

/// What became of recording a proof.
#[derive(Debug)]
pub enum DomainVerification {
    Verified(Box<Integration>),
    /// The domain or its code changed since the look-up began (a
    /// concurrent UpdateDomain): the proof is for something else.
    Superseded,
    /// Another organization has proven this domain already.
    TakenBy,
    NoIntegration,
}

impl Store {
    /// Sets `organization`'s custom domain to `name` (UNVERIFIED, to be
    /// proven with `code`), or clears it with `None`, recording it in the
    /// audit trail. Setting the name it already has changes nothing, so its
    /// code and proof stay.
    pub async fn update_domain(
        &self,
        organization: &OrganizationId,
        name: Option<&str>,
        code: &str,
        by: &Attribution,
    ) -> Result<DomainUpdate, Error> {
        let now = super::now();
        let txn = self.db.begin().await?;
        // The lock first, so that on SQLite the transaction is a writer
        // from its first statement (see the module of `store`); a change
        // that changes nothing is rolled back, lock and all.
        let Some(client_id) = lock_integration_of(&txn, organization, now).await? else {
            txn.rollback().await?;
            return Ok(DomainUpdate::NoIntegration);
        };
        let current = current_domain(&txn, organization).await?.flatten();
        if current.as_ref().map(|domain| domain.name.as_str()) == name {
            txn.rollback().await?;
            let integration = load_integration(&self.db, organization)
                .await?
                .ok_or_else(|| Error::internal("the integration vanished"))?;
            return Ok(DomainUpdate::Unchanged(Box::new(integration)));
        }
        let was_verified = current
            .as_ref()
            .is_some_and(|domain| domain.state == DomainState::Verified);
        integration::Entity::update_many()
            .set(integration::ActiveModel {
                custom_domain: Set(name.map(str::to_owned)),
                domain_state: Set(name.map(|_| DomainState::Unverified)),
                domain_verification_code: Set(name.map(|_| code.to_owned())),
                domain_verified_at: Set(None),
                ..Default::default()
            })
            .filter(integration::Column::OrganizationId.eq(organization.as_str()))
            .exec(&txn)
            .await?;
        record(
            &txn,
            organization,
            AuditAction::DomainUpdated,
            by,
            Subject::domain(name.unwrap_or_default()),
            now,
        )
        .await?;
        let integration = locked_integration(&txn, organization).await?;
        let change = self
            .change(ChangeKind::Updated, organization, &client_id, now)
            .revalidating(was_verified);
        self.commit_announcing(txn, change).await?;
        Ok(DomainUpdate::Changed {
            integration: Box::new(integration),
            was_verified,
        })
    }

    /// Marks `organization`'s custom domain VERIFIED, if it is still `name`
    /// awaiting proof with `code` (what the DNS look-up found), recording it
    /// in the audit trail.
    pub async fn verify_domain(
        &self,
        organization: &OrganizationId,
        name: &str,
        code: &str,
        by: &Attribution,
    ) -> Result<DomainVerification, Error> {
        let now = super::now();
        let txn = self.db.begin().await?;
        let Some(client_id) = lock_integration_of(&txn, organization, now).await? else {
            txn.rollback().await?;
            return Ok(DomainVerification::NoIntegration);
        };
        let current = current_domain(&txn, organization).await?.flatten();
        let still_awaited = current.as_ref().is_some_and(|domain| {
            domain.name == name
                && domain.verification_code == code
                && domain.state == DomainState::Unverified
        });
        if !still_awaited {
            txn.rollback().await?;
            return Ok(DomainVerification::Superseded);
        }
        let updated = integration::Entity::update_many()
            .set(integration::ActiveModel {
                domain_state: Set(Some(DomainState::Verified)),
                domain_verified_at: Set(Some(now)),
                ..Default::default()
            })
            .filter(integration::Column::OrganizationId.eq(organization.as_str()))
            .exec(&txn)
            .await;
        match updated {
            Ok(_) => {}
            // The one-verified-domain index: another organization holds it.
            Err(error) if is_unique_violation(&error) => {
                txn.rollback().await?;
                return Ok(DomainVerification::TakenBy);
            }
            Err(error) => return Err(error.into()),
        }
        record(
            &txn,
            organization,
            AuditAction::DomainVerified,
            by,
            Subject::domain(name),
            now,
        )
        .await?;
        let integration = locked_integration(&txn, organization).await?;
        let change = self
            .change(ChangeKind::Updated, organization, &client_id, now)
            .revalidating(true);
        self.commit_announcing(txn, change).await?;
        Ok(DomainVerification::Verified(Box::new(integration)))
    }
}

/// The organization's custom domain: `None` when it has no integration,
/// `Some(None)` when it has no custom domain.
async fn current_domain(
    txn: &DatabaseTransaction,
    organization: &OrganizationId,
) -> Result<Option<Option<CustomDomain>>, Error> {
    type Row = (
        Option<String>,
        Option<DomainState>,
        Option<String>,
        Option<DateTime<Utc>>,
    );
    let row = integration::Entity::find_by_id(organization.as_str())
        .select_only()
        .column(integration::Column::CustomDomain)
        .column(integration::Column::DomainState)
        .column(integration::Column::DomainVerificationCode)
        .column(integration::Column::DomainVerifiedAt)
        .into_tuple::<Row>()
        .one(txn)
        .await?;
    Ok(row.map(
        |(name, state, code, verified_at)| match (name, state, code) {
            (Some(name), Some(state), Some(verification_code)) => Some(CustomDomain {
                name,
                state,
                verification_code,
                verified_at,
            }),
            _ => None,
        },
    ))
}

/// Whether `error` is a unique constraint's refusal, on either backend.
fn is_unique_violation(error: &sea_orm::DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}
