//! The tables, as sea-orm entities. `migrations/` creates them; the two must
//! agree, which the storage tests check on every backend.

pub mod integration {
    use sea_orm::entity::prelude::*;

    use crate::domain::DomainState;

    /// One row per organization.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "integrations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub organization_id: String,
        #[sea_orm(unique)]
        pub client_id: String,
        /// The custom domain the organization set, proven or not.
        pub custom_domain: Option<String>,
        /// Set exactly when `custom_domain` is.
        pub domain_state: Option<DomainState>,
        /// What the TXT record `_centralauth.<custom_domain>` must hold.
        pub domain_verification_code: Option<String>,
        /// When VerifyDomain found the record.
        pub domain_verified_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
        /// Touched by every change to the integration or its secrets; the
        /// update also serves as the per-organization lock of a transaction.
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::secret::Entity")]
        Secret,
    }

    impl Related<super::secret::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Secret.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod secret {
    use sea_orm::entity::prelude::*;

    use crate::domain::SecretState;

    /// Every secret an organization has had. The value itself is never here:
    /// `hash` is an argon2id PHC string.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organization_id: String,
        pub state: SecretState,
        pub hash: String,
        /// The last four characters of the value.
        pub hint: String,
        pub created_at: DateTimeUtc,
        pub activated_at: Option<DateTimeUtc>,
        /// When it was revoked (if it was active) or discarded (if pending).
        pub revoked_at: Option<DateTimeUtc>,
        /// PENDING: when it is discarded unless activated first.
        pub expires_at: Option<DateTimeUtc>,
        /// When ValidateClient last accepted it (recorded at most once a
        /// minute).
        pub last_used_at: Option<DateTimeUtc>,
        /// REVOKED or DISCARDED: when ValidateClient was last presented it.
        pub last_retired_use_at: Option<DateTimeUtc>,
    }

    // By hand, to leave the hash out of any log.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("secret::Model")
                .field("id", &self.id)
                .field("organization_id", &self.organization_id)
                .field("state", &self.state)
                .field("hint", &self.hint)
                .finish_non_exhaustive()
        }
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::integration::Entity",
            from = "Column::OrganizationId",
            to = "super::integration::Column::OrganizationId"
        )]
        Integration,
    }

    impl Related<super::integration::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Integration.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod client_id {
    use sea_orm::entity::prelude::*;

    /// Every client ID ever issued, kept after its integration is deleted so
    /// that it is never issued again.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "client_ids")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub client_id: String,
        pub organization_id: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_event {
    use sea_orm::entity::prelude::*;

    use crate::audit::AuditAction;

    /// One change, written in the transaction that made it. No foreign key:
    /// the trail outlives the integration.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub organization_id: String,
        pub action: AuditAction,
        pub caller: String,
        /// Empty when the caller named nobody.
        pub actor: String,
        pub secret_id: Option<Uuid>,
        pub domain: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
