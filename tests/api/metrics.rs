//! The Prometheus endpoint (`--metrics-listen`), scraped over HTTP from the
//! real binary while real calls move its counters. A process of its own,
//! so that every count is exactly this test's calls.

use std::time::Duration;

use support::{ServerCommand, TestDatabase, on_every_backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::BINARY;

/// A port free a moment ago on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// One HTTP/1.1 request; the status line and the body.
async fn http(port: u16, request_line: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the metrics port accepts");
    let request = format!("{request_line}\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers, then a body");
    (head.to_owned(), body.to_owned())
}

async fn scrape(port: u16) -> String {
    let (head, body) = http(port, "GET /metrics HTTP/1.1").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body
}

/// The value of the sample `name` whose labels include `labels`; 0 when
/// there is none yet (a counter not yet incremented is not rendered).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name
                && labels
                    .iter()
                    .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().expect("a number"))
        .sum()
}

on_every_backend! {
    async fn the_counters_move_with_real_calls_and_name_no_client(database: TestDatabase) {
        let port = free_port();
        let server = ServerCommand::new(BINARY, database.url())
            .args(&["--metrics-listen", &format!("127.0.0.1:{port}")])
            .start()
            .await;
        let client = server.client().await;
        let before = scrape(port).await;

        let integration = client.create("org-metrics").await.expect("created");
        let (value, _) = client.generate("org-metrics").await.expect("generated");
        client.activate("org-metrics", &value).await.expect("activated");
        for _ in 0..3 {
            assert!(client.is_valid(&integration.client_id, &value).await);
        }
        // A well-formed value that is not the active one: the next secret,
        // still pending.
        let (pending, _) = client.generate("org-metrics").await.expect("generated");
        assert!(!client.is_valid(&integration.client_id, &pending).await);
        let missing = client.get("org-nobody").await.expect_err("no such organization");
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let watch = client.watch("").await.expect("a stream opens");

        let after = scrape(port).await;
        let moved = |name: &str, labels: &[(&str, &str)]| {
            sample(&after, name, labels) - sample(&before, name, labels)
        };
        let requests = "integration_grpc_requests_total";
        assert_eq!(moved(requests, &[("method", "CreateIntegration"), ("code", "OK")]), 1.0);
        assert_eq!(moved(requests, &[("method", "ValidateClient"), ("code", "OK")]), 4.0);
        assert_eq!(moved(requests, &[("method", "GetIntegration"), ("code", "NOT_FOUND")]), 1.0);
        assert_eq!(
            moved("integration_grpc_request_duration_seconds_count", &[("method", "ValidateClient")]),
            4.0
        );
        let validations = "integration_validations_total";
        assert_eq!(moved(validations, &[("outcome", "valid")]), 3.0);
        assert_eq!(
            moved(validations, &[("outcome", "invalid"), ("reason", "wrong_secret")]),
            1.0
        );
        // Every check went through the cache once: answered by it, confirmed
        // by a read, or missed. The wrong value cannot have been answered
        // by it; the repeated valid ones were.
        let hits = moved("integration_cache_hits_total", &[]);
        let confirmed = moved("integration_cache_revalidations_total", &[]);
        let misses = moved("integration_cache_misses_total", &[]);
        assert_eq!(hits + confirmed + misses, 4.0, "{hits} {confirmed} {misses}");
        assert!(hits >= 1.0 && misses >= 1.0, "{hits} {confirmed} {misses}");
        assert_eq!(sample(&after, "integration_cache_entries", &[]), 1.0);
        assert_eq!(sample(&after, "integration_change_streams_open", &[]), 1.0);
        assert!(moved("integration_argon2_wait_seconds_count", &[]) >= 3.0);
        assert!(sample(&after, "integration_db_pool_max_connections", &[]) >= 1.0);
        assert!(after.contains("integration_db_pool_connections{state=\"idle\"}"));
        assert!(after.contains("integration_argon2_queue_depth"));
        assert!(after.contains("# TYPE integration_grpc_request_duration_seconds histogram"));

        // No client ID, organization or secret is ever a label or a value.
        for private in [integration.client_id.as_str(), "org-metrics", "org-nobody", value.as_str(), pending.as_str()] {
            assert!(!after.contains(private), "the metrics name {private}");
        }
        drop(watch);
        let (head, _) = http(port, "GET /other HTTP/1.1").await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        let (head, _) = http(port, "POST /metrics HTTP/1.1").await;
        assert!(head.starts_with("HTTP/1.1 405"), "{head}");
        let (status, _) = server.terminate().await;
        assert!(status.success(), "a clean exit: {status}");
    }
}

#[tokio::test]
async fn a_taken_metrics_port_stops_the_start_with_its_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("bound").to_string();
    let output = support::run_to_exit(
        BINARY,
        &["--listen", "127.0.0.1:0", "--metrics-listen", &address],
        &[("DATABASE_URL", "sqlite::memory:")],
        Duration::from_secs(30),
    )
    .await;
    assert!(output.failed(), "it must refuse to start");
    assert!(
        output
            .stdout
            .contains(&format!("cannot listen on {address}")),
        "{}",
        output.stdout
    );
}
