//! gRPC-Web for the browser (`--grpc-web`), and CORS for the origins
//! allowed (`--cors-allow-origin`): HTTP/1.1 requests as a browser's
//! gRPC-Web client sends them, against the real server.

use std::net::SocketAddr;
use std::time::Duration;

use integration_service::{config::Settings, proto};
use prost::Message;
use support::{TestApp, on_every_backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DASHBOARD: &str = "http://dashboard.test:5173";
const PATH: &str = "/centralauth.integration.v1.IntegrationService/GetIntegration";

fn web_for_the_dashboard(settings: &mut Settings) {
    settings.web.grpc_web = true;
    settings.web.cors_allow_origins = vec![DASHBOARD.to_owned()];
}

/// Sends one HTTP/1.1 request and reads the whole answer (headers, body).
async fn http1(address: SocketAddr, head: &str, body: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!(
        "{head}\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    stream.write_all(body).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .ok()?
        .ok()?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    Some((head, answer[split + 4..].to_vec()))
}

/// A gRPC-Web call of GetIntegration for `organization`, from `origin`.
async fn get_from(app: &TestApp, origin: &str, organization: &str) -> Option<(String, Vec<u8>)> {
    let message = proto::GetIntegrationRequest {
        organization_id: organization.to_owned(),
    }
    .encode_to_vec();
    let mut framed = vec![0];
    framed.extend((message.len() as u32).to_be_bytes());
    framed.extend(message);
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nOrigin: {origin}"
    );
    http1(app.address, &head, &framed).await
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

on_every_backend! {
    async fn a_browser_on_an_allowed_origin_calls_through_grpc_web(app: TestApp)
        with web_for_the_dashboard
    {
        app.create("org-web").await.expect("created");
        let (head, body) = get_from(&app, DASHBOARD, "org-web").await.expect("answered");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: application/grpc-web+proto"), "{head}");
        assert!(head.contains(&format!("access-control-allow-origin: {DASHBOARD}")), "{head}");
        assert!(head.contains("access-control-expose-headers:"), "{head}");
        // The integration, then the trailers frame (flag 0x80) with OK.
        assert!(contains(&body, "org-web"), "the integration is in the body");
        assert!(contains(&body, "grpc-status:0"), "{:?}", String::from_utf8_lossy(&body));

        // An error is a trailers-only answer: its status is in the headers.
        let (head, _) = get_from(&app, DASHBOARD, "org-nobody").await.expect("answered");
        assert!(head.contains("grpc-status: 5"), "NOT_FOUND: {head}");
        assert!(head.contains("grpc-message:"), "with its message: {head}");
    }
}

on_every_backend! {
    async fn preflights_are_answered_for_the_allowed_origins_only(app: TestApp)
        with web_for_the_dashboard
    {
        let preflight = |origin: &str| {
            format!(
                "OPTIONS {PATH} HTTP/1.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: authorization,content-type,x-grpc-web,x-actor"
            )
        };
        let (head, _) = http1(app.address, &preflight(DASHBOARD), b"").await.expect("answered");
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains(&format!("access-control-allow-origin: {DASHBOARD}")), "{head}");
        assert!(head.contains("authorization"), "{head}");
        assert!(head.contains("x-actor"), "{head}");

        let elsewhere = "https://evil.example";
        let (head, _) = http1(app.address, &preflight(elsewhere), b"").await.expect("answered");
        assert!(!head.contains("access-control-allow-origin"), "{head}");
        let (head, _) = get_from(&app, elsewhere, "org-nobody").await.expect("answered");
        assert!(
            !head.contains("access-control-allow-origin"),
            "a page elsewhere cannot read the answer: {head}"
        );
    }
}

on_every_backend! {
    async fn without_grpc_web_http1_is_not_served(app: TestApp) {
        let answered = get_from(&app, DASHBOARD, "org-nobody").await;
        assert!(
            answered.as_ref().is_none_or(|(head, _)| !head.starts_with("http/1.1 200")),
            "only HTTP/2 gRPC without --grpc-web: {answered:?}"
        );
    }
}
