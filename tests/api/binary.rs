//! The binary itself, as an operator runs it: its subcommands, its logs,
//! its refusals to start, and its shutdown on SIGTERM.

use std::time::Duration;

use support::{Backend, ServerCommand, TestDatabase, on_every_backend, run_to_exit, tables};

use crate::BINARY;

/// Longer than any refusal or migration takes, even on a busy machine: a
/// command still running then is killed, and the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

const DATABASE_PASSWORD: &str = "db-Pa55word-of-the-test";

fn with_password(url: &str, password: &str) -> String {
    let mut url = url::Url::parse(url).expect("a database URL");
    url.set_password(Some(password))
        .expect("a URL that can hold a password");
    url.into()
}

on_every_backend! {
    async fn no_secret_reaches_the_log(database: TestDatabase) {
        // The test server trusts local connections, so a password is accepted
        // and ignored: it is here to show that it never reaches the log.
        let url = match database.backend() {
            Backend::Postgres => with_password(database.url(), DATABASE_PASSWORD),
            Backend::Sqlite => database.url().to_owned(),
        };
        let server = ServerCommand::new(BINARY, &url).log_filter("trace").start().await;
        let client = server.client().await;
        let org = "org-logs";

        let integration = client.create(org).await.expect("created");
        let (discarded, _) = client.generate(org).await.expect("generated");
        let (value, _) = client.generate(org).await.expect("generated");
        client.activate(org, &value).await.expect("activated");
        client.activate(org, &discarded).await.expect_err("discarded");
        let mut typo = value.clone().into_bytes();
        typo[10] = if typo[10] == b'q' { b'r' } else { b'q' };
        let typo = String::from_utf8(typo).expect("ASCII");
        client.activate(org, &typo).await.expect_err("typo");
        for value in [&value, &typo, &discarded] {
            client.validate(&integration.client_id, value).await.expect("answered");
        }
        let (status, output) = server.terminate().await;
        assert!(status.success(), "a clean exit on SIGTERM: {status}");

        let log = output.join("\n");
        for line in &output {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "not JSON: {line}"
            );
        }
        let stored_hashes: Vec<String> = tables::secret_rows(&database.connect().await)
            .await
            .into_iter()
            .map(|row| row.hash)
            .collect();
        assert_eq!(stored_hashes.len(), 2, "two secrets were stored");
        for secret in [&value, &discarded, &typo] {
            // Any 8 consecutive characters of the random part would be a leak.
            for window in secret.as_bytes()[4..60].windows(8) {
                let window = std::str::from_utf8(window).expect("ASCII");
                assert!(!log.contains(window), "a piece of a secret ({window}) is in the log");
            }
        }
        assert!(!log.contains(DATABASE_PASSWORD), "the database password is in the log");
        for hash in &stored_hashes {
            let digest = hash.rsplit('$').next().expect("a PHC string");
            assert!(!log.contains(digest), "a stored hash is in the log");
        }

        // What did happen is in the log, once each, with the organization.
        for (message, times) in [
            ("integration created", 1),
            ("secret generated", 2),
            ("secret activated", 1),
            ("serving", 1),
            ("stopped", 1),
        ] {
            let events: Vec<serde_json::Value> = output
                .iter()
                .filter_map(|line| serde_json::from_str(line).ok())
                .filter(|e: &serde_json::Value| e["message"] == message)
                .collect();
            assert_eq!(events.len(), times, "{message:?} logged {} times", events.len());
            if message.contains("secret") || message.contains("integration") {
                assert!(
                    events.iter().all(|e| e["span"]["organization_id"] == "org-logs"),
                    "{message:?} names the organization: {events:?}"
                );
            }
        }
        // The discarded value is one the client had: it is named as such.
        assert!(log.contains("retired_secret"), "a failed validation says why");
        assert!(
            log.contains("a retired secret was presented"),
            "and a retired secret presented is a warning"
        );
    }
}

on_every_backend! {
    async fn migrate_prepares_the_schema_for_a_server_that_does_not_migrate(
        database: TestDatabase,
    ) {
        let migrate = ["migrate", "--database-url", database.url()];
        let migrated = run_to_exit(BINARY, &migrate, &[], COMMAND_TIMEOUT).await;
        assert!(migrated.succeeded(), "migrate: {migrated:?}");
        let again = run_to_exit(BINARY, &migrate, &[], COMMAND_TIMEOUT).await;
        assert!(again.succeeded(), "migrating twice is harmless: {again:?}");

        let server = ServerCommand::new(BINARY, database.url())
            .log_filter("trace")
            .arg("--no-migrate")
            .start()
            .await;
        server.client().await.create("org-cli").await.expect("the migrated schema serves");
        let (status, _) = server.terminate().await;
        assert!(status.success(), "a clean exit on SIGTERM: {status}");
    }
}

#[tokio::test]
async fn settings_that_would_weaken_hashing_stop_the_start() {
    let output = run_to_exit(
        BINARY,
        &["--listen", "127.0.0.1:0", "--argon2-memory-kib", "4096"],
        &[("DATABASE_URL", "sqlite::memory:")],
        COMMAND_TIMEOUT,
    )
    .await;
    assert!(output.failed(), "it must refuse to start");
    let said = &output.stdout;
    assert!(said.contains("at least m=19456"), "it says why: {said}");
}

#[tokio::test]
async fn a_malformed_database_url_is_refused_without_repeating_its_password() {
    let url = format!("postgres://svc:{DATABASE_PASSWORD}@db:notaport/x");
    let output = run_to_exit(
        BINARY,
        &["--listen", "127.0.0.1:0"],
        &[("DATABASE_URL", &url), ("RUST_LOG", "trace")],
        COMMAND_TIMEOUT,
    )
    .await;
    assert!(output.failed(), "it must refuse to start");
    let said = output.output();
    assert!(said.contains("not a valid URL"), "it says why: {said}");
    assert!(
        !said.contains(DATABASE_PASSWORD),
        "it repeats the password: {said}"
    );
}
