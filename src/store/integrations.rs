//! Creating, reading and deleting integrations, an organization's secret
//! history, and the gateway's lookup.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, ExprTrait,
    FromQueryResult, IdenStatic, JoinType, Order, QueryFilter, QueryOrder, QuerySelect,
    RelationTrait, TransactionTrait, TryInsertResult,
    sea_query::{Expr, IntoCondition},
};
use uuid::Uuid;

use super::audit::{Subject, record};
use super::changes::ChangeKind;
use super::pages::{Cursor, Page, Paged, newest_first, paged};
use super::schema::{client_id, integration, secret};
use super::{ActiveCredentials, CustomDomain, Integration, SecretMetadata, Store};
use crate::audit::{Attribution, AuditAction};
use crate::domain::{ClientId, DomainState, OrganizationId, SecretHash, SecretState};
use crate::error::Error;

/// What became of a creation.
#[derive(Debug)]
pub enum Created {
    Created(Box<Integration>),
    /// The organization already has an integration.
    OrganizationExists,
    /// The client ID was issued before (to anyone, ever): draw another.
    ClientIdTaken,
}

/// What a deletion removed: the client whose secrets stop validating.
#[derive(Debug)]
pub struct Deleted {
    pub client_id: ClientId,
}

impl Store {
    /// Creates the integration of `organization` with `client_id` and no
    /// secret, recording the client ID as issued for good and the creation
    /// in the audit trail, in one transaction.
    pub async fn create_integration(
        &self,
        organization: &OrganizationId,
        client_id: &ClientId,
        by: &Attribution,
    ) -> Result<Created, Error> {
        let now = super::now();
        let txn = self.db.begin().await?;
        // ON CONFLICT DO NOTHING, twice: a client ID issued before, or a
        // concurrent creation for the same organization, inserts nothing
        // instead of failing the transaction.
        let issued = client_id::Entity::insert(client_id::ActiveModel {
            client_id: Set(client_id.as_str().to_owned()),
            organization_id: Set(organization.as_str().to_owned()),
            created_at: Set(now),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await?;
        if !matches!(issued, TryInsertResult::Inserted(1)) {
            txn.rollback().await?;
            return Ok(Created::ClientIdTaken);
        }
        let inserted = integration::Entity::insert(integration::ActiveModel {
            organization_id: Set(organization.as_str().to_owned()),
            client_id: Set(client_id.as_str().to_owned()),
            custom_domain: Set(None),
            domain_state: Set(None),
            domain_verification_code: Set(None),
            domain_verified_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await?;
        if !matches!(inserted, TryInsertResult::Inserted(1)) {
            txn.rollback().await?;
            return Ok(Created::OrganizationExists);
        }
        record(
            &txn,
            organization,
            AuditAction::IntegrationCreated,
            by,
            Subject::default(),
            now,
        )
        .await?;
        let change = self.change(ChangeKind::Created, organization, client_id, now);
        self.commit_announcing(txn, change).await?;
        Ok(Created::Created(Box::new(Integration {
            organization_id: organization.clone(),
            client_id: client_id.clone(),
            custom_domain: None,
            created_at: now,
            updated_at: now,
            active_secret: None,
            pending_secret: None,
        })))
    }

    /// Deletes the integration of `organization` and, with it, its secrets;
    /// its client ID stays issued and its audit trail stays, with the
    /// deletion recorded. `None` when there is no integration.
    pub async fn delete_integration(
        &self,
        organization: &OrganizationId,
        by: &Attribution,
    ) -> Result<Option<Deleted>, Error> {
        let now = super::now();
        let txn = self.db.begin().await?;
        // Touching the row first takes its lock (see the module of `store`).
        if !super::secrets::lock_integration(&txn, organization, now).await? {
            txn.rollback().await?;
            return Ok(None);
        }
        let client_id = integration::Entity::find_by_id(organization.as_str())
            .select_only()
            .column(integration::Column::ClientId)
            .into_tuple::<String>()
            .one(&txn)
            .await?
            .map(ClientId::from_stored)
            .ok_or_else(|| Error::internal("the locked integration vanished"))?;
        // The secrets go with it (ON DELETE CASCADE).
        integration::Entity::delete_by_id(organization.as_str())
            .exec(&txn)
            .await?;
        record(
            &txn,
            organization,
            AuditAction::IntegrationDeleted,
            by,
            Subject::default(),
            now,
        )
        .await?;
        let change = self.change(ChangeKind::Deleted, organization, &client_id, now);
        self.commit_announcing(txn, change).await?;
        Ok(Some(Deleted { client_id }))
    }

    /// The integration of `organization` with the metadata of its active and
    /// pending secrets, in one query.
    pub async fn integration(
        &self,
        organization: &OrganizationId,
    ) -> Result<Option<Integration>, Error> {
        load_integration(&self.db, organization).await
    }

    /// Whether `organization` has an integration.
    pub async fn integration_exists(&self, organization: &OrganizationId) -> Result<bool, Error> {
        let found = integration::Entity::find_by_id(organization.as_str())
            .select_only()
            .column(integration::Column::OrganizationId)
            .into_tuple::<String>()
            .one(&self.db)
            .await?;
        Ok(found.is_some())
    }

    /// A page of every secret of `organization`, newest first. `None` when
    /// the organization has no integration.
    pub async fn secrets(
        &self,
        organization: &OrganizationId,
        page: Page,
    ) -> Result<Option<Paged<SecretMetadata>>, Error> {
        if !self.integration_exists(organization).await? {
            return Ok(None);
        }
        let select = secret::Entity::find()
            .filter(secret::Column::OrganizationId.eq(organization.as_str()))
            .select_only()
            .columns(SECRET_METADATA);
        let rows = newest_first(select, secret::Column::CreatedAt, secret::Column::Id, page)
            .into_tuple::<SecretRow>()
            .all(&self.db)
            .await?;
        let secrets = rows.into_iter().map(secret_metadata).collect();
        Ok(Some(paged(secrets, page, |secret: &SecretMetadata| {
            Cursor {
                created_at: secret.created_at,
                id: secret.id,
            }
        })))
    }

    /// The stored hash of `organization`'s secret `secret_id`, to check a
    /// value against it. `None` when the organization has no such secret.
    pub async fn secret_hash(
        &self,
        organization: &OrganizationId,
        secret_id: Uuid,
    ) -> Result<Option<SecretHash>, Error> {
        let hash = secret::Entity::find_by_id(secret_id)
            .filter(secret::Column::OrganizationId.eq(organization.as_str()))
            .select_only()
            .column(secret::Column::Hash)
            .into_tuple::<String>()
            .one(&self.db)
            .await?;
        hash.map(stored_hash).transpose()
    }

    /// The organization, domain and active secret of `client_id`, in one
    /// query: what confirms a remembered verification. `None` when the
    /// client is unknown or has no active secret: the gateway's answer is
    /// the same for both.
    pub async fn active_credentials(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<ActiveCredentials>, Error> {
        Ok(self.lookup(client_id, None).await?.active)
    }

    /// What a cache miss of `client_id` verifies a value ending in `hint`
    /// against, in one query: the client's active secret, and, when the
    /// active secret's hint is not `hint` (or there is none), the most
    /// recently retired secret of the client whose hint is. Both `None`
    /// when the client is unknown.
    pub async fn candidates(&self, client_id: &ClientId, hint: &str) -> Result<Candidates, Error> {
        self.lookup(client_id, Some(hint)).await
    }

    /// The query of [`Store::active_credentials`] and, with a `hint`, of
    /// [`Store::candidates`]: the active row first, then retired ones with
    /// the hint, the most recently retired first; two rows at most.
    async fn lookup(&self, client_id: &ClientId, hint: Option<&str>) -> Result<Candidates, Error> {
        let active = secret::Column::State.eq(SecretState::Active);
        let wanted = match hint {
            None => Condition::all().add(active.clone()),
            Some(hint) => Condition::any().add(active.clone()).add(
                Condition::all()
                    .add(
                        secret::Column::State.is_in([SecretState::Revoked, SecretState::Discarded]),
                    )
                    .add(secret::Column::Hint.eq(hint)),
            ),
        };
        let active_first: Expr = Expr::case(active, 0).finally(1).into();
        let rows = secret::Entity::find()
            .join(JoinType::InnerJoin, secret::Relation::Integration.def())
            .filter(integration::Column::ClientId.eq(client_id.as_str()))
            .filter(wanted)
            .select_only()
            .column(secret::Column::Id)
            .column(secret::Column::State)
            .column(secret::Column::Hint)
            .column(secret::Column::Hash)
            .column(integration::Column::OrganizationId)
            .column(integration::Column::CustomDomain)
            .column(integration::Column::DomainState)
            .order_by(active_first, Order::Asc)
            .order_by(secret::Column::RevokedAt, Order::Desc)
            .order_by(secret::Column::Id, Order::Desc)
            .limit(2)
            .into_tuple::<CandidateRow>()
            .all(&self.db)
            .await?;
        let mut candidates = Candidates::default();
        let mut active_hint = None;
        for (secret_id, state, stored_hint, hash, organization_id, custom_domain, domain_state) in
            rows
        {
            if state == SecretState::Active {
                candidates.active = Some(active_credentials(
                    secret_id,
                    hash,
                    organization_id,
                    custom_domain,
                    domain_state,
                )?);
                active_hint = Some(stored_hint);
            } else if candidates.retired.is_none() {
                candidates.retired = Some(RetiredSecret {
                    secret_id,
                    hash: stored_hash(hash)?,
                });
            }
        }
        // A value with the active secret's hint can only be that secret's,
        // if it is any of the client's: no retired one is worth its verify.
        if active_hint.as_deref() == hint {
            candidates.retired = None;
        }
        Ok(candidates)
    }
}

/// What a cache miss verifies against ([`Store::candidates`]).
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub active: Option<ActiveCredentials>,
    /// The most recently retired secret whose hint the presented value
    /// has, when the active secret's hint is another: the value can only be
    /// that one's, if it is any of the client's.
    pub retired: Option<RetiredSecret>,
}

/// A revoked or discarded secret, as a check of a value presented anyway
/// needs it.
#[derive(Debug, Clone)]
pub struct RetiredSecret {
    pub secret_id: Uuid,
    pub hash: SecretHash,
}

/// One row of [`Store::candidates`]' query: the secret, then its
/// integration.
type CandidateRow = (
    Uuid,
    SecretState,
    String,
    String,
    String,
    Option<String>,
    Option<DomainState>,
);

fn active_credentials(
    secret_id: Uuid,
    hash: String,
    organization_id: String,
    custom_domain: Option<String>,
    domain_state: Option<DomainState>,
) -> Result<ActiveCredentials, Error> {
    Ok(ActiveCredentials {
        organization_id: stored_organization_id(organization_id)?,
        verified_domain: custom_domain.filter(|_| domain_state == Some(DomainState::Verified)),
        secret_id,
        hash: stored_hash(hash)?,
    })
}

/// The metadata columns of a secret, in the order of [`SecretRow`].
const SECRET_METADATA: [secret::Column; 9] = [
    secret::Column::Id,
    secret::Column::State,
    secret::Column::Hint,
    secret::Column::CreatedAt,
    secret::Column::ActivatedAt,
    secret::Column::RevokedAt,
    secret::Column::ExpiresAt,
    secret::Column::LastUsedAt,
    secret::Column::LastRetiredUseAt,
];

type SecretRow = (
    Uuid,
    SecretState,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn secret_metadata(row: SecretRow) -> SecretMetadata {
    let (
        id,
        state,
        hint,
        created_at,
        activated_at,
        revoked_at,
        expires_at,
        last_used_at,
        last_retired_use_at,
    ) = row;
    SecretMetadata {
        id,
        state,
        hint,
        created_at,
        activated_at,
        revoked_at,
        expires_at,
        last_used_at,
        last_retired_use_at,
    }
}

/// One row of the integration query: the integration's columns, and one of
/// its live secrets' metadata (all `None` when it has neither). The secret's
/// columns are prefixed, since both tables have a `created_at`.
#[derive(Debug, Clone, FromQueryResult)]
struct IntegrationRow {
    client_id: String,
    custom_domain: Option<String>,
    domain_state: Option<DomainState>,
    domain_verification_code: Option<String>,
    domain_verified_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    s_id: Option<Uuid>,
    s_state: Option<SecretState>,
    s_hint: Option<String>,
    s_created_at: Option<DateTime<Utc>>,
    s_activated_at: Option<DateTime<Utc>>,
    s_revoked_at: Option<DateTime<Utc>>,
    s_expires_at: Option<DateTime<Utc>>,
    s_last_used_at: Option<DateTime<Utc>>,
    s_last_retired_use_at: Option<DateTime<Utc>>,
}

/// Reads an integration and the metadata of its active and pending secrets
/// through `db`, which may be a transaction: one query, an outer join that
/// gives one row per live secret (or one row without a secret), and never
/// the hashes, which nothing that shows an integration needs.
pub(super) async fn load_integration(
    db: &impl ConnectionTrait,
    organization: &OrganizationId,
) -> Result<Option<Integration>, Error> {
    let live_secrets =
        integration::Relation::Secret
            .def()
            .on_condition(|_integrations, secrets| {
                Expr::col((secrets, secret::Column::State))
                    .is_in([SecretState::Active, SecretState::Pending])
                    .into_condition()
            });
    let mut select = integration::Entity::find_by_id(organization.as_str())
        .join(JoinType::LeftJoin, live_secrets)
        .select_only()
        .column(integration::Column::ClientId)
        .column(integration::Column::CustomDomain)
        .column(integration::Column::DomainState)
        .column(integration::Column::DomainVerificationCode)
        .column(integration::Column::DomainVerifiedAt)
        .column(integration::Column::CreatedAt)
        .column(integration::Column::UpdatedAt);
    for column in SECRET_METADATA {
        select = select.column_as(column, format!("s_{}", column.as_str()));
    }
    let rows = select.into_model::<IntegrationRow>().all(db).await?;
    let Some(first) = rows.first().cloned() else {
        return Ok(None);
    };
    let custom_domain = match (
        first.custom_domain,
        first.domain_state,
        first.domain_verification_code,
    ) {
        (Some(name), Some(state), Some(verification_code)) => Some(CustomDomain {
            name,
            state,
            verification_code,
            verified_at: first.domain_verified_at,
        }),
        _ => None,
    };
    let mut integration = Integration {
        organization_id: organization.clone(),
        client_id: ClientId::from_stored(first.client_id),
        custom_domain,
        created_at: first.created_at,
        updated_at: first.updated_at,
        active_secret: None,
        pending_secret: None,
    };
    for row in rows {
        let (Some(id), Some(state), Some(hint), Some(created_at)) =
            (row.s_id, row.s_state, row.s_hint, row.s_created_at)
        else {
            continue;
        };
        let metadata = SecretMetadata {
            id,
            state,
            hint,
            created_at,
            activated_at: row.s_activated_at,
            revoked_at: row.s_revoked_at,
            expires_at: row.s_expires_at,
            last_used_at: row.s_last_used_at,
            last_retired_use_at: row.s_last_retired_use_at,
        };
        match state {
            SecretState::Active => integration.active_secret = Some(metadata),
            _ => integration.pending_secret = Some(metadata),
        }
    }
    Ok(Some(integration))
}

/// The integration a transaction holds the lock of, as it stands in that
/// transaction: it cannot be missing.
pub(super) async fn locked_integration(
    txn: &DatabaseTransaction,
    organization: &OrganizationId,
) -> Result<Integration, Error> {
    load_integration(txn, organization)
        .await?
        .ok_or_else(|| Error::internal("the locked integration vanished"))
}

/// A stored hash that is not argon2id at the required cost is corruption.
pub(super) fn stored_hash(phc: String) -> Result<SecretHash, Error> {
    SecretHash::parse(phc).map_err(|e| Error::internal(format!("a stored secret hash: {e}")))
}

pub(super) fn stored_organization_id(id: String) -> Result<OrganizationId, Error> {
    OrganizationId::parse(id).map_err(|e| Error::internal(format!("a stored organization id: {e}")))
}
