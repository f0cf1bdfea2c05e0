//! Whatever bytes arrive, the caller gets a status and the server keeps
//! serving.

use std::{collections::BTreeMap, time::Duration};

use proptest::{prelude::*, sample::select, strategy::ValueTree, test_runner::TestRunner};
use support::{Backend, TestApp, health_status, spawn_app, spawn_app_with};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

mod raw;

use raw::{
    Answer, DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, SETTINGS, call_with_raw_body, frame,
    get_request_with, grpc_message, message_with, request_header_block, send_raw, send_raw_on,
    server_closes,
};

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    app.create("org-size").await.expect("created");
    for size in [17 * 1024, 1024 * 1024, 5 * 1024 * 1024] {
        let status = app.get(&"x".repeat(size)).await.expect_err("refused");
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{size} bytes: {status:?}"
        );
        assert!(
            status.message().contains("--max-message-bytes")
                && status.message().contains("16384 bytes"),
            "the message names the limit and its setting: {}",
            status.message()
        );
        app.get("org-size").await.expect("the server keeps serving");
    }
    // Just under the limit, the message is read and its field refused.
    let status = app.get(&"x".repeat(15 * 1024)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test]
async fn malformed_protobuf_is_an_invalid_argument() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    app.create("org-wire").await.expect("created");
    let cases: [(&str, Vec<u8>); 5] = [
        ("garbage", vec![0xff, 0xff, 0xff, 0xff]),
        ("a truncated field", vec![0x0a, 0x10, b'a', b'b']),
        ("invalid UTF-8 in a string", get_request_with(&[0xc3, 0x28])),
        ("a lone continuation byte", get_request_with(b"org\x80")),
        ("a wrong wire type", vec![0x08, 0x01]),
    ];
    for (what, body) in cases {
        let status = send_raw(&app, "GetIntegration", body)
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    for method in [
        "ValidateClient",
        "ActivateSecret",
        "GenerateSecret",
        "CreateIntegration",
    ] {
        let status = send_raw(&app, method, vec![0x0a, 0x05, 0xff])
            .await
            .expect_err(method);
        assert_eq!(status.code(), Code::InvalidArgument, "{method}: {status:?}");
    }
    let well_formed = send_raw(&app, "GetIntegration", get_request_with(b"org-wire")).await;
    assert!(well_formed.is_ok(), "the raw client works: {well_formed:?}");
    let pair = app.ready(WIRE_ORG).await;
    assert_still_serving(&app, &pair, "malformed protobuf").await;
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let status = send_raw(&app, "DeleteEverything", Vec::new())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

#[tokio::test]
async fn health_and_reflection_have_the_same_size_limit() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let mut health = HealthClient::new(app.channel().await);
    let status = health
        .check(HealthCheckRequest {
            service: "x".repeat(1024 * 1024),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health keeps answering");
}

// ---------------------------------------------------------------------------
// Below gRPC: bytes on the TCP port and HTTP/2 frames chosen by the test.

/// How long any case may take before it counts as a hang.
const NO_HANG: Duration = Duration::from_secs(10);

/// The server still does its job: health answers SERVING, a real pair
/// validates and an integration reads back.
async fn assert_still_serving(app: &TestApp, (client_id, value): &(String, String), after: &str) {
    let status = timeout(NO_HANG, health_status(app.channel().await, ""))
        .await
        .unwrap_or_else(|_| panic!("after {after}: health answers"))
        .unwrap_or_else(|s| panic!("after {after}: health check failed: {s:?}"));
    assert_eq!(status, ServingStatus::Serving, "after {after}");
    let valid = timeout(NO_HANG, app.is_valid(client_id, value)).await;
    assert_eq!(
        valid.ok(),
        Some(true),
        "after {after}: the real pair validates"
    );
    let integration = timeout(NO_HANG, app.get(WIRE_ORG)).await;
    assert!(
        matches!(integration, Ok(Ok(_))),
        "after {after}: GetIntegration answers: {integration:?}"
    );
}

/// The organization the wire tests keep checking.
const WIRE_ORG: &str = "org-wire-check";

#[tokio::test]
async fn garbage_on_the_port_closes_the_connection_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let pair = app.ready(WIRE_ORG).await;
    let random: Vec<u8> = (0..64 * 1024).map(|_| rand::random::<u8>()).collect();
    let mut tls_hello = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    tls_hello.extend([0xab; 64]);
    let mut bad_frame = PREFACE.to_vec();
    bad_frame.extend(frame(SETTINGS, 0, 0, &[]));
    bad_frame.extend([0xff; 64]);
    let cases: [(&str, Vec<u8>); 6] = [
        ("64 KiB of random bytes", random),
        (
            "an HTTP/1.1 request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("a TLS ClientHello", tls_hello),
        ("zero bytes", vec![0; 4096]),
        (
            "a preface with a typo",
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec(),
        ),
        ("a valid preface, then frames of garbage", bad_frame),
    ];
    for (what, bytes) in &cases {
        let mut connection = TcpStream::connect(app.address).await.expect("connected");
        // The server may close before reading everything: a failed write is
        // an answer too.
        let _ = connection.write_all(bytes).await;
        let received = server_closes(connection, what).await;
        println!("wire: {what}: closed after {received} bytes from the server");
        assert_still_serving(&app, &pair, what).await;
    }
    println!("wire: garbage on the port: {} cases", cases.len());
}

#[tokio::test]
async fn a_connection_cut_short_is_closed_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let pair = app.ready(WIRE_ORG).await;
    let opened = [PREFACE.to_vec(), frame(SETTINGS, 0, 0, &[])].concat();
    let headers = request_header_block(app.address, "GetIntegration");
    let with_headers = [opened.clone(), frame(HEADERS, END_HEADERS, 1, &headers)].concat();
    let message = grpc_message(&get_request_with(WIRE_ORG.as_bytes()));
    let data_frame = frame(DATA, END_STREAM, 1, &message);
    let cases: [(&str, Vec<u8>); 7] = [
        ("half the preface", PREFACE[..10].to_vec()),
        ("the preface alone", PREFACE.to_vec()),
        ("the preface and SETTINGS", opened.clone()),
        (
            "half a frame header",
            [opened.clone(), vec![0, 0, 9, HEADERS]].concat(),
        ),
        (
            "a HEADERS frame waiting for its CONTINUATION",
            [opened.clone(), frame(HEADERS, 0, 1, &headers)].concat(),
        ),
        ("a HEADERS frame and no body", with_headers.clone()),
        (
            "a DATA frame cut in the middle",
            [
                with_headers.clone(),
                data_frame[..data_frame.len() - 5].to_vec(),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in &cases {
        let mut connection = TcpStream::connect(app.address).await.expect("connected");
        let _ = connection.write_all(bytes).await;
        // The client goes away: no more bytes will come.
        let _ = connection.shutdown().await;
        let received = server_closes(connection, what).await;
        println!("wire: {what}, then closed: the server sent {received} bytes and closed");
        assert_still_serving(&app, &pair, what).await;
    }
    // The same bytes in full make a call that succeeds: the cases above
    // differ from it only by where they stop.
    let mut connection = TcpStream::connect(app.address).await.expect("connected");
    connection
        .write_all(&[with_headers, data_frame].concat())
        .await
        .expect("written");
    let mut answer: Vec<u8> = Vec::new();
    let mut buffer = vec![0; 4096];
    let answered = async {
        // The response's DATA frame carries the integration, organization id
        // in clear.
        while !answer
            .windows(WIRE_ORG.len())
            .any(|w| w == WIRE_ORG.as_bytes())
        {
            let n = connection.read(&mut buffer).await.expect("read");
            assert_ne!(
                n, 0,
                "the server closed the connection instead of answering"
            );
            answer.extend(&buffer[..n]);
        }
    };
    timeout(NO_HANG, answered)
        .await
        .expect("the complete request is answered");
    println!("wire: connections cut short: {} cases", cases.len());
}

/// A well-framed GetIntegration request for [`WIRE_ORG`], and bodies that
/// break its gRPC framing (not its protobuf) in the ways a client cut off
/// mid-write, or a buggy one, would.
fn broken_framings() -> (Vec<u8>, [(&'static str, Vec<u8>); 5]) {
    let message = grpc_message(&get_request_with(WIRE_ORG.as_bytes()));
    let mut compressed = message.clone();
    compressed[0] = 1;
    let mut longer = message.clone();
    longer[4] += 10;
    let cases = [
        ("a length prefix cut short", message[..3].to_vec()),
        ("a message shorter than its prefix says", longer),
        (
            "a message cut in the middle",
            message[..message.len() - 4].to_vec(),
        ),
        ("a compressed flag without an encoding", compressed),
        (
            "a flag byte that is neither 0 nor 1",
            [vec![7], message[1..].to_vec()].concat(),
        ),
    ];
    (message, cases)
}

#[tokio::test]
async fn a_grpc_message_cut_short_gets_a_status_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let pair = app.ready(WIRE_ORG).await;
    let (message, cases) = broken_framings();
    for (what, body) in cases.iter().cloned() {
        let answer = call_with_raw_body(&app, "GetIntegration", &[], body).await;
        println!("wire: {what}: {answer:?}");
        assert!(
            matches!(answer, Answer::Grpc(code) if code != Code::Ok),
            "{what}: {answer:?}"
        );
        assert_still_serving(&app, &pair, what).await;
    }
    // tonic reads the first message of a unary call and ignores the rest:
    // any status will do.
    let twice = [message.clone(), message.clone()].concat();
    let answer = call_with_raw_body(&app, "GetIntegration", &[], twice).await;
    println!("wire: two messages for a unary call: {answer:?}");
    assert!(matches!(answer, Answer::Grpc(_)), "{answer:?}");
    assert_still_serving(&app, &pair, "two messages").await;

    let whole = call_with_raw_body(&app, "GetIntegration", &[], message).await;
    assert_eq!(
        whole,
        Answer::Grpc(Code::Ok),
        "the whole message is answered"
    );
    println!("wire: gRPC messages cut short: {} cases", cases.len() + 1);
}

/// Broken framing is the caller's mistake, as malformed protobuf is, which
/// docs/api.md answers INVALID_ARGUMENT. It reserves INTERNAL for bugs of the
/// service ("the details are in the service's log"), and codec.rs keeps
/// prost's errors from being INTERNAL because that would page an operator.
/// tonic answers broken framing INTERNAL, with its own message, before any
/// handler runs; `codec::corrected_status` rewrites it. This also pins
/// tonic's messages, which that rewrite recognizes.
#[tokio::test]
async fn a_grpc_message_cut_short_is_an_invalid_argument_not_an_internal_error() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    app.create(WIRE_ORG).await.expect("created");
    let (_, cases) = broken_framings();
    let mut answers = Vec::new();
    for (what, body) in cases {
        answers.push((
            what,
            call_with_raw_body(&app, "GetIntegration", &[], body).await,
        ));
    }
    assert!(
        answers
            .iter()
            .all(|(_, answer)| *answer == Answer::Grpc(Code::InvalidArgument)),
        "{answers:?}"
    );
}

#[tokio::test]
async fn huge_metadata_gets_a_status_or_a_closed_connection_and_the_server_keeps_serving() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let pair = app.ready(WIRE_ORG).await;
    let one = |size: usize| vec![("x-big".to_owned(), "a".repeat(size))];
    let many = |count: usize| {
        (0..count)
            .map(|i| (format!("x-header-{i}"), "value".to_owned()))
            .collect::<Vec<_>>()
    };
    // Within hyper's 16 KiB limit on the header list, calls are served;
    // beyond it, HTTP/2 refuses the stream (431), or the connection when the
    // list is far over.
    let cases = [
        ("a 1 KiB header", one(1024), true),
        ("100 headers", many(100), true),
        ("a 20 KiB header", one(20 * 1024), false),
        ("a 100 KiB header", one(100 * 1024), false),
        ("a 1 MiB header", one(1024 * 1024), false),
        ("10,000 headers", many(10_000), false),
    ];
    let message = grpc_message(&get_request_with(WIRE_ORG.as_bytes()));
    for (what, headers, served) in &cases {
        let answer = call_with_raw_body(&app, "GetIntegration", headers, message.clone()).await;
        println!("wire: {what}: {answer:?}");
        if *served {
            assert_eq!(answer, Answer::Grpc(Code::Ok), "{what}");
        } else {
            assert_ne!(answer, Answer::Grpc(Code::Ok), "{what} was read");
        }
        assert_still_serving(&app, &pair, what).await;
    }
    println!("wire: huge metadata: {} cases", cases.len());
}

// ---------------------------------------------------------------------------
// Well-framed gRPC, bad contents.

/// Every method, and how many string fields its request has.
const METHODS: [(&str, usize); 5] = [
    ("CreateIntegration", 1),
    ("GetIntegration", 1),
    ("GenerateSecret", 1),
    ("ActivateSecret", 2),
    ("ValidateClient", 2),
];

#[tokio::test]
async fn invalid_utf8_in_any_string_field_is_an_invalid_argument() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let pair = app.ready(WIRE_ORG).await;
    let mut cases = 0;
    for (method, fields) in METHODS {
        for bad in 0..fields {
            // The other field holds a real value, so only the bad one can
            // be why the call is refused.
            let real = [WIRE_ORG.as_bytes(), pair.1.as_bytes()];
            let real = if method == "ValidateClient" {
                [pair.0.as_bytes(), real[1]]
            } else {
                real
            };
            for invalid in [
                &b"\xc3\x28"[..],
                b"org\x80",
                b"\xff\xfe\xfd",
                b"cas_\xed\xa0\x80",
            ] {
                let mut values = real[..fields].to_vec();
                values[bad] = invalid;
                let status = send_raw(&app, method, message_with(&values))
                    .await
                    .expect_err("refused");
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{method}, field {}: {status:?}",
                    bad + 1
                );
                cases += 1;
            }
        }
    }
    assert_still_serving(&app, &pair, "invalid UTF-8").await;
    println!("wire: invalid UTF-8: {cases} cases");
}

#[tokio::test]
async fn an_oversized_message_to_any_method_is_resource_exhausted() {
    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let pair = app.ready(WIRE_ORG).await;
    // The test server's limit is 16 KiB.
    let huge = vec![b'a'; 32 * 1024];
    for (method, fields) in METHODS {
        let values = vec![huge.as_slice(); fields];
        let status = send_raw(&app, method, message_with(&values))
            .await
            .expect_err("refused");
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{method}: {status:?}"
        );
        assert_still_serving(&app, &pair, method).await;
    }
    println!("wire: oversized messages: {} methods", METHODS.len());
}

/// Requests the random-fields test sends.
const RANDOM_REQUESTS: usize = 10_000;

/// What a careless or hostile caller might put in a field: random bytes
/// (mostly invalid UTF-8), random text, printable ASCII around the
/// organization id's 128-character limit, client-ID-like and secret-like
/// strings, and now and then the real values of the test's organization.
fn random_field(real: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..300),
        2 => "\\PC{0,80}".prop_map(String::into_bytes),
        2 => "[!-~]{1,140}".prop_map(String::into_bytes),
        1 => "[ -~]{0,300}".prop_map(String::into_bytes),
        2 => "[A-Za-z0-9]{20,28}".prop_map(String::into_bytes),
        2 => "cas_[A-Za-z0-9_:]{56,64}".prop_map(String::into_bytes),
        1 => select(real),
    ]
}

/// The statuses SPEC §2 allows each method, whatever its fields hold.
fn allowed(method: &str) -> &'static [Code] {
    match method {
        "CreateIntegration" => &[Code::Ok, Code::AlreadyExists, Code::InvalidArgument],
        "GetIntegration" | "GenerateSecret" => &[Code::Ok, Code::NotFound, Code::InvalidArgument],
        "ActivateSecret" => &[
            Code::Ok,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::InvalidArgument,
        ],
        "ValidateClient" => &[Code::Ok, Code::InvalidArgument],
        _ => unreachable!("{method}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_random_fields_each_get_a_status_the_spec_allows() {
    use integration_service::proto::ValidateClientResponse;
    use prost::Message;

    let app = spawn_app(Backend::Sqlite).await.expect("app");
    let pair = app.ready(WIRE_ORG).await;
    let real: Vec<Vec<u8>> = [WIRE_ORG, &pair.0, &pair.1]
        .map(|value| value.as_bytes().to_vec())
        .to_vec();
    let requests = (
        select(&METHODS[..]),
        prop::collection::vec(random_field(real.clone()), 2),
        // Now and then a whole body of random bytes instead of fields.
        prop::option::weighted(0.1, prop::collection::vec(any::<u8>(), 0..200)),
    );
    let mut runner = TestRunner::default();
    let channel = app.channel().await;
    let mut calls = tokio::task::JoinSet::new();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut record = |joined: Result<_, tokio::task::JoinError>| {
        let (method, real_pair, result): (&str, bool, Result<Vec<u8>, Status>) =
            joined.expect("the call completes");
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        assert!(allowed(method).contains(&code), "{method}: {result:?}");
        if method == "ValidateClient"
            && let Ok(bytes) = &result
        {
            let response = ValidateClientResponse::decode(bytes.as_slice()).expect("a response");
            // Only the real pair, which the generator sometimes picks, is
            // valid; anything else gets nothing more than "no".
            if real_pair {
                assert!(response.valid, "the real pair validates");
            } else {
                assert_eq!(
                    response,
                    ValidateClientResponse::default(),
                    "any other pair is invalid and says nothing more"
                );
            }
        }
        *answers.entry(format!("{method} {code:?}")).or_default() += 1;
    };
    for _ in 0..RANDOM_REQUESTS {
        let ((method, fields), values, raw) =
            requests.new_tree(&mut runner).expect("a request").current();
        let values = &values[..fields];
        let real_pair = method == "ValidateClient" && raw.is_none() && values == &real[1..];
        let body = raw
            .unwrap_or_else(|| message_with(&values.iter().map(Vec::as_slice).collect::<Vec<_>>()));
        let channel = channel.clone();
        calls.spawn(async move {
            let answered = timeout(NO_HANG, send_raw_on(channel, method, body)).await;
            let answered =
                answered.unwrap_or_else(|_| panic!("{method}: no answer in {NO_HANG:?}"));
            (method, real_pair, answered)
        });
        // A few calls in flight at once, as a busy client has.
        if calls.len() >= 16 {
            record(calls.join_next().await.expect("a call"));
        }
    }
    while let Some(joined) = calls.join_next().await {
        record(joined);
    }
    assert_still_serving(&app, &pair, "random requests").await;
    let answers: Vec<String> = answers.iter().map(|(a, n)| format!("{a}: {n}")).collect();
    println!(
        "wire: {RANDOM_REQUESTS} requests with random fields: {}",
        answers.join(", ")
    );
}

/// A caller that opens a call, sends half a message and then stalls (a
/// slow-loris) holds a stream only until the request timeout: it is then
/// answered, and the server goes on serving everybody else meanwhile.
#[tokio::test]
async fn a_caller_that_stalls_mid_request_is_answered_at_the_request_timeout() {
    let app = spawn_app_with(Backend::Sqlite, |settings| {
        settings.request_timeout = Duration::from_secs(1);
    })
    .await
    .expect("app");
    let pair = app.ready(WIRE_ORG).await;
    let message = grpc_message(&get_request_with(WIRE_ORG.as_bytes()));
    let stalled = async {
        let connection = TcpStream::connect(app.address).await?;
        let (client, connection) = h2::client::handshake(connection).await?;
        tokio::spawn(connection);
        let request = http::Request::post(format!(
            "http://{}/centralauth.integration.v1.IntegrationService/GetIntegration",
            app.address
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request");
        let (response, mut stream) = client.ready().await?.send_request(request, false)?;
        // Half the message, and the stream left open.
        stream.send_data(message[..message.len() / 2].to_vec().into(), false)?;
        let started = std::time::Instant::now();
        let response = response.await?;
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
            .map(Code::from);
        Ok::<_, Box<dyn std::error::Error>>((code, started.elapsed(), stream))
    };
    let (code, waited, _stream) = timeout(NO_HANG, stalled)
        .await
        .expect("answered before NO_HANG")
        .expect("an HTTP/2 answer");
    assert_eq!(code, Some(Code::Cancelled), "the stalled call is ended");
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}, before the timeout"
    );
    assert_still_serving(&app, &pair, "a stalled call").await;
}
