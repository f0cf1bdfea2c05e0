//! `DnsVerifier` against a real DNS server on a free port: what it finds,
//! what counts as no record, that nothing is cached, and what a resolver
//! that does not answer looks like.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use integration_service::dns::{DnsError, DnsVerifier, LOOKUP_TIMEOUT, TxtLookup};
use support::dns::TestDns;

const NAME: &str = "_centralauth.login.example.com";

fn verifier_of(dns: &TestDns) -> DnsVerifier {
    DnsVerifier::new(Some(dns.address())).expect("a resolver on an address is set up")
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|&value| value.to_owned()).collect()
}

fn found(values: &[&str]) -> Result<TxtLookup, DnsError> {
    Ok(TxtLookup::Found(strings(values)))
}

#[tokio::test]
async fn a_txt_record_is_found_with_its_text() {
    let dns = TestDns::start().await;
    dns.set_txt(NAME, strings(&["code-1"]));
    let verifier = verifier_of(&dns);
    assert_eq!(
        verifier.txt(NAME).await,
        found(&["code-1"]),
        "without a dot"
    );
    assert_eq!(
        verifier.txt(&format!("{NAME}.")).await,
        found(&["code-1"]),
        "with the trailing dot"
    );
    assert_eq!(
        verifier.txt(&NAME.to_uppercase()).await,
        found(&["code-1"]),
        "DNS names match in any case"
    );
}

#[tokio::test]
async fn the_strings_of_one_record_are_joined_with_nothing_between() {
    let dns = TestDns::start().await;
    dns.set_txt(NAME, strings(&["first half ", "and second"]));
    let verifier = verifier_of(&dns);
    assert_eq!(
        verifier.txt(NAME).await,
        found(&["first half and second"]),
        "one record, its character-strings concatenated"
    );
}

#[tokio::test]
async fn two_records_are_two_entries() {
    let dns = TestDns::start().await;
    dns.set_txt(NAME, strings(&["code-1"]));
    dns.add_txt(NAME, strings(&["code-2"]));
    let verifier = verifier_of(&dns);
    let Ok(TxtLookup::Found(mut records)) = verifier.txt(NAME).await else {
        panic!("the records are found");
    };
    // DNS gives no order within a record set.
    records.sort();
    assert_eq!(
        records,
        strings(&["code-1", "code-2"]),
        "one entry per record"
    );
}

#[tokio::test]
async fn an_unknown_name_or_one_without_txt_data_has_no_record() {
    let dns = TestDns::start().await;
    dns.set_a("login.example.com", Ipv4Addr::new(192, 0, 2, 1));
    dns.set_a(NAME, Ipv4Addr::new(192, 0, 2, 1));
    let verifier = verifier_of(&dns);
    assert_eq!(
        verifier.txt("_centralauth.other.example").await,
        Ok(TxtLookup::NoRecord),
        "NXDOMAIN"
    );
    assert_eq!(
        verifier.txt(NAME).await,
        Ok(TxtLookup::NoRecord),
        "a name with only an A record: NOERROR without answers"
    );
}

#[tokio::test]
async fn a_changed_record_is_seen_on_the_next_look_up() {
    let dns = TestDns::start().await;
    let verifier = verifier_of(&dns);
    // Every answer of the test server carries a TTL of 300 s: a resolver
    // that cached would answer each step with the one before.
    assert_eq!(verifier.txt(NAME).await, Ok(TxtLookup::NoRecord), "before");
    dns.set_txt(NAME, strings(&["code-1"]));
    assert_eq!(verifier.txt(NAME).await, found(&["code-1"]), "created");
    dns.set_txt(NAME, strings(&["code-2"]));
    assert_eq!(verifier.txt(NAME).await, found(&["code-2"]), "replaced");
    dns.remove(NAME);
    assert_eq!(verifier.txt(NAME).await, Ok(TxtLookup::NoRecord), "removed");
}

#[tokio::test]
async fn servfail_is_unreachable_not_no_record() {
    let dns = TestDns::start().await;
    dns.set_txt(NAME, strings(&["code-1"]));
    dns.servfail(NAME);
    let verifier = verifier_of(&dns);
    match verifier.txt(NAME).await {
        Err(DnsError::Unreachable(message)) => {
            assert!(message.contains("SERVFAIL"), "{message:?} names the answer");
            assert!(
                message.contains(&dns.address().to_string()),
                "{message:?} names the resolver"
            );
        }
        other => panic!("SERVFAIL gave {other:?}"),
    }
    dns.set_txt(NAME, strings(&["code-1"]));
    assert_eq!(
        verifier.txt(NAME).await,
        found(&["code-1"]),
        "and once fixed"
    );
}

#[tokio::test]
async fn a_resolver_where_nothing_listens_is_unreachable_within_the_timeout() {
    // The port of a server that has just stopped: nothing listens on it.
    let address = TestDns::start().await.address();
    let verifier = DnsVerifier::new(Some(address)).expect("set up");
    let started = Instant::now();
    let result = verifier.txt(NAME).await;
    let took = started.elapsed();
    match result {
        Err(DnsError::Unreachable(message)) => assert!(
            message.contains(&address.to_string()),
            "{message:?} names the resolver"
        ),
        other => panic!("a silent resolver gave {other:?}"),
    }
    assert!(
        took < LOOKUP_TIMEOUT + Duration::from_secs(2),
        "the look-up took {took:?}"
    );
}
