//! Reading and creating integrations, and the gateway's lookup.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, JoinType, QueryFilter, QuerySelect,
    RelationTrait, TryInsertResult,
    sea_query::{Expr, IntoCondition},
};
use uuid::Uuid;

use super::schema::{integration, secret};
use super::{ActiveCredentials, Integration, SecretMetadata, Store};
use crate::domain::{ClientId, OrganizationId, SecretHash, SecretState};
use crate::error::Error;

impl Store {
    /// Creates the integration of `organization` with `client_id` and no
    /// secret. `None` when the organization already has one.
    pub async fn create_integration(
        &self,
        organization: &OrganizationId,
        client_id: &ClientId,
    ) -> Result<Option<Integration>, Error> {
        let now = super::now();
        let row = integration::ActiveModel {
            organization_id: Set(organization.as_str().to_owned()),
            client_id: Set(client_id.as_str().to_owned()),
            custom_domain: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        // ON CONFLICT (organization_id) DO NOTHING: a concurrent creation for
        // the same organization inserts nothing instead of failing.
        let inserted = integration::Entity::insert(row)
            .on_conflict_do_nothing()
            .exec_without_returning(&self.db)
            .await?;
        if !matches!(inserted, TryInsertResult::Inserted(1)) {
            return Ok(None);
        }
        Ok(Some(Integration {
            organization_id: organization.clone(),
            client_id: client_id.clone(),
            custom_domain: None,
            created_at: now,
            updated_at: now,
            active_secret: None,
            pending_secret: None,
        }))
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
    /// query: what a cache miss verifies against, and what confirms a
    /// remembered verification. `None` when the client is unknown or has no
    /// active secret: the gateway's answer is the same for both.
    pub async fn active_credentials(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<ActiveCredentials>, Error> {
        let row = secret::Entity::find()
            .join(JoinType::InnerJoin, secret::Relation::Integration.def())
            .filter(integration::Column::ClientId.eq(client_id.as_str()))
            .filter(secret::Column::State.eq(SecretState::Active))
            .select_only()
            .column(secret::Column::Id)
            .column(secret::Column::Hash)
            .column(integration::Column::OrganizationId)
            .column(integration::Column::CustomDomain)
            .into_tuple::<(Uuid, String, String, Option<String>)>()
            .one(&self.db)
            .await?;
        let Some((secret_id, hash, organization_id, custom_domain)) = row else {
            return Ok(None);
        };
        Ok(Some(ActiveCredentials {
            organization_id: stored_organization_id(organization_id)?,
            custom_domain,
            secret_id,
            hash: stored_hash(hash)?,
        }))
    }
}

/// One row of the integration query: the integration's columns, and one of
/// its live secrets' metadata (all `None` when it has neither).
type IntegrationRow = (
    String,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<Uuid>,
    Option<SecretState>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

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
    let rows = integration::Entity::find_by_id(organization.as_str())
        .join(JoinType::LeftJoin, live_secrets)
        .select_only()
        .column(integration::Column::ClientId)
        .column(integration::Column::CustomDomain)
        .column(integration::Column::CreatedAt)
        .column(integration::Column::UpdatedAt)
        .column(secret::Column::Id)
        .column(secret::Column::State)
        .column(secret::Column::Hint)
        .column(secret::Column::CreatedAt)
        .column(secret::Column::ActivatedAt)
        .column(secret::Column::RevokedAt)
        .into_tuple::<IntegrationRow>()
        .all(db)
        .await?;
    let Some((client_id, custom_domain, created_at, updated_at, ..)) = rows.first().cloned() else {
        return Ok(None);
    };
    let mut integration = Integration {
        organization_id: organization.clone(),
        client_id: ClientId::from_stored(client_id),
        custom_domain,
        created_at,
        updated_at,
        active_secret: None,
        pending_secret: None,
    };
    for (.., id, state, hint, created_at, activated_at, revoked_at) in rows {
        let (Some(id), Some(state), Some(hint), Some(created_at)) = (id, state, hint, created_at)
        else {
            continue;
        };
        let secret = SecretMetadata {
            id,
            state,
            hint,
            created_at,
            activated_at,
            revoked_at,
        };
        match state {
            SecretState::Active => integration.active_secret = Some(secret),
            _ => integration.pending_secret = Some(secret),
        }
    }
    Ok(Some(integration))
}

/// A stored hash that is not argon2id at the required cost is corruption.
fn stored_hash(phc: String) -> Result<SecretHash, Error> {
    SecretHash::parse(phc).map_err(|e| Error::internal(format!("a stored secret hash: {e}")))
}

fn stored_organization_id(id: String) -> Result<OrganizationId, Error> {
    OrganizationId::parse(id).map_err(|e| Error::internal(format!("a stored organization id: {e}")))
}
