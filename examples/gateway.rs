//! How a gateway calls the integration service: the client side of every
//! token request, as it should be written.
//!
//! - **One channel**, shared by every request and cloned cheaply, with
//!   HTTP/2 keepalive so a dead connection is noticed between requests.
//! - **A deadline on every call**: a token request must not hang on us.
//! - **`remote_address`** filled in with the address of the party that sent
//!   the token request, so the service's budgets of failed attempts are per
//!   address and a flood from elsewhere cannot lock an application out.
//! - **Retries with backoff and full jitter on `UNAVAILABLE` and
//!   `RESOURCE_EXHAUSTED` only**; `valid: false` and every other status are
//!   final.
//! - **A `WatchIntegrations` stream** that keeps the gateway's own cache of
//!   answers honest: an entry is dropped when its client changes, everything
//!   on `RESYNC`, and nothing is served from the cache while the stream is
//!   down (it resubscribes with backoff).
//!
//! Run it against a server:
//!
//! ```sh
//! CLIENT_SECRET='cas_…' cargo run --example gateway -- \
//!     --target http://127.0.0.1:50051 --client-id 3PjHtqI5S5bs3j98IV2srpj8
//! ```
//!
//! With `INTEGRATION_VALIDATOR_TOKEN` set when the server requires tokens.
//! `--demo` also plays the dashboard (with `INTEGRATION_ADMIN_TOKEN`): it
//! creates an organization, activates a secret, validates it through the
//! gateway, rotates it and checks that the gateway refuses the old one at
//! once; it exits non-zero if anything is not as it should be.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use integration_service::proto::{
    self, ChangeKind, integration_service_client::IntegrationServiceClient,
};
use rand::{TryRng, rngs::SysRng};
use sha2::Sha256;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// How long one ValidateClient may take, retries included.
const VALIDATE_BUDGET: Duration = Duration::from_secs(2);
/// How long one attempt may take.
const ATTEMPT_DEADLINE: Duration = Duration::from_millis(500);
/// First backoff, and its cap.
const BACKOFF_BASE: Duration = Duration::from_millis(25);
const BACKOFF_CAP: Duration = Duration::from_millis(400);
/// How long the gateway keeps a `valid: true` answer, while its change
/// stream is live. Short: it only saves the round trip of a busy client.
const CACHE_FOR: Duration = Duration::from_secs(30);

/// The one channel: opened lazily, reconnecting by itself, multiplexing
/// every call over one HTTP/2 connection.
fn channel(target: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(target.to_owned())
        .map_err(|e| format!("--target {target:?} is not a URI: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// Adds `authorization: Bearer <token>` to a request when there is a token.
fn authorized<T>(message: T, token: Option<&str>, deadline: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    if let Some(token) = token
        && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Full jitter: a random wait between zero and the capped exponential.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << attempt.min(10))
        .min(BACKOFF_CAP);
    let millis = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(rand::random_range(0..=millis))
}

/// Whether a failed call is worth another attempt: the service was
/// unreachable or shedding load. Anything else would fail again.
fn retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
}

/// The gateway's cache of `valid: true` answers, keyed by client ID, holding
/// an HMAC of the secret (never the secret) under a key of this process.
struct AnswerCache {
    mac: Hmac<Sha256>,
    entries: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    /// Whether the change stream is live; while it is not, nothing cached
    /// is trusted, since a revocation might go unheard.
    live: std::sync::atomic::AtomicBool,
}

impl AnswerCache {
    fn new() -> Result<Self, String> {
        let mut key = [0; 64];
        SysRng
            .try_fill_bytes(&mut key)
            .map_err(|e| format!("no randomness for the cache key: {e}"))?;
        Ok(Self {
            mac: <Hmac<Sha256> as KeyInit>::new(&key.into()),
            entries: Mutex::new(HashMap::new()),
            live: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn tag(&self, secret: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn is_valid(&self, client_id: &str, secret: &str) -> bool {
        if !self.live.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let tag = self.tag(secret);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(client_id)
            .is_some_and(|(cached, until)| Instant::now() < *until && subtle_eq(cached, &tag))
    }

    fn remember(&self, client_id: &str, secret: &str) {
        let tag = self.tag(secret);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client_id.to_owned(), (tag, Instant::now() + CACHE_FOR));
    }

    fn forget(&self, client_id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(client_id);
    }

    fn forget_all(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Compares two tags in time independent of where they differ.
fn subtle_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a token request needs from the service.
#[derive(Clone)]
struct Gateway {
    client: IntegrationServiceClient<Channel>,
    token: Option<Arc<str>>,
    cache: Arc<AnswerCache>,
}

impl Gateway {
    fn new(channel: Channel, token: Option<String>) -> Result<Self, String> {
        Ok(Self {
            client: IntegrationServiceClient::new(channel),
            token: token.map(Arc::from),
            cache: Arc::new(AnswerCache::new()?),
        })
    }

    /// Whether the pair sent with a token request from `remote_address` is
    /// valid. `Err` only when the service could not say within the budget:
    /// the gateway then answers its caller with a temporary error, never
    /// with "valid".
    async fn validate(
        &self,
        client_id: &str,
        secret: &str,
        remote_address: &str,
    ) -> Result<bool, Status> {
        if self.cache.is_valid(client_id, secret) {
            return Ok(true);
        }
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let left = VALIDATE_BUDGET.saturating_sub(started.elapsed());
            let request = authorized(
                proto::ValidateClientRequest {
                    client_id: client_id.to_owned(),
                    client_secret: secret.to_owned(),
                    remote_address: remote_address.to_owned(),
                },
                self.token.as_deref(),
                ATTEMPT_DEADLINE.min(left),
            );
            match self.client.clone().validate_client(request).await {
                Ok(answer) => {
                    let valid = answer.into_inner().valid;
                    if valid {
                        self.cache.remember(client_id, secret);
                    }
                    return Ok(valid);
                }
                Err(status) if retryable(&status) => {
                    let wait = backoff(attempt);
                    if started.elapsed() + wait >= VALIDATE_BUDGET {
                        return Err(status);
                    }
                    eprintln!(
                        "gateway: {:?}, attempt {}; again in {wait:?}",
                        status.code(),
                        attempt + 1
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(status) => return Err(status),
            }
        }
    }

    /// Keeps the cache honest for as long as the gateway runs: subscribes,
    /// drops what each change makes stale, and resubscribes with backoff
    /// when the stream ends (a replica shutting down answers UNAVAILABLE).
    async fn watch(self) {
        let mut attempt = 0;
        loop {
            // No deadline: the stream is meant to stay open.
            let mut request = Request::new(proto::WatchIntegrationsRequest {
                organization_id: String::new(),
            });
            if let Some(token) = self.token.as_deref()
                && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
            {
                request.metadata_mut().insert("authorization", value);
            }
            match self.client.clone().watch_integrations(request).await {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(change)) => {
                                attempt = 0;
                                self.apply(&change);
                            }
                            Ok(None) => break,
                            Err(status) => {
                                eprintln!("gateway: change stream ended: {:?}", status.code());
                                break;
                            }
                        }
                    }
                }
                Err(status) => eprintln!("gateway: cannot watch: {:?}", status.code()),
            }
            // Until the next stream's RESYNC, nothing cached is trusted.
            self.cache
                .live
                .store(false, std::sync::atomic::Ordering::Release);
            tokio::time::sleep(backoff(attempt).max(BACKOFF_BASE)).await;
            attempt += 1;
        }
    }

    fn apply(&self, change: &proto::WatchIntegrationsResponse) {
        match ChangeKind::try_from(change.kind) {
            Ok(ChangeKind::Resync) => {
                self.cache.forget_all();
                self.cache
                    .live
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            Ok(ChangeKind::Created | ChangeKind::Updated | ChangeKind::Deleted) => {
                self.cache.forget(&change.client_id);
            }
            // A kind this gateway does not know: be safe.
            Ok(ChangeKind::Unspecified) | Err(_) => self.cache.forget_all(),
        }
    }
}

struct Args {
    target: String,
    client_id: Option<String>,
    remote_address: String,
    demo: bool,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        target: "http://127.0.0.1:50051".to_owned(),
        client_id: None,
        remote_address: "203.0.113.7".to_owned(),
        demo: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => args.target = value()?,
            "--client-id" => args.client_id = Some(value()?),
            "--remote-address" => args.remote_address = value()?,
            "--demo" => args.demo = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; give --target URI, and --client-id ID \
                     (with CLIENT_SECRET in the environment) or --demo"
                ));
            }
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gateway: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args = args()?;
    let channel = channel(&args.target)?;
    let gateway = Gateway::new(
        channel.clone(),
        std::env::var("INTEGRATION_VALIDATOR_TOKEN").ok(),
    )?;
    tokio::spawn(gateway.clone().watch());
    if args.demo {
        return demo(&gateway, channel, &args.remote_address).await;
    }
    let client_id = args
        .client_id
        .ok_or("give --client-id ID (with CLIENT_SECRET in the environment), or --demo")?;
    // From the environment, never the command line, which every user of
    // the machine can read.
    let secret =
        std::env::var("CLIENT_SECRET").map_err(|_| "set CLIENT_SECRET to the secret to check")?;
    let valid = gateway
        .validate(&client_id, &secret, &args.remote_address)
        .await
        .map_err(|status| format!("the service could not say: {status}"))?;
    println!("valid: {valid}");
    if valid {
        Ok(())
    } else {
        Err("the pair is not valid".to_owned())
    }
}

/// Plays the dashboard too, and checks what the gateway answers.
async fn demo(gateway: &Gateway, channel: Channel, remote_address: &str) -> Result<(), String> {
    let admin = Admin {
        client: IntegrationServiceClient::new(channel),
        token: std::env::var("INTEGRATION_ADMIN_TOKEN").ok(),
    };
    let organization = format!("gateway-demo-{}", std::process::id());
    let integration = admin.create(&organization).await?;
    let first = admin.generate_and_activate(&organization).await?;
    println!("dashboard: created {organization} and activated a secret");

    wait_until_live(gateway).await?;
    let client_id = integration.client_id.as_str();
    expect(
        gateway.validate(client_id, &first, remote_address).await,
        true,
        "the active secret",
    )?;
    expect(
        gateway.validate(client_id, &first, remote_address).await,
        true,
        "the active secret again",
    )?;
    if gateway.cache.len() != 1 {
        return Err("the second check should have come from the gateway's cache".to_owned());
    }
    println!("gateway: valid, then valid from its own cache");

    let second = admin.generate_and_activate(&organization).await?;
    println!("dashboard: rotated the secret");
    // The change stream drops the cached answer; the old secret is refused
    // as soon as the change has reached the gateway.
    let deadline = Instant::now() + Duration::from_secs(2);
    while gateway.cache.len() != 0 {
        if Instant::now() > deadline {
            return Err("the rotation did not reach the gateway within 2 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    expect(
        gateway.validate(client_id, &first, remote_address).await,
        false,
        "the rotated-out secret",
    )?;
    expect(
        gateway.validate(client_id, &second, remote_address).await,
        true,
        "the new secret",
    )?;
    println!("gateway: the old secret is refused, the new one valid");

    let wrong = "cas_not-a-real-secret";
    expect(
        gateway.validate(client_id, wrong, remote_address).await,
        false,
        "a made-up value",
    )?;
    match gateway.validate("", &second, remote_address).await {
        Err(status) if status.code() == Code::InvalidArgument => {}
        other => {
            return Err(format!(
                "an empty client ID: {other:?}, not INVALID_ARGUMENT"
            ));
        }
    }
    println!("gateway: a made-up value is refused, a malformed call is not retried");
    println!("demo passed");
    Ok(())
}

async fn wait_until_live(gateway: &Gateway) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gateway
        .cache
        .live
        .load(std::sync::atomic::Ordering::Acquire)
    {
        if Instant::now() > deadline {
            return Err("the change stream did not start within 5 s".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn expect(answer: Result<bool, Status>, valid: bool, what: &str) -> Result<(), String> {
    match answer {
        Ok(answer) if answer == valid => Ok(()),
        Ok(answer) => Err(format!("{what}: valid {answer}, expected {valid}")),
        Err(status) => Err(format!("{what}: {status}")),
    }
}

/// What the dashboard backend does, for the demo only.
struct Admin {
    client: IntegrationServiceClient<Channel>,
    token: Option<String>,
}

impl Admin {
    fn request<T>(&self, message: T) -> Request<T> {
        authorized(message, self.token.as_deref(), Duration::from_secs(5))
    }

    async fn create(&self, organization: &str) -> Result<proto::Integration, String> {
        self.client
            .clone()
            .create_integration(self.request(proto::CreateIntegrationRequest {
                organization_id: organization.to_owned(),
            }))
            .await
            .map_err(|status| format!("CreateIntegration: {status}"))?
            .into_inner()
            .integration
            .ok_or_else(|| "CreateIntegration answered no integration".to_owned())
    }

    /// A new secret, activated at once; its value.
    async fn generate_and_activate(&self, organization: &str) -> Result<String, String> {
        let generated = self
            .client
            .clone()
            .generate_secret(self.request(proto::GenerateSecretRequest {
                organization_id: organization.to_owned(),
            }))
            .await
            .map_err(|status| format!("GenerateSecret: {status}"))?
            .into_inner();
        self.client
            .clone()
            .activate_secret(self.request(proto::ActivateSecretRequest {
                organization_id: organization.to_owned(),
                client_secret: generated.client_secret.clone(),
            }))
            .await
            .map_err(|status| format!("ActivateSecret: {status}"))?;
        Ok(generated.client_secret)
    }
}
