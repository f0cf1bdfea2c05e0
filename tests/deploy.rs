//! The deployment files against the binary they deploy: the Kubernetes
//! manifests in deploy/kubernetes, the Dockerfile and the Grafana dashboard
//! in deploy/grafana. Every subcommand, variable, port, probe and metric
//! they name must be one the binary has; and the binary, started with the
//! Job's and then the Deployment's environment (on a temporary SQLite
//! database and free ports instead of PostgreSQL and the real ones), must
//! migrate, report SERVING, serve its metrics and stop on SIGTERM within
//! the pod's grace period.

// A test that meets a broken precondition should fail loudly, right there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_yaml_ng::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_integration-service");

/// Variables the binary reads that are no flag's, so `--help` does not
/// list them: the tokens (variables only) and the log filter.
const VARIABLES_WITHOUT_FLAGS: [&str; 3] = [
    "INTEGRATION_ADMIN_TOKENS",
    "INTEGRATION_VALIDATOR_TOKENS",
    "RUST_LOG",
];

/// Longer than a start, a migration or a health check takes on a busy
/// machine.
const WAIT: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifest(name: &str) -> Value {
    let text = read(&format!("deploy/kubernetes/{name}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
}

fn deployment() -> Value {
    manifest("deployment.yaml")
}

fn job() -> Value {
    manifest("migrate-job.yaml")
}

/// Follows `path` (mapping keys, or sequence indexes as numbers) down
/// `value`, panicking with the path if something is missing.
fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    let mut here = value;
    for key in path {
        let next = match key.parse::<usize>() {
            Ok(index) => here.get(index),
            Err(_) => here.get(*key),
        };
        here = next.unwrap_or_else(|| panic!("no {} in {value:?}", path.join(".")));
    }
    here
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")))
}

fn number(value: &Value, path: &[&str]) -> u64 {
    at(value, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not a number", path.join(".")))
}

fn pod_spec(workload: &Value) -> &Value {
    at(workload, &["spec", "template", "spec"])
}

/// The one container of a workload.
fn container(workload: &Value) -> &Value {
    let containers = at(pod_spec(workload), &["containers"])
        .as_sequence()
        .expect("a list of containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

fn subcommand(container: &Value) -> &str {
    let args = at(container, &["args"])
        .as_sequence()
        .expect("args, a list");
    assert_eq!(args.len(), 1, "args are the subcommand alone: {args:?}");
    args[0].as_str().expect("a subcommand")
}

/// A container's `env`: each name with its literal value, or `None` for one
/// taken from a Secret.
fn env(container: &Value) -> BTreeMap<String, Option<String>> {
    let mut variables = BTreeMap::new();
    for item in at(container, &["env"]).as_sequence().expect("env, a list") {
        let name = text(item, &["name"]).to_owned();
        let value = match item.get("value") {
            Some(value) => Some(value.as_str().expect("a quoted value").to_owned()),
            None => {
                assert!(
                    item.get("valueFrom").is_some(),
                    "{name} has neither a value nor a valueFrom"
                );
                None
            }
        };
        assert!(
            variables.insert(name.clone(), value).is_none(),
            "{name} is set twice"
        );
    }
    variables
}

fn literal(container: &Value, name: &str) -> String {
    env(container)
        .remove(name)
        .flatten()
        .unwrap_or_else(|| panic!("no literal value for {name}"))
}

/// The Secret keys a container reads, as (variable, secret, key).
fn secret_refs(container: &Value) -> Vec<(String, String, String)> {
    at(container, &["env"])
        .as_sequence()
        .expect("env, a list")
        .iter()
        .filter_map(|item| {
            let reference = item.get("valueFrom")?.get("secretKeyRef")?;
            Some((
                text(item, &["name"]).to_owned(),
                text(reference, &["name"]).to_owned(),
                text(reference, &["key"]).to_owned(),
            ))
        })
        .collect()
}

fn container_port(container: &Value, name: &str) -> u16 {
    let ports = at(container, &["ports"]).as_sequence().expect("ports");
    let port = ports
        .iter()
        .find(|port| port.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no container port named {name}"));
    u16::try_from(number(port, &["containerPort"])).expect("a port")
}

fn port_of(address: &str) -> u16 {
    address
        .parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{address} is not an address and port: {e}"))
        .port()
}

fn run(command: &mut Command) -> Output {
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The subcommands the binary's `--help` lists.
fn subcommands() -> BTreeSet<String> {
    let output = run(Command::new(BINARY).arg("--help"));
    assert!(output.status.success(), "--help: {output:?}");
    let help = stdout(&output);
    let listed = help
        .split("Commands:")
        .nth(1)
        .expect("--help lists its commands")
        .split("\n\n")
        .next()
        .unwrap_or_default();
    listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The variables `integration-service <subcommand> --help` says it reads.
fn variables_read_by(subcommand: &str) -> BTreeSet<String> {
    let output = run(Command::new(BINARY)
        .args([subcommand, "--help"])
        .env_clear());
    assert!(output.status.success(), "{subcommand} --help: {output:?}");
    let help = stdout(&output);
    let variables: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    assert!(
        variables.contains("DATABASE_URL"),
        "{subcommand} --help names its variables: {help}"
    );
    variables
}

/// `package.Service` of the contract in proto/.
fn proto_service_name() -> String {
    let proto = read("proto/centralauth/integration/v1/integration.proto");
    let package = proto
        .lines()
        .find_map(|line| line.trim().strip_prefix("package "))
        .expect("a package")
        .trim_end_matches(';')
        .trim();
    let service = proto
        .lines()
        .find_map(|line| line.trim().strip_prefix("service "))
        .expect("a service")
        .trim_end_matches('{')
        .trim();
    format!("{package}.{service}")
}

/// The Dockerfile's instructions, continuation lines joined, comments and
/// the parser directive dropped.
fn dockerfile() -> Vec<String> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    instructions
}

/// The instructions of the image's last stage, the one that runs.
fn final_stage() -> Vec<String> {
    let instructions = dockerfile();
    let from = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("a FROM");
    instructions[from..].to_vec()
}

/// A JSON exec form (`["a", "b"]`) after `keyword` in `instruction`.
fn exec_form(instruction: &str, keyword: &str) -> Vec<String> {
    let start = instruction
        .find(keyword)
        .unwrap_or_else(|| panic!("no {keyword} in {instruction}"))
        + keyword.len();
    serde_json::from_str(instruction[start..].trim())
        .unwrap_or_else(|e| panic!("{instruction}: not an exec form: {e}"))
}

/// The variables the image sets (its ENV instructions).
fn image_env() -> BTreeMap<String, String> {
    final_stage()
        .iter()
        .filter_map(|i| i.strip_prefix("ENV "))
        .flat_map(|pairs| {
            pairs
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("ENV name=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn the_subcommands_of_the_manifests_exist() {
    let subcommands = subcommands();
    assert!(subcommands.contains("serve"), "{subcommands:?}");
    for (workload, expected) in [(deployment(), "serve"), (job(), "migrate")] {
        let subcommand = subcommand(container(&workload));
        assert_eq!(subcommand, expected);
        assert!(
            subcommands.contains(subcommand),
            "{subcommand} is not one of {subcommands:?}"
        );
    }
}

#[test]
fn every_variable_of_the_manifests_is_one_the_binary_reads() {
    for workload in [deployment(), job()] {
        let container = container(&workload);
        let subcommand = subcommand(container);
        let mut known = variables_read_by(subcommand);
        known.extend(VARIABLES_WITHOUT_FLAGS.map(str::to_owned));
        if subcommand == "migrate" {
            // migrate takes the database and log flags only; tokens are
            // nothing to it.
            known.retain(|name| !name.contains("TOKEN"));
        }
        for name in env(container).keys() {
            assert!(
                known.contains(name),
                "`{subcommand}` does not read {name}; it reads {known:?}"
            );
        }
    }
}

#[test]
fn the_job_gets_only_the_database_url_from_the_secret() {
    let job = job();
    let container = container(&job);
    let variables = env(container);
    assert_eq!(
        variables.keys().map(String::as_str).collect::<Vec<_>>(),
        ["DATABASE_URL", "INTEGRATION_LOG_FORMAT"]
    );
    assert_eq!(literal(container, "INTEGRATION_LOG_FORMAT"), "json");
    assert_eq!(
        secret_refs(container),
        [(
            "DATABASE_URL".to_owned(),
            "integration-service".to_owned(),
            "DATABASE_URL".to_owned()
        )]
    );
}

#[test]
fn the_secret_keys_read_are_those_of_the_example_secret() {
    let secret = manifest("secret.example.yaml");
    let name = text(&secret, &["metadata", "name"]);
    let data = at(&secret, &["stringData"])
        .as_mapping()
        .expect("stringData");
    for workload in [deployment(), job()] {
        for (variable, secret, key) in secret_refs(container(&workload)) {
            assert_eq!(secret, name, "{variable} reads another Secret");
            assert!(
                data.contains_key(key.as_str()),
                "{variable}: the Secret has no key {key}"
            );
        }
    }
    let deployment = deployment();
    let read: BTreeSet<String> = secret_refs(container(&deployment))
        .into_iter()
        .map(|(variable, _, _)| variable)
        .collect();
    for variable in [
        "DATABASE_URL",
        "INTEGRATION_ADMIN_TOKENS",
        "INTEGRATION_VALIDATOR_TOKENS",
    ] {
        assert!(read.contains(variable), "{variable} is not from the Secret");
    }
}

#[test]
fn the_container_ports_are_the_listening_ports() {
    let deployment = deployment();
    let container = container(&deployment);
    let grpc = container_port(container, "grpc");
    let metrics = container_port(container, "metrics");
    assert_eq!(grpc, port_of(&literal(container, "INTEGRATION_LISTEN")));
    assert_eq!(
        metrics,
        port_of(&literal(container, "INTEGRATION_METRICS_LISTEN"))
    );
    assert_eq!(literal(container, "INTEGRATION_NO_MIGRATE"), "true");
    assert_eq!(literal(container, "INTEGRATION_LOG_FORMAT"), "json");

    // The Service forwards to those ports by name, gRPC as h2c.
    let service = manifest("service.yaml");
    let ports = at(&service, &["spec", "ports"])
        .as_sequence()
        .expect("ports");
    for (name, container_port) in [("grpc", grpc), ("metrics", metrics)] {
        let port = ports
            .iter()
            .find(|port| port.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("the Service has no {name} port"));
        assert_eq!(number(port, &["port"]), u64::from(container_port));
        let target = at(port, &["targetPort"]);
        assert!(
            target.as_str() == Some(name) || target.as_u64() == Some(u64::from(container_port)),
            "{name} targets {target:?}"
        );
    }
    let grpc_port = ports
        .iter()
        .find(|port| port.get("name").and_then(Value::as_str) == Some("grpc"))
        .expect("a grpc port");
    assert_eq!(text(grpc_port, &["appProtocol"]), "kubernetes.io/h2c");

    // The Service, the Deployment's pods and the budget select the same pods.
    let labels = at(&deployment, &["spec", "template", "metadata", "labels"]);
    let selected = at(&deployment, &["spec", "selector", "matchLabels"]);
    let pdb = manifest("pdb.yaml");
    for selector in [
        at(&service, &["spec", "selector"]),
        selected,
        at(&pdb, &["spec", "selector", "matchLabels"]),
    ] {
        assert_eq!(selector, selected, "selectors differ");
        for (key, value) in selector.as_mapping().expect("labels") {
            assert_eq!(labels.get(key), Some(value), "the pods lack {key:?}");
        }
    }
}

#[test]
fn the_probes_ask_the_grpc_port_and_the_contract_s_service() {
    let service = proto_service_name();
    assert_eq!(service, "centralauth.integration.v1.IntegrationService");
    let deployment = deployment();
    let container = container(&deployment);
    let grpc = u64::from(container_port(container, "grpc"));
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let probe_spec = at(container, &[probe]);
        let port = probe_spec
            .get("grpc")
            .and_then(|check| check.get("port"))
            .unwrap_or_else(|| panic!("{probe} is not a gRPC probe"));
        assert!(
            port.as_u64() == Some(grpc) || port.as_str() == Some("grpc"),
            "{probe} asks port {port:?}, not the gRPC port {grpc}"
        );
    }
    assert_eq!(
        text(container, &["readinessProbe", "grpc", "service"]),
        service,
        "readiness asks about the contract's service"
    );
    assert_eq!(
        text(container, &["livenessProbe", "grpc", "service"]),
        "liveness",
        "liveness asks what stays SERVING while the database is away"
    );
    // The sleep before SIGTERM and the longest call fit in the grace period.
    let grace = number(pod_spec(&deployment), &["terminationGracePeriodSeconds"]);
    let pause = number(container, &["lifecycle", "preStop", "sleep", "seconds"]);
    assert!(
        grace > pause + 30,
        "a grace period of {grace} s leaves a call of 30 s no time"
    );
}

#[test]
fn prometheus_is_told_the_metrics_port() {
    let deployment = deployment();
    let container = container(&deployment);
    let annotations = at(
        &deployment,
        &["spec", "template", "metadata", "annotations"],
    );
    assert_eq!(text(annotations, &["prometheus.io/scrape"]), "true");
    assert_eq!(text(annotations, &["prometheus.io/path"]), "/metrics");
    assert_eq!(
        text(annotations, &["prometheus.io/port"]),
        container_port(container, "metrics").to_string()
    );
}

#[test]
fn the_pods_run_as_the_image_s_non_root_user() {
    let user = final_stage()
        .iter()
        .find_map(|i| i.strip_prefix("USER ").map(str::to_owned))
        .expect("a USER");
    let uid: u64 = user
        .split(':')
        .next()
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("USER {user} is not numeric"));
    for workload in [deployment(), job()] {
        let pod = at(pod_spec(&workload), &["securityContext"]);
        assert_eq!(at(pod, &["runAsNonRoot"]).as_bool(), Some(true));
        assert_eq!(number(pod, &["runAsUser"]), uid);
        assert_eq!(text(pod, &["seccompProfile", "type"]), "RuntimeDefault");
        let own = at(container(&workload), &["securityContext"]);
        assert_eq!(at(own, &["readOnlyRootFilesystem"]).as_bool(), Some(true));
        assert_eq!(
            at(own, &["allowPrivilegeEscalation"]).as_bool(),
            Some(false)
        );
        assert_eq!(
            at(own, &["capabilities", "drop"]),
            &Value::from(vec!["ALL"])
        );
    }
}

#[test]
fn the_kustomization_applies_no_placeholder_and_no_job() {
    let kustomization = manifest("kustomization.yaml");
    let resources: Vec<&str> = at(&kustomization, &["resources"])
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file"))
        .collect();
    assert_eq!(resources, ["deployment.yaml", "service.yaml", "pdb.yaml"]);
    for resource in resources {
        assert!(root().join("deploy/kubernetes").join(resource).is_file());
    }
}

#[test]
fn the_dockerfile_health_check_runs_a_subcommand_the_binary_has() {
    let stage = final_stage();
    let entrypoint = exec_form(
        stage
            .iter()
            .find(|i| i.starts_with("ENTRYPOINT "))
            .expect("an ENTRYPOINT"),
        "ENTRYPOINT",
    );
    let health = stage
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK "))
        .expect("a HEALTHCHECK");
    let command = exec_form(health, "CMD");
    assert_eq!(
        command[0], entrypoint[0],
        "the health check runs the binary"
    );
    let subcommand = &command[1];
    assert!(
        subcommands().contains(subcommand),
        "HEALTHCHECK runs `{subcommand}`, which the binary does not have"
    );
    let output = run(Command::new(BINARY).args(&command[1..]).arg("--help"));
    assert!(output.status.success(), "{command:?} --help: {output:?}");
    // Its default address is the server's own INTEGRATION_LISTEN.
    assert!(stdout(&output).contains("[env: INTEGRATION_LISTEN"));
    let run_by_default = exec_form(
        stage.iter().find(|i| i.starts_with("CMD ")).expect("a CMD"),
        "CMD",
    );
    assert_eq!(run_by_default, ["serve"]);
}

#[test]
fn the_dashboard_queries_only_metrics_the_service_exports() {
    let source = read("src/metrics.rs");
    let exported: BTreeSet<&str> = source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub const "))
        .filter_map(|line| line.split('"').nth(1))
        .filter(|name| name.starts_with("integration_"))
        .collect();
    assert!(exported.contains("integration_grpc_requests_total"));

    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/integration-service.json"))
            .expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating variables");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["query"] == "prometheus"),
        "a Prometheus datasource variable"
    );
    let mut queried = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            assert_eq!(panel["datasource"]["uid"], "${datasource}");
            for (start, _) in expr.match_indices("integration_") {
                let name: String = expr[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .filter(|base| exported.contains(base))
                    .unwrap_or(&name);
                assert!(
                    exported.contains(base),
                    "panel {:?} queries {name}, which src/metrics.rs does not export",
                    panel["title"]
                );
                queried.insert(base.to_owned());
            }
        }
    }
    let missing: Vec<_> = exported
        .iter()
        .filter(|name| !queried.contains(**name))
        .collect();
    assert!(missing.is_empty(), "no panel shows {missing:?}");
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A container's environment as the binary gets it here: the image's ENV,
/// then the manifest's `env` over it, with the Secret's values, the
/// database and the ports replaced by ones of this test.
fn environment(
    container: &Value,
    database_url: &str,
    ports: &BTreeMap<u16, u16>,
) -> BTreeMap<String, String> {
    let secret = [
        ("DATABASE_URL", database_url.to_owned()),
        ("INTEGRATION_ADMIN_TOKENS", "a1".repeat(32)),
        (
            "INTEGRATION_VALIDATOR_TOKENS",
            format!("{},{}", "b2".repeat(32), "c3".repeat(32)),
        ),
    ];
    let mut variables = image_env();
    variables.insert("DATABASE_URL".to_owned(), database_url.to_owned());
    for (name, value) in env(container) {
        let value = match value {
            Some(value) => value,
            None => secret
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone())
                .unwrap_or_else(|| panic!("no test value for the Secret's {name}")),
        };
        variables.insert(name, value);
    }
    for value in variables.values_mut() {
        if let Ok(mut address) = value.parse::<SocketAddr>()
            && let Some(port) = ports.get(&address.port())
        {
            address.set_port(*port);
            *value = address.to_string();
        }
    }
    variables
}

/// Kills the server if the test fails before it stops it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn health_check(port: u16, service: &str) -> bool {
    run(Command::new(BINARY)
        .env_clear()
        .args(["health-check", "--address"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--service", service]))
    .status
    .success()
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the metrics port answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("the request is sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    answer
}

#[test]
fn the_manifests_environment_migrates_serves_and_stops() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let database_url = format!("sqlite://{}/db?mode=rwc", directory.path().display());
    let deployment = deployment();
    let server = container(&deployment);
    let grpc = container_port(server, "grpc");
    let metrics = container_port(server, "metrics");
    let ports = BTreeMap::from([(grpc, free_port()), (metrics, free_port())]);

    // The Job first: it migrates and exits 0.
    let job = job();
    let migrate = container(&job);
    let output = run(Command::new(BINARY)
        .env_clear()
        .envs(environment(migrate, &database_url, &ports))
        .arg(subcommand(migrate)));
    assert!(
        output.status.success(),
        "the Job's migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let logged = stdout(&output);
    for line in logged.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "the Job logs JSON: {line}"
        );
    }
    assert!(logged.contains("migrations applied"), "{logged}");

    // Then a replica, with INTEGRATION_NO_MIGRATE on the migrated database.
    let variables = environment(server, &database_url, &ports);
    assert_eq!(
        variables.get("INTEGRATION_NO_MIGRATE").map(String::as_str),
        Some("true")
    );
    let out = directory.path().join("stdout");
    let err = directory.path().join("stderr");
    let mut replica = Server(
        Command::new(BINARY)
            .env_clear()
            .envs(&variables)
            .arg(subcommand(server))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("a log file"))
            .stderr(std::fs::File::create(&err).expect("a log file"))
            .spawn()
            .expect("the server starts"),
    );
    let service = proto_service_name();
    let started = Instant::now();
    while !health_check(ports[&grpc], &service) {
        if let Some(status) = replica.0.try_wait().expect("a status") {
            panic!(
                "the server exited ({status}) before SERVING:\n{}\n{}",
                log(&out),
                log(&err)
            );
        }
        assert!(
            started.elapsed() < WAIT,
            "the server never reported SERVING:\n{}\n{}",
            log(&out),
            log(&err)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(health_check(ports[&grpc], ""), "SERVING as a whole too");
    let liveness = text(
        container(&deployment),
        &["livenessProbe", "grpc", "service"],
    );
    assert!(
        health_check(ports[&grpc], liveness),
        "what liveness asks is SERVING"
    );
    // The image's HEALTHCHECK, as Docker runs it in the server's
    // environment: its address comes from INTEGRATION_LISTEN.
    let healthcheck = final_stage()
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK "))
        .map(|i| exec_form(i, "CMD"))
        .expect("a HEALTHCHECK");
    let checked = run(Command::new(BINARY)
        .env_clear()
        .envs(&variables)
        .args(&healthcheck[1..]));
    assert!(checked.status.success(), "the HEALTHCHECK: {checked:?}");
    assert!(
        !health_check(ports[&grpc], "no.such.Service"),
        "the health check can fail"
    );

    let answer = http_get(ports[&metrics], "/metrics");
    assert!(answer.starts_with("HTTP/1.1 200"), "GET /metrics: {answer}");
    assert!(
        answer.contains("integration_db_pool_max_connections"),
        "GET /metrics: {answer}"
    );

    // SIGTERM, as the kubelet sends it after the preStop pause: a clean
    // exit well within the rest of the grace period.
    let grace = number(pod_spec(&deployment), &["terminationGracePeriodSeconds"]);
    let pause = number(server, &["lifecycle", "preStop", "sleep", "seconds"]);
    let sent = Command::new("kill")
        .args(["-TERM", &replica.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "SIGTERM sent");
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = replica.0.try_wait().expect("a status") {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(grace - pause),
            "still running {} s after SIGTERM",
            grace - pause
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let logged = log(&out);
    assert!(
        status.success(),
        "exit on SIGTERM: {status}\n{logged}\n{}",
        log(&err)
    );
    assert!(!logged.is_empty(), "the server logged");
    for line in logged.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "the server logs JSON: {line}"
        );
    }
}

#[test]
fn the_replicas_leave_migrating_to_the_job() {
    // On a database the Job has not migrated, a replica does not migrate
    // it: INTEGRATION_NO_MIGRATE=true is taken, and it stops the start.
    let directory = tempfile::tempdir().expect("a temporary directory");
    let database_url = format!("sqlite://{}/db?mode=rwc", directory.path().display());
    let deployment = deployment();
    let server = container(&deployment);
    let ports = BTreeMap::from([
        (container_port(server, "grpc"), free_port()),
        (container_port(server, "metrics"), free_port()),
    ]);
    let mut child = Server(
        Command::new(BINARY)
            .env_clear()
            .envs(environment(server, &database_url, &ports))
            .arg(subcommand(server))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts"),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("a status") {
            break status;
        }
        assert!(
            started.elapsed() < WAIT,
            "a replica served an unmigrated database"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut logged = String::new();
    child
        .0
        .stdout
        .take()
        .expect("its output")
        .read_to_string(&mut logged)
        .expect("its output");
    assert_eq!(status.code(), Some(1), "{status}: {logged}");
    assert!(
        logged.contains("has no schema") && logged.contains("integration-service migrate"),
        "it says to run the Job's migrate: {logged}"
    );
}
