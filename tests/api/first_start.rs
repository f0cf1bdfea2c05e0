//! What a newcomer meets when a start goes wrong: a database without the
//! schema (or with a newer one), a mistyped SQLite directory, a port in
//! use, and what `migrate` and plain logs say. Each against the binary.

use std::time::Duration;

use sea_orm::ConnectionTrait;
use support::{ServerCommand, TestDatabase, on_every_backend, run_to_exit};

use crate::BINARY;

const WITHIN: Duration = Duration::from_secs(60);

fn serve(url: &str, extra: &[&'static str]) -> (Vec<&'static str>, Vec<(&'static str, String)>) {
    let mut args = vec!["--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    (args, vec![("DATABASE_URL", url.to_owned())])
}

async fn run(args: &[&str], envs: &[(&str, String)]) -> support::process::Finished {
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_to_exit(BINARY, args, &envs, WITHIN).await
}

on_every_backend! {
    async fn no_migrate_on_an_empty_database_refuses_to_start_and_says_to_migrate(
        database: TestDatabase,
    ) {
        let (args, envs) = serve(database.url(), &["--no-migrate"]);
        let refused = run(&args, &envs).await;
        assert!(refused.failed(), "it must not serve: {}", refused.output());
        let said = refused.output();
        assert!(said.contains("has no schema"), "{said}");
        assert!(said.contains("integration-service migrate"), "{said}");

        // Once migrated, the same start serves.
        let migrated = run(&["migrate"], &envs).await;
        assert!(migrated.succeeded(), "{}", migrated.output());
        let server = ServerCommand::new(BINARY, database.url())
            .arg("--no-migrate")
            .start()
            .await;
        server.client().await.create("org-first").await.expect("serves");
    }
}

on_every_backend! {
    async fn a_schema_newer_than_the_binary_is_refused_by_every_start(database: TestDatabase) {
        let envs = vec![("DATABASE_URL", database.url().to_owned())];
        assert!(run(&["migrate"], &envs).await.succeeded());
        database
            .connect()
            .await
            .execute_unprepared(
                "INSERT INTO seaql_migrations (version, applied_at) \
                 VALUES ('m29990101_000001_from_a_newer_version', 0)",
            )
            .await
            .expect("a migration of a newer version recorded");
        for args in [
            vec!["--listen", "127.0.0.1:0", "--no-migrate"],
            vec!["--listen", "127.0.0.1:0"],
            vec!["migrate"],
        ] {
            let refused = run(&args, &envs).await;
            assert!(refused.failed(), "{args:?}: {}", refused.output());
            let said = refused.output();
            assert!(said.contains("newer than this version"), "{args:?}: {said}");
            assert!(said.contains("m29990101_000001_from_a_newer_version"), "{said}");
        }
    }
}

#[tokio::test]
async fn migrate_says_whether_it_applied_anything() {
    let database = TestDatabase::sqlite();
    let envs = vec![("DATABASE_URL", database.url().to_owned())];
    let first = run(&["migrate"], &envs).await;
    assert!(first.succeeded(), "{}", first.output());
    assert!(
        first.stdout.contains("migrations applied"),
        "{}",
        first.stdout
    );
    let again = run(&["migrate"], &envs).await;
    assert!(again.succeeded(), "{}", again.output());
    assert!(again.stdout.contains("up to date"), "{}", again.stdout);
    assert!(
        !again.stdout.contains("migrations applied") && !again.stdout.contains("No pending"),
        "one message, and a true one: {}",
        again.stdout
    );
}

#[tokio::test]
async fn plain_logs_to_a_pipe_have_no_colour_codes() {
    let database = TestDatabase::sqlite();
    let envs = vec![
        ("DATABASE_URL", database.url().to_owned()),
        ("INTEGRATION_LOG_FORMAT", "plain".to_owned()),
    ];
    let migrated = run(&["migrate"], &envs).await;
    assert!(migrated.succeeded(), "{}", migrated.output());
    assert!(!migrated.stdout.is_empty());
    assert!(
        !migrated.output().contains('\u{1b}'),
        "no escape codes: {:?}",
        migrated.output()
    );
}

#[tokio::test]
async fn a_missing_sqlite_directory_is_refused_and_not_created() {
    let parent = tempfile::tempdir().expect("a directory");
    let missing = parent.path().join("typo");
    let url = format!("sqlite://{}/integration.db?mode=rwc", missing.display());
    let (args, envs) = serve(&url, &[]);
    let refused = run(&args, &envs).await;
    assert!(refused.failed(), "{}", refused.output());
    let said = refused.output();
    assert!(said.contains("does not exist"), "{said}");
    assert!(said.contains(&missing.display().to_string()), "{said}");
    assert!(!missing.exists(), "not created");
}

#[tokio::test]
async fn the_default_database_directory_is_created() {
    let home = tempfile::tempdir().expect("a directory");
    let mut command = tokio::process::Command::new(BINARY);
    command
        .arg("migrate")
        .current_dir(home.path())
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(WITHIN, command.output())
        .await
        .expect("in time")
        .expect("it runs");
    assert!(output.status.success(), "{output:?}");
    assert!(home.path().join("data/integration-service.db").is_file());
}

#[tokio::test]
async fn a_port_in_use_stops_the_start_before_the_database_is_made() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("bound").to_string();
    let home = tempfile::tempdir().expect("a directory");
    let file = home.path().join("integration.db");
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let envs = vec![("DATABASE_URL", url)];
    let refused = run(&["--listen", &address], &envs).await;
    assert!(refused.failed(), "{}", refused.output());
    let said = refused.output();
    assert!(
        said.contains(&format!("cannot listen on {address}")),
        "{said}"
    );
    assert!(!file.exists(), "the database was not created first");
    assert!(!said.contains("argon2id ready"), "nor argon2 timed: {said}");
}
