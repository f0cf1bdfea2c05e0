//! The tables, as sea-orm entities. `migrations/` creates them; the two must
//! agree, which the storage tests check on every backend.

pub mod integration {
    use sea_orm::entity::prelude::*;

    /// One row per organization.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "integrations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub organization_id: String,
        #[sea_orm(unique)]
        pub client_id: String,
        /// Set when the organization has its own login domain.
        pub custom_domain: Option<String>,
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
