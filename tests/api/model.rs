//! The secrets' state machine, checked against a model of it.
//!
//! proptest generates random sequences of operations over a few
//! organizations; each sequence runs on a real server (through the tonic
//! client, restarts included) and on a few lines of in-test state, and the two
//! must agree after every step: the status of the call, the fields of every
//! success, and then every organization's integration as GetIntegration shows
//! it. A failure shrinks to a short sequence that names secrets by their role
//! (`Activate(org 1, Pending(org 1))`), never by their value.

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, HashSet},
    fmt,
    time::{Duration, Instant},
};

use integration_service::{
    domain::ClientSecret,
    proto::{self, SecretState},
};
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use tokio::time::timeout;
use tonic::{Code, Status};

use support::{Backend, DEFAULT_DOMAIN, TestApp, on_every_backend, spawn_app};

/// How many organizations a sequence plays with: enough for one to use
/// another's client ID or secrets, few enough that they meet often.
const ORGANIZATIONS: usize = 3;

/// Cases per backend unless `PROPTEST_CASES` says otherwise. Argon2 costs
/// tens of milliseconds per generate or verify, so this keeps each backend
/// under a minute on two cores.
const CASES: u32 = 32;

/// The longest sequence of operations in a case.
const MAX_OPERATIONS: usize = 32;

/// Longer than any step may take: a hash waits at most 30 s for a thread
/// in the test settings.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A well-formed client ID that no organization has.
const UNKNOWN_CLIENT_ID: &str = "UnknownClientId000000000";

on_every_backend! {
    fn every_sequence_of_operations_behaves_as_the_model_says(backend: Backend) {
        check_against_the_model(backend);
    }
}

mod sequences;

use sequences::{Client, Op, Org, Sequences, Value};

// ---------------------------------------------------------------------------
// The model: what the service must do, with the real values.

/// An issued secret, as the model remembers it. No `Debug`: the value must
/// not reach a failure message.
struct Issued {
    value: String,
    id: String,
}

impl Issued {
    fn hint(&self) -> &str {
        &self.value[self.value.len() - 4..]
    }
}

/// What the model knows of one organization's integration.
struct Integration {
    client_id: String,
    active: Option<Issued>,
    pending: Option<Issued>,
    /// Discarded and revoked values: none may ever validate or activate.
    old: Vec<String>,
}

struct Model {
    /// Prefixed to every organization id: the cases share one database.
    case: usize,
    organizations: [Option<Integration>; ORGANIZATIONS],
    made_up: usize,
}

impl Model {
    fn new(case: usize) -> Self {
        Self {
            case,
            organizations: Default::default(),
            made_up: 0,
        }
    }

    fn id(&self, org: Org) -> String {
        format!("model-{}-org-{}", self.case, org.0)
    }

    fn integration(&self, org: Org) -> Option<&Integration> {
        self.organizations[org.0].as_ref()
    }

    /// The value a role stands for now; `None` if it stands for nothing.
    fn resolve(&mut self, value: Value) -> Option<String> {
        match value {
            Value::Active(org) => Some(self.integration(org)?.active.as_ref()?.value.clone()),
            Value::Pending(org) => Some(self.integration(org)?.pending.as_ref()?.value.clone()),
            Value::Old(org, n) => {
                let old = &self.integration(org)?.old;
                (!old.is_empty()).then(|| old[n % old.len()].clone())
            }
            Value::MadeUp => {
                self.made_up += 1;
                Some(made_up(self.case, self.made_up))
            }
            Value::Malformed => {
                self.made_up += 1;
                let mut value = made_up(self.case, self.made_up);
                let last = value.pop().expect("not empty");
                value.push(if last == 'A' { 'B' } else { 'A' });
                Some(value)
            }
            Value::Empty => Some(String::new()),
            Value::Oversized => Some("a".repeat(257)),
        }
    }
}

/// A secret the service could have issued (prefix, 54 base62 characters,
/// CRC32 in base62) but did not: only a lookup and a verify can refuse it.
fn made_up(case: usize, n: usize) -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = format!("cas_ModelMadeUp{case:0>20}{n:0>23}");
    let mut crc = crc32fast::hash(body.as_bytes());
    let mut checksum = [b'0'; 6];
    for digit in checksum.iter_mut().rev() {
        *digit = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    body + std::str::from_utf8(&checksum).expect("ASCII")
}

#[test]
fn made_up_values_pass_the_checksum_and_malformed_ones_do_not() {
    let mut model = Model::new(7);
    for _ in 0..3 {
        let made_up = model.resolve(Value::MadeUp).expect("a value");
        assert!(
            ClientSecret::parse(&made_up).is_ok(),
            "only a lookup can refuse it"
        );
        let malformed = model.resolve(Value::Malformed).expect("a value");
        assert_eq!(
            malformed.len(),
            ClientSecret::LEN,
            "it differs only by its checksum"
        );
        assert!(
            ClientSecret::parse(&malformed).is_err(),
            "the checksum refuses it"
        );
    }
}

// ---------------------------------------------------------------------------
// Running sequences on the server and the model.

/// One backend's server, shared by its cases, and what they did.
struct Run {
    /// One server and database for every case (each case has organizations
    /// of its own): a fresh PostgreSQL database per case would cost more
    /// than the case. `None` while a case holds it, or after one lost it.
    app: RefCell<Option<TestApp>>,
    backend: Backend,
    cases: Cell<usize>,
    steps: Cell<usize>,
    outcomes: RefCell<BTreeMap<String, usize>>,
    /// Every client ID and secret id handed out, in every case: none may be
    /// handed out twice.
    handed_out: RefCell<HashSet<String>>,
}

/// How a call ended: a success (with what it did, where that varies) or a
/// status code.
type Outcome = Result<&'static str, Code>;

fn check_against_the_model(backend: Backend) {
    // The server needs more than one thread: argon2 runs off the async
    // workers, and a restart's graceful stop waits for tasks. Spawned tasks
    // keep running between the cases' block_on calls.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // Config::default() has read the PROPTEST_* variables; only the number of
    // cases has a default of our own, and the variable still wins.
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    // A saved seed would replay the sequence, but not the database it ran
    // on: the shrunk sequence in the failure message is the record.
    config.failure_persistence = None;
    let app = runtime
        .block_on(spawn_app(backend))
        .expect("the backend is available");
    let run = Run {
        app: RefCell::new(Some(app)),
        backend,
        cases: Cell::new(0),
        steps: Cell::new(0),
        outcomes: RefCell::default(),
        handed_out: RefCell::default(),
    };
    let started = Instant::now();

    let result = TestRunner::new(config).run(&Sequences, |ops| runtime.block_on(run.case(&ops)));
    if let Some(mut app) = run.app.take() {
        runtime.block_on(app.stop());
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            let steps: Vec<String> = ops
                .iter()
                .enumerate()
                .map(|(index, op)| format!("  {index}: {op:?}"))
                .collect();
            panic!(
                "the server and the model disagree: {reason}\nminimal sequence:\n{}",
                steps.join("\n")
            )
        }
        Err(TestError::Abort(reason)) => panic!("aborted: {reason}"),
    }

    println!(
        "model on {backend:?}: {} cases, {} operations, in {:.1} s",
        run.cases.get(),
        run.steps.get(),
        started.elapsed().as_secs_f64(),
    );
    let outcomes: Vec<String> = run
        .outcomes
        .borrow()
        .iter()
        .map(|(outcome, n)| format!("{outcome}: {n}"))
        .collect();
    println!("model on {backend:?}: outcomes: {}", outcomes.join(", "));
}

impl Run {
    /// Runs one sequence on fresh organizations, checking every step.
    async fn case(&self, ops: &[Op]) -> Result<(), TestCaseError> {
        let mut model = Model::new(self.cases.get());
        self.cases.set(self.cases.get() + 1);
        // A case that panicked or timed out took the server with it.
        let mut app = match self.app.take() {
            Some(app) => app,
            None => spawn_app(self.backend)
                .await
                .expect("the backend is available"),
        };
        let no_answer = || format!("no answer within {STEP_TIMEOUT:?}");
        for (index, &op) in ops.iter().enumerate() {
            let failed = |error| TestCaseError::fail(format!("step {index}, {op:?}: {error}"));
            let stepped = timeout(STEP_TIMEOUT, self.step(app, &mut model, op)).await;
            let Ok((next, outcome)) = stepped else {
                return Err(failed(no_answer()));
            };
            app = next;
            let agreed = match outcome {
                Ok(outcome) => {
                    if let Some(outcome) = outcome {
                        self.count(op, outcome);
                    }
                    let agreed = timeout(STEP_TIMEOUT, agree_everywhere(&app, &model)).await;
                    agreed.unwrap_or_else(|_| Err(no_answer()))
                }
                Err(error) => Err(error),
            };
            if let Err(error) = agreed {
                self.app.replace(Some(app));
                return Err(failed(error));
            }
        }
        self.app.replace(Some(app));
        Ok(())
    }

    fn count(&self, op: Op, outcome: Outcome) {
        let name = match op {
            Op::Create(_) => "Create",
            Op::Get(_) => "Get",
            Op::Generate(_) => "Generate",
            Op::Activate(..) => "Activate",
            Op::Validate(..) => "Validate",
            Op::Restart => "Restart",
        };
        let outcome = match outcome {
            Ok("") => format!("{name} ok"),
            Ok(detail) => format!("{name} ok ({detail})"),
            Err(code) => format!("{name} {code:?}"),
        };
        self.steps.set(self.steps.get() + 1);
        *self.outcomes.borrow_mut().entry(outcome).or_default() += 1;
    }

    /// Checks that `id` was never handed out before, and remembers it.
    fn first_time(&self, id: &str) -> Result<(), String> {
        check(
            self.handed_out.borrow_mut().insert(id.to_owned()),
            "the id was never handed out before",
        )
    }

    /// Runs `op` on the server and on the model. Returns the server to carry
    /// on with (a new one after a restart) and the call's outcome: `None`
    /// if the step was skipped, an error if server and model disagree.
    async fn step(
        &self,
        app: TestApp,
        model: &mut Model,
        op: Op,
    ) -> (TestApp, Result<Option<Outcome>, String>) {
        if let Op::Restart = op {
            return (app.restart().await, Ok(Some(Ok(""))));
        }
        let outcome = self.call(&app, model, op).await;
        (app, outcome)
    }

    async fn call(
        &self,
        app: &TestApp,
        model: &mut Model,
        op: Op,
    ) -> Result<Option<Outcome>, String> {
        let outcome = match op {
            Op::Create(org) => {
                let result = app.create(&model.id(org)).await;
                if model.integration(org).is_some() {
                    return expect(result, Code::AlreadyExists);
                }
                let integration = result.map_err(unexpected)?;
                let client_id = integration.client_id.clone();
                check(client_id.len() == 24, "the client ID has 24 characters")?;
                self.first_time(&client_id)?;
                model.organizations[org.0] = Some(Integration {
                    client_id,
                    active: None,
                    pending: None,
                    old: Vec::new(),
                });
                agree_on_integration(model, org, Ok(integration))?;
                ""
            }
            Op::Get(org) => {
                let result = app.get(&model.id(org)).await;
                if model.integration(org).is_none() {
                    return expect(result, Code::NotFound);
                }
                agree_on_integration(model, org, result)?;
                ""
            }
            Op::Generate(org) => {
                let result = app.generate(&model.id(org)).await;
                let Some(integration) = &mut model.organizations[org.0] else {
                    return expect(result, Code::NotFound);
                };
                let (value, secret) = result.map_err(unexpected)?;
                check(
                    ClientSecret::parse(&value).is_ok(),
                    "the value has the shape and checksum of a secret",
                )?;
                let issued = Issued {
                    value,
                    id: secret.id.clone(),
                };
                agree_on_secret(Some(&issued), Some(&secret), SecretState::Pending)?;
                self.first_time(&issued.id)?;
                // The older pending secret, if any, is discarded.
                if let Some(discarded) = integration.pending.replace(issued) {
                    integration.old.push(discarded.value);
                    "discarded the pending one"
                } else {
                    ""
                }
            }
            Op::Activate(org, value) => {
                let Some(value) = model.resolve(value) else {
                    return Ok(None);
                };
                let result = app.activate(&model.id(org), &value).await;
                if value.is_empty() || value.len() > 256 {
                    return expect(result, Code::InvalidArgument);
                }
                let Some(integration) = model.organizations[org.0].as_mut() else {
                    return expect(result, Code::NotFound);
                };
                let holds = |s: &Option<Issued>| s.as_ref().is_some_and(|s| s.value == value);
                let done = if holds(&integration.active) {
                    // A retried activation succeeds and changes nothing.
                    "a retry"
                } else if holds(&integration.pending) {
                    let pending = integration.pending.take();
                    match std::mem::replace(&mut integration.active, pending) {
                        Some(revoked) => {
                            integration.old.push(revoked.value);
                            "rotated"
                        }
                        None => "the first secret",
                    }
                } else {
                    return expect(result, Code::FailedPrecondition);
                };
                agree_on_integration(model, org, result)?;
                done
            }
            Op::Validate(client, value) => {
                let Some(value) = model.resolve(value) else {
                    return Ok(None);
                };
                let owner = match client {
                    Client::Of(org) => model.integration(org).map(|i| (org, i)),
                    Client::Unknown => None,
                };
                let client_id = owner.map_or(UNKNOWN_CLIENT_ID, |(_, i)| i.client_id.as_str());
                let result = app.validate(client_id, &value).await;
                if value.is_empty() || value.len() > 256 {
                    return expect(result, Code::InvalidArgument);
                }
                let expected = match owner {
                    Some((org, integration))
                        if integration
                            .active
                            .as_ref()
                            .is_some_and(|s| s.value == value) =>
                    {
                        proto::ValidateClientResponse {
                            valid: true,
                            organization_id: model.id(org),
                            domain: DEFAULT_DOMAIN.to_owned(),
                        }
                    }
                    // Nothing more than "no", whatever the reason.
                    _ => proto::ValidateClientResponse::default(),
                };
                let response = result.map_err(unexpected)?;
                check_eq(&response, &expected, "the answer")?;
                if response.valid { "valid" } else { "invalid" }
            }
            Op::Restart => unreachable!("handled by step"),
        };
        Ok(Some(Ok(outcome)))
    }
}

/// Whatever the last step did, every organization now looks as the model
/// says: a failed call changed nothing, a successful one only what it should
/// have.
async fn agree_everywhere(app: &TestApp, model: &Model) -> Result<(), String> {
    for org in (0..ORGANIZATIONS).map(Org) {
        let shown = app.get(&model.id(org)).await;
        agree_on_integration(model, org, shown)
            .map_err(|error| format!("then GetIntegration({org:?}): {error}"))?;
    }
    Ok(())
}

/// An integration the server returned, against the model: absent
/// organizations are NOT_FOUND; others show their client ID, the default
/// domain, and the id, state and hint of exactly the active and pending
/// secrets the model has.
fn agree_on_integration(
    model: &Model,
    org: Org,
    shown: Result<proto::Integration, Status>,
) -> Result<(), String> {
    let Some(expected) = model.integration(org) else {
        return expect(shown, Code::NotFound).map(drop);
    };
    let shown = shown.map_err(unexpected)?;
    check_eq(&shown.organization_id, &model.id(org), "organization_id")?;
    check_eq(&shown.client_id, &expected.client_id, "client_id")?;
    check_eq(&shown.domain.as_str(), &DEFAULT_DOMAIN, "domain")?;
    agree_on_secret(
        expected.active.as_ref(),
        shown.active_secret.as_ref(),
        SecretState::Active,
    )
    .map_err(|e| format!("active secret: {e}"))?;
    agree_on_secret(
        expected.pending.as_ref(),
        shown.pending_secret.as_ref(),
        SecretState::Pending,
    )
    .map_err(|e| format!("pending secret: {e}"))
}

fn agree_on_secret(
    expected: Option<&Issued>,
    shown: Option<&proto::Secret>,
    state: SecretState,
) -> Result<(), String> {
    match (expected, shown) {
        (None, None) => Ok(()),
        (Some(expected), Some(shown)) => {
            check_eq(&shown.id, &expected.id, "id")?;
            check_eq(&shown.state, &(state as i32), "state")?;
            // The hint is the last four characters, meant to be shown.
            check_eq(&shown.hint.as_str(), &expected.hint(), "hint")
        }
        (None, Some(shown)) => Err(format!(
            "the server shows secret {}, the model none",
            shown.id
        )),
        (Some(expected), None) => Err(format!("the server lacks secret {}", expected.id)),
    }
}

/// The outcome when `result` failed with `code`, as the model expects.
fn expect<T>(result: Result<T, Status>, code: Code) -> Result<Option<Outcome>, String> {
    match result {
        Ok(_) => Err(format!("expected {code:?}, got a success")),
        Err(status) if status.code() == code => Ok(Some(Err(code))),
        Err(status) => Err(format!("expected {code:?}, got {status:?}")),
    }
}

fn unexpected(status: Status) -> String {
    format!("expected a success, got {status:?}")
}

fn check(condition: bool, what: &str) -> Result<(), String> {
    condition
        .then_some(())
        .ok_or_else(|| format!("not so: {what}"))
}

fn check_eq<T: PartialEq + fmt::Debug>(shown: &T, expected: &T, what: &str) -> Result<(), String> {
    if shown == expected {
        Ok(())
    } else {
        Err(format!(
            "{what}: the server says {shown:?}, the model {expected:?}"
        ))
    }
}
