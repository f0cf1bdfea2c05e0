//! The schema of the integration service, as sea-orm migrations.
//!
//! The service applies these at start (`integration-service serve`) or on
//! demand (`integration-service migrate`); both go through
//! `integration_service::store::migrate`, which serializes concurrent
//! replicas. Migrations are append-only: once released, a migration is never
//! edited, only followed by a new one.

/// Whether a migration has been applied, as the service checks its schema.
pub use sea_orm_migration::MigrationStatus;
pub use sea_orm_migration::prelude::*;

mod m20261129_000001_create_integrations_and_secrets;
mod m20261202_000001_secret_lifecycle;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_create_integrations_and_secrets::Migration),
            Box::new(m20261202_000001_secret_lifecycle::Migration),
        ]
    }
}
