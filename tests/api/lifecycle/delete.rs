use integration_service::proto::AuditAction;
use support::{TestApp, expect_code, on_every_backend};
use tonic::Code;

use super::actions;

on_every_backend! {
    async fn a_deleted_integration_stops_validating_and_its_client_id_is_never_reused(app: TestApp) {
        let (client_id, value) = app.ready("org-del").await;
        assert!(app.is_valid(&client_id, &value).await);

        app.delete("org-del").await.expect("deleted");
        assert!(!app.is_valid(&client_id, &value).await, "refused at once");
        expect_code(app.get("org-del").await, Code::NotFound);
        expect_code(app.generate("org-del").await, Code::NotFound);
        expect_code(app.list_secrets("org-del", 0, "").await, Code::NotFound);
        expect_code(app.delete("org-del").await, Code::NotFound);

        let again = app.create("org-del").await.expect("created again");
        assert_ne!(again.client_id, client_id, "a new client ID");
        assert!(again.active_secret.is_none(), "and nothing of the old one");
        assert!(!app.is_valid(&client_id, &value).await, "the old pair stays refused");

        let trail = app.all_audit("org-del").await.expect("the trail outlives the deletion");
        assert_eq!(
            actions(&trail),
            [
                AuditAction::IntegrationCreated,
                AuditAction::IntegrationDeleted,
                AuditAction::SecretActivated,
                AuditAction::SecretGenerated,
                AuditAction::IntegrationCreated,
            ],
            "newest first, across the deletion"
        );
        let rows = app.tables();
        use sea_orm::{ConnectionTrait, Statement};
        let issued = rows
            .query_one_raw(Statement::from_string(
                rows.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM client_ids WHERE client_id = '{client_id}'"),
            ))
            .await
            .expect("read")
            .expect("a row")
            .try_get::<i64>("", "n")
            .expect("a count");
        assert_eq!(issued, 1, "the deleted client ID stays recorded as issued");
    }
}

on_every_backend! {
    async fn deleting_needs_a_well_formed_known_organization(app: TestApp) {
        expect_code(app.delete("org-never").await, Code::NotFound);
        expect_code(app.delete("").await, Code::InvalidArgument);
        expect_code(app.delete("bad org").await, Code::InvalidArgument);
    }
}
