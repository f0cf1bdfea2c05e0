//! Reading and creating integrations, and the gateway's lookup.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
    RelationTrait, TryInsertResult,
};

use uuid::Uuid;

use super::schema::{integration, secret};
use super::{ActiveCredentials, Integration, Store, StoredSecret};
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

    /// The integration of `organization` with its active and pending secrets.
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

    /// The organization and active secret of `client_id`, in one query.
    /// `None` when the client is unknown or has no active secret: the
    /// gateway's answer is the same for both.
    pub async fn active_credentials(
        &self,
        client_id: &ClientId,
    ) -> Result<Option<ActiveCredentials>, Error> {
        let row = secret::Entity::find()
            .join(
                sea_orm::JoinType::InnerJoin,
                secret::Relation::Integration.def(),
            )
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

impl Store {
    /// The id of the active secret of `client_id`: enough to tell whether a
    /// remembered verification still holds.
    pub async fn active_secret_id(&self, client_id: &ClientId) -> Result<Option<Uuid>, Error> {
        let id = secret::Entity::find()
            .join(
                sea_orm::JoinType::InnerJoin,
                secret::Relation::Integration.def(),
            )
            .filter(integration::Column::ClientId.eq(client_id.as_str()))
            .filter(secret::Column::State.eq(SecretState::Active))
            .select_only()
            .column(secret::Column::Id)
            .into_tuple::<Uuid>()
            .one(&self.db)
            .await?;
        Ok(id)
    }
}

/// Reads an integration and its active and pending secrets through `db`,
/// which may be a transaction.
pub(super) async fn load_integration(
    db: &impl ConnectionTrait,
    organization: &OrganizationId,
) -> Result<Option<Integration>, Error> {
    let Some(row) = integration::Entity::find_by_id(organization.as_str())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let secrets = secret::Entity::find()
        .filter(secret::Column::OrganizationId.eq(organization.as_str()))
        .filter(secret::Column::State.is_in([SecretState::Active, SecretState::Pending]))
        .all(db)
        .await?;
    let mut integration = Integration {
        organization_id: organization.clone(),
        client_id: ClientId::from_stored(row.client_id),
        custom_domain: row.custom_domain,
        created_at: row.created_at,
        updated_at: row.updated_at,
        active_secret: None,
        pending_secret: None,
    };
    for row in secrets {
        let secret = StoredSecret::try_from(row)?;
        match secret.state {
            SecretState::Active => integration.active_secret = Some(secret),
            _ => integration.pending_secret = Some(secret),
        }
    }
    Ok(Some(integration))
}

impl TryFrom<secret::Model> for StoredSecret {
    type Error = Error;

    fn try_from(row: secret::Model) -> Result<Self, Error> {
        Ok(Self {
            id: row.id,
            state: row.state,
            hint: row.hint,
            hash: stored_hash(row.hash)?,
            created_at: row.created_at,
            activated_at: row.activated_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// A stored hash that is not argon2id at the required cost is corruption.
fn stored_hash(phc: String) -> Result<SecretHash, Error> {
    SecretHash::parse(phc).map_err(|e| Error::internal(format!("a stored secret hash: {e}")))
}

fn stored_organization_id(id: String) -> Result<OrganizationId, Error> {
    OrganizationId::parse(id).map_err(|e| Error::internal(format!("a stored organization id: {e}")))
}
