//! TLS and mutual TLS: the service answers over TLS only, and with a client
//! CA only callers holding its certificates; a bad TLS file stops the start.

use std::{net::SocketAddr, path::Path, time::Duration};

use integration_service::{config::TlsFiles, startup::Application};
use support::{Backend, Client, TestApp, TestDatabase, expect_code, spawn_app_with, test_settings};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

/// A certificate authority, and certificates it signs, as PEM.
struct Pki {
    ca_cert: rcgen::Certificate,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca_key = rcgen::KeyPair::generate().expect("a key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("a CA");
        Self {
            ca_cert,
            ca_params,
            ca_key,
        }
    }

    fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// A certificate for `name` (PEM) and its key (PEM).
    fn issue(&self, name: &str, usage: rcgen::ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("a key");
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// A server on TLS files written to `dir`, with a certificate of `pki`
/// for `localhost`, asking callers for one of `client_ca` if given.
async fn spawn_tls_app(dir: &Path, pki: &Pki, client_ca: Option<&Pki>) -> TestApp {
    let (cert, key) = pki.issue("localhost", rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(dir.join("cert.pem"), cert).expect("written");
    std::fs::write(dir.join("key.pem"), key).expect("written");
    let tls = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        client_ca: client_ca.map(|ca| {
            std::fs::write(dir.join("client-ca.pem"), ca.ca_pem()).expect("written");
            dir.join("client-ca.pem")
        }),
    };
    spawn_app_with(Backend::Sqlite, |settings| settings.access.tls = Some(tls))
        .await
        .expect("TLS starts")
}

/// A TLS channel that trusts `ca`, presenting `identity` if given.
async fn tls_channel(
    address: SocketAddr,
    ca: &Pki,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.ca_pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{address}"))
        .expect("a URI")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// A call through `channel`, or the reason it failed.
async fn get_through(channel: Channel) -> Result<(), tonic::Status> {
    Client::new(channel).get("org-tls").await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_service_answers_and_plaintext_gets_nothing() {
    let dir = tempfile::tempdir().expect("a directory");
    let pki = Pki::new("test CA");
    let app = spawn_tls_app(dir.path(), &pki, None).await;

    let channel = tls_channel(app.address, &pki, None)
        .await
        .expect("TLS connects");
    expect_code(get_through(channel).await, Code::NotFound);

    let plaintext = Channel::from_shared(format!("http://{}", app.address))
        .expect("a URI")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let status = get_through(channel).await.expect_err("plaintext refused");
        assert_ne!(status.code(), Code::NotFound, "plaintext reached a handler");
    }

    let stranger = Pki::new("another CA");
    if let Ok(channel) = tls_channel(app.address, &stranger, None).await {
        get_through(channel)
            .await
            .expect_err("a client that does not trust the server's CA must not get through");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_callers_with_its_certificates_get_in() {
    let dir = tempfile::tempdir().expect("a directory");
    let pki = Pki::new("test CA");
    let clients = Pki::new("client CA");
    let app = spawn_tls_app(dir.path(), &pki, Some(&clients)).await;

    let client_identity = clients.issue("gateway", rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let channel = tls_channel(app.address, &pki, Some(client_identity))
        .await
        .expect("mutual TLS connects");
    expect_code(get_through(channel).await, Code::NotFound);

    for identity in [
        None,
        Some(pki.issue("rogue", rcgen::ExtendedKeyUsagePurpose::ClientAuth)),
    ] {
        if let Ok(channel) = tls_channel(app.address, &pki, identity).await {
            let status = get_through(channel)
                .await
                .expect_err("a caller without a certificate of the client CA is refused");
            assert_ne!(status.code(), Code::NotFound, "it reached a handler");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tls_file_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().expect("a directory");
    let database = TestDatabase::sqlite();
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").expect("written");
    std::fs::write(dir.path().join("key.pem"), "not a key").expect("written");
    for (cert, key) in [("missing.pem", "key.pem"), ("cert.pem", "key.pem")] {
        let mut settings = test_settings(database.url());
        settings.access.tls = Some(TlsFiles {
            cert: dir.path().join(cert),
            key: dir.path().join(key),
            client_ca: None,
        });
        let error = Application::build(settings)
            .await
            .err()
            .expect("refused to start");
        let message = error.to_string();
        assert!(
            message.contains("TLS"),
            "the message says what is wrong: {message}"
        );
        assert!(
            message.contains(&dir.path().join(cert).display().to_string()),
            "and names the file: {message}"
        );
    }
}
