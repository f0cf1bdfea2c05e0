use sea_orm::entity::prelude::*;

/// Where a secret is in its life:
///
/// ```text
/// PENDING ──activate──▶ ACTIVE ──a newer one is activated──▶ REVOKED
///    │
///    └──a newer one is generated──▶ DISCARDED
/// ```
///
/// An organization has at most one ACTIVE and at most one PENDING secret;
/// the database enforces it. Only ACTIVE validates. REVOKED and DISCARDED are
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum SecretState {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "active")]
    Active,
    #[sea_orm(string_value = "revoked")]
    Revoked,
    #[sea_orm(string_value = "discarded")]
    Discarded,
}
