//! Custom domains: UpdateDomain's rules, and VerifyDomain against a real DNS
//! server in the test's process.

use std::{net::SocketAddr, time::Duration};

use integration_service::proto::{AuditAction, DomainState};
use support::{Backend, DEFAULT_DOMAIN, TestApp, TestDns, expect_code, on_every_backend};
use tonic::Code;

use super::actions;

/// A server of the same database that asks `dns` for TXT records.
async fn asking(app: &TestApp, dns: SocketAddr) -> TestApp {
    app.replica_with(|settings| settings.lifecycle.dns_resolver = Some(dns))
        .await
}

on_every_backend! {
    async fn a_new_domain_is_normalized_and_unverified_until_proven(app: TestApp) {
        let (client_id, value) = app.ready("org-dom").await;
        let integration = app.update_domain("org-dom", "Login.Bücher.Example.").await.expect("set");
        let status = integration.custom_domain_status.clone().expect("a custom domain");
        assert_eq!(status.name, "login.xn--bcher-kva.example", "lower case, punycode, no dot");
        assert_eq!(status.state, DomainState::Unverified as i32);
        assert!(status.verification_code.len() >= 22, "at least 128 bits");
        assert!(
            status
                .verification_code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {}",
            status.verification_code
        );
        assert!(status.verify_time.is_none());
        assert_eq!(integration.domain, DEFAULT_DOMAIN, "the default until proven");
        assert!(!integration.custom_domain);
        let answer = app.validate(&client_id, &value).await.expect("answered");
        assert_eq!(answer.domain, DEFAULT_DOMAIN, "ValidateClient too");

        let again = app.update_domain("org-dom", "login.xn--bcher-kva.example").await.expect("set");
        assert_eq!(again.custom_domain_status, Some(status.clone()), "the same name changes nothing");
        assert_eq!(again.update_time, integration.update_time);
        let other = app.update_domain("org-dom", "sso.example.org").await.expect("set");
        let other_status = other.custom_domain_status.expect("a custom domain");
        assert_eq!(other_status.name, "sso.example.org");
        assert_ne!(other_status.verification_code, status.verification_code, "a new code");
        let cleared = app.update_domain("org-dom", "").await.expect("cleared");
        assert!(cleared.custom_domain_status.is_none());
        assert_eq!(cleared.domain, DEFAULT_DOMAIN);

        let trail = app.all_audit("org-dom").await.expect("listed");
        assert_eq!(
            actions(&trail)[..3],
            [AuditAction::DomainUpdated, AuditAction::DomainUpdated, AuditAction::DomainUpdated],
            "set, replaced, cleared; the repeat is no change"
        );
        assert_eq!(trail[0].domain, "", "cleared");
        assert_eq!(trail[1].domain, "sso.example.org");
    }
}

on_every_backend! {
    async fn what_is_not_a_hostname_is_refused(app: TestApp) {
        app.create("org-dom-bad").await.expect("created");
        let long_label = format!("{}.example", "a".repeat(64));
        let too_long = format!("{}.example", vec!["a".repeat(60); 4].join("."));
        for bad in [
            "https://login.example.com",
            "login.example.com/path",
            "login.example.com:443",
            "login example.com",
            "localhost",
            "192.168.0.1",
            "[::1]",
            "-login.example.com",
            "login-.example.com",
            "login..example.com",
            "login.example.com..",
            long_label.as_str(),
            too_long.as_str(),
        ] {
            let message = expect_code(app.update_domain("org-dom-bad", bad).await, Code::InvalidArgument);
            assert!(!message.is_empty(), "{bad:?}");
        }
        assert!(app.get("org-dom-bad").await.expect("read").custom_domain_status.is_none());
        expect_code(app.update_domain("org-dom-none", "a.example").await, Code::NotFound);
        expect_code(app.update_domain("", "a.example").await, Code::InvalidArgument);
        let fits = format!("{}.example", vec!["a".repeat(57); 4].join("."));
        assert!(fits.len() <= 240, "{}", fits.len());
        app.update_domain("org-dom-bad", &fits).await.expect("240 characters fit");
    }
}

on_every_backend! {
    async fn a_txt_record_with_the_code_proves_the_domain_everywhere(app: TestApp) {
        let dns = TestDns::start().await;
        let server = asking(&app, dns.address()).await;
        let others = app.replica().await;
        let (client_id, value) = server.ready("org-ver").await;
        assert_eq!(others.validate(&client_id, &value).await.expect("answered").domain, DEFAULT_DOMAIN);

        let message = expect_code(server.verify_domain("org-ver").await, Code::FailedPrecondition);
        assert!(message.contains("UpdateDomain"), "no domain yet: {message}");
        let set = server.update_domain("org-ver", "login.acme.example").await.expect("set");
        let code = set.custom_domain_status.expect("a domain").verification_code;

        let message = expect_code(server.verify_domain("org-ver").await, Code::FailedPrecondition);
        assert!(message.contains("_centralauth.login.acme.example"), "{message}");
        assert!(message.contains(&code), "says which value to publish: {message}");
        dns.set_txt("_centralauth.login.acme.example", vec!["not-the-code".into()]);
        let message = expect_code(server.verify_domain("org-ver").await, Code::FailedPrecondition);
        assert!(message.contains(&code), "{message}");

        // The code split in two strings of one record, beside another record.
        let (head, tail) = code.split_at(10);
        dns.set_txt("_centralauth.login.acme.example", vec![head.into(), tail.into()]);
        dns.add_txt("_centralauth.login.acme.example", vec!["v=spf1 -all".into()]);
        let verified = server.verify_domain("org-ver").await.expect("verified");
        let status = verified.custom_domain_status.clone().expect("a domain");
        assert_eq!(status.state, DomainState::Verified as i32);
        assert!(status.verify_time.is_some());
        assert_eq!(verified.domain, "login.acme.example", "the effective domain now");
        assert!(verified.custom_domain);
        assert_eq!(
            server.validate(&client_id, &value).await.expect("answered").domain,
            "login.acme.example",
            "at once on the replica that verified"
        );
        let bound = match app.backend() {
            Backend::Postgres => Duration::from_millis(500),
            Backend::Sqlite => Duration::from_secs(2),
        };
        let started = std::time::Instant::now();
        while others.validate(&client_id, &value).await.expect("answered").domain != "login.acme.example" {
            assert!(started.elapsed() < bound, "the other replica still answers the old domain");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Proven once: the record may go, verifying again changes nothing.
        dns.remove("_centralauth.login.acme.example");
        let again = server.verify_domain("org-ver").await.expect("still verified");
        assert_eq!(again.custom_domain_status, Some(status));
        let same = server.update_domain("org-ver", "LOGIN.acme.example").await.expect("same");
        assert_eq!(same.domain, "login.acme.example", "the same name keeps its proof");

        // Another name: unverified, and users go back to the default at once.
        let moved = server.update_domain("org-ver", "id.acme.example").await.expect("set");
        assert_eq!(moved.domain, DEFAULT_DOMAIN);
        assert_eq!(
            server.validate(&client_id, &value).await.expect("answered").domain,
            DEFAULT_DOMAIN
        );
        let trail = server.all_audit("org-ver").await.expect("listed");
        assert_eq!(
            actions(&trail)[..3],
            [AuditAction::DomainUpdated, AuditAction::DomainVerified, AuditAction::DomainUpdated]
        );
        assert_eq!(trail[1].domain, "login.acme.example");
    }
}

on_every_backend! {
    async fn an_unreachable_resolver_is_unavailable_and_changes_nothing(app: TestApp) {
        // A UDP and TCP port nothing listens on.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("a port").local_addr().expect("bound");
        let server = asking(&app, closed).await;
        server.create("org-ver-down").await.expect("created");
        server.update_domain("org-ver-down", "login.down.example").await.expect("set");
        let message = expect_code(server.verify_domain("org-ver-down").await, Code::Unavailable);
        assert!(message.contains("_centralauth.login.down.example"), "{message}");
        let integration = server.get("org-ver-down").await.expect("read");
        assert_eq!(
            integration.custom_domain_status.expect("a domain").state,
            DomainState::Unverified as i32
        );
    }
}

on_every_backend! {
    async fn a_domain_proven_by_one_organization_cannot_be_proven_by_another(app: TestApp) {
        let dns = TestDns::start().await;
        let server = asking(&app, dns.address()).await;
        let mut codes = Vec::new();
        for org in ["org-own-a", "org-own-b"] {
            server.create(org).await.expect("created");
            let set = server.update_domain(org, "shared.example").await.expect("set");
            codes.push(set.custom_domain_status.expect("a domain").verification_code);
        }
        dns.set_txt("_centralauth.shared.example", vec![codes[0].clone()]);
        dns.add_txt("_centralauth.shared.example", vec![codes[1].clone()]);
        server.verify_domain("org-own-a").await.expect("the first proves it");
        let message = expect_code(server.verify_domain("org-own-b").await, Code::FailedPrecondition);
        assert!(message.contains("another organization"), "{message}");
        assert_eq!(server.get("org-own-b").await.expect("read").domain, DEFAULT_DOMAIN);
    }
}
