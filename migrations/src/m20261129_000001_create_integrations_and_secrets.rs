//! The two tables: one integration per organization, and every secret it has
//! ever had.
//!
//! The rule "at most one ACTIVE and at most one PENDING secret per
//! organization" is enforced here, by two partial unique indexes, so that it
//! holds whatever the code does and however many replicas race.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Integrations {
    Table,
    OrganizationId,
    ClientId,
    CustomDomain,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Secrets {
    Table,
    Id,
    OrganizationId,
    State,
    Hash,
    Hint,
    CreatedAt,
    ActivatedAt,
    RevokedAt,
}

/// The states a secret row may hold; the CHECK constraint below lists them.
const STATES: [&str; 4] = ["pending", "active", "revoked", "discarded"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Integrations::Table)
                    .col(
                        ColumnDef::new(Integrations::OrganizationId)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Integrations::ClientId)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(Integrations::CustomDomain)
                            .string_len(253)
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Integrations::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Integrations::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Secrets::Table)
                    .col(ColumnDef::new(Secrets::Id).uuid().not_null().primary_key())
                    .col(
                        ColumnDef::new(Secrets::OrganizationId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Secrets::State)
                            .string_len(16)
                            .not_null()
                            .check(Expr::col(Secrets::State).is_in(STATES)),
                    )
                    .col(ColumnDef::new(Secrets::Hash).text().not_null())
                    .col(ColumnDef::new(Secrets::Hint).string_len(4).not_null())
                    .col(
                        ColumnDef::new(Secrets::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Secrets::ActivatedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Secrets::RevokedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("secrets_organization_id_fkey")
                            .from(Secrets::Table, Secrets::OrganizationId)
                            .to(Integrations::Table, Integrations::OrganizationId)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // Serves the foreign key and any listing of an organization's history.
        manager
            .create_index(
                Index::create()
                    .name("secrets_organization_id_created_at_idx")
                    .table(Secrets::Table)
                    .col(Secrets::OrganizationId)
                    .col(Secrets::CreatedAt)
                    .to_owned(),
            )
            .await?;

        for state in ["active", "pending"] {
            manager
                .create_index(
                    Index::create()
                        .name(format!("secrets_one_{state}_per_organization"))
                        .table(Secrets::Table)
                        .col(Secrets::OrganizationId)
                        .unique()
                        .and_where(Expr::col(Secrets::State).eq(state))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Secrets::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Integrations::Table).to_owned())
            .await
    }
}
