//! The secret lifecycle: custom domains and their proof, the expiry and use
//! of secrets, every client ID ever issued, and the audit trail.
//!
//! - `integrations` gains the custom domain's state, its verification code
//!   and when it was proven. No two organizations can hold the same
//!   *verified* domain: a partial unique index says so.
//! - `secrets` gains when a pending secret expires, when the active one was
//!   last accepted, and when a retired one was last presented anyway. The
//!   expiry sweep finds what is due through a partial index on pending rows.
//! - `client_ids` holds every client ID ever issued, and outlives the
//!   integration: a deleted organization's client ID can never be issued
//!   again, because its row stays and the primary key refuses a second one.
//! - `audit_events` holds every change, keyed by organization id without a
//!   foreign key, so the trail outlives DeleteIntegration.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Integrations {
    Table,
    OrganizationId,
    ClientId,
    CustomDomain,
    DomainState,
    DomainVerificationCode,
    DomainVerifiedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Secrets {
    Table,
    State,
    ExpiresAt,
    LastUsedAt,
    LastRetiredUseAt,
}

#[derive(DeriveIden)]
enum ClientIds {
    Table,
    ClientId,
    OrganizationId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OrganizationId,
    Action,
    Caller,
    Actor,
    SecretId,
    Domain,
    CreatedAt,
}

/// The states a custom domain may be in; the CHECK constraint lists them.
const DOMAIN_STATES: [&str; 2] = ["unverified", "verified"];

/// The actions an audit event may record; the CHECK constraint lists them.
const ACTIONS: [&str; 9] = [
    "integration_created",
    "secret_generated",
    "secret_activated",
    "secret_revoked",
    "secret_discarded",
    "secret_expired",
    "domain_updated",
    "domain_verified",
    "integration_deleted",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        let integration_columns = [
            ColumnDef::new(Integrations::DomainState)
                .string_len(16)
                .null()
                .check(Expr::col(Integrations::DomainState).is_in(DOMAIN_STATES))
                .to_owned(),
            ColumnDef::new(Integrations::DomainVerificationCode)
                .string_len(64)
                .null()
                .to_owned(),
            ColumnDef::new(Integrations::DomainVerifiedAt)
                .timestamp_with_time_zone()
                .null()
                .to_owned(),
        ];
        for mut column in integration_columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Integrations::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("integrations_one_verified_domain")
                    .table(Integrations::Table)
                    .col(Integrations::CustomDomain)
                    .unique()
                    .and_where(Expr::col(Integrations::DomainState).eq("verified"))
                    .to_owned(),
            )
            .await?;

        for column in [
            Secrets::ExpiresAt,
            Secrets::LastUsedAt,
            Secrets::LastRetiredUseAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Secrets::Table)
                        .add_column(ColumnDef::new(column).timestamp_with_time_zone().null())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("secrets_pending_expires_at_idx")
                    .table(Secrets::Table)
                    .col(Secrets::ExpiresAt)
                    .and_where(Expr::col(Secrets::State).eq("pending"))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ClientIds::Table)
                    .col(
                        ColumnDef::new(ClientIds::ClientId)
                            .string_len(64)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(ClientIds::OrganizationId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ClientIds::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("client_ids_organization_id_idx")
                    .table(ClientIds::Table)
                    .col(ClientIds::OrganizationId)
                    .to_owned(),
            )
            .await?;
        // The client IDs issued before this migration.
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(ClientIds::Table)
                    .columns([
                        ClientIds::ClientId,
                        ClientIds::OrganizationId,
                        ClientIds::CreatedAt,
                    ])
                    .select_from(
                        Query::select()
                            .columns([
                                Integrations::ClientId,
                                Integrations::OrganizationId,
                                Integrations::CreatedAt,
                            ])
                            .from(Integrations::Table)
                            .to_owned(),
                    )
                    .map_err(|e| DbErr::Migration(e.to_string()))?
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(
                        ColumnDef::new(AuditEvents::Id)
                            .uuid()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::OrganizationId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Action)
                            .string_len(32)
                            .not_null()
                            .check(Expr::col(AuditEvents::Action).is_in(ACTIONS)),
                    )
                    .col(
                        ColumnDef::new(AuditEvents::Caller)
                            .string_len(64)
                            .not_null(),
                    )
                    // Up to 256 characters of any script: text, not a byte
                    // length.
                    .col(ColumnDef::new(AuditEvents::Actor).text().not_null())
                    .col(ColumnDef::new(AuditEvents::SecretId).uuid().null())
                    .col(ColumnDef::new(AuditEvents::Domain).string_len(253).null())
                    .col(
                        ColumnDef::new(AuditEvents::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // ListAuditEvents: one organization's events, newest first.
        manager
            .create_index(
                Index::create()
                    .name("audit_events_organization_id_created_at_idx")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrganizationId)
                    .col(AuditEvents::CreatedAt)
                    .col(AuditEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ClientIds::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("secrets_pending_expires_at_idx")
                    .table(Secrets::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Secrets::ExpiresAt,
            Secrets::LastUsedAt,
            Secrets::LastRetiredUseAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Secrets::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("integrations_one_verified_domain")
                    .table(Integrations::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Integrations::DomainVerifiedAt,
            Integrations::DomainVerificationCode,
            Integrations::DomainState,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Integrations::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
