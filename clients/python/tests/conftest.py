"""The real server binary, started once for the test session.

It runs `serve` on a free port of loopback (`--listen 127.0.0.1:0`; the port
is read from its `serving` log event), over a fresh SQLite database in a
temporary directory, with one admin and one validator token; the tests use
it once its health service answers SERVING.

The binary is `$INTEGRATION_BIN`, or else the release build at
`../../target/release/integration-service` relative to this package.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from centralauth_integration import IntegrationClient

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BIN = PACKAGE_ROOT / ".." / ".." / "target" / "release" / "integration-service"
STARTUP_TIMEOUT_S = 30.0

# grpc.health.v1.Health/Check, spoken without the health stubs: the request
# `{service: ""}` is the empty message, and the answer `{status: SERVING}` is
# field 1, varint 1.
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_SERVING = b"\x08\x01"


@dataclass
class Server:
    target: str
    admin_token: str = field(repr=False)
    validator_token: str = field(repr=False)
    process: subprocess.Popen[bytes] = field(repr=False)
    log: list[str] = field(repr=False)

    def admin(self, **kwargs: object) -> IntegrationClient:
        return IntegrationClient(self.target, self.admin_token, **kwargs)  # type: ignore[arg-type]

    def validator(self, **kwargs: object) -> IntegrationClient:
        return IntegrationClient(self.target, self.validator_token, **kwargs)  # type: ignore[arg-type]

    def output(self) -> str:
        return "\n".join(self.log)


def server_binary() -> Path:
    configured = os.environ.get("INTEGRATION_BIN")
    path = Path(configured).resolve() if configured else DEFAULT_BIN.resolve()
    if not path.is_file():
        pytest.exit(
            f"no server binary at {path}: build it (cargo build --release) or set INTEGRATION_BIN",
            returncode=2,
        )
    return path


def is_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(_HEALTH_CHECK)
        try:
            return bool(check(b"", timeout=1.0) == _SERVING)
        except grpc.RpcError:
            return False


def _serving_address(line: str) -> str | None:
    if '"serving"' not in line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if event.get("message") != "serving" and event.get("fields", {}).get("message") != "serving":
        return None
    address = event.get("address") or event.get("fields", {}).get("address")
    return address if isinstance(address, str) else None


def start_server(binary: Path, workdir: Path) -> Server:
    admin_token = secrets.token_hex(32)
    validator_token = secrets.token_hex(32)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("INTEGRATION_") and key not in ("DATABASE_URL", "RUST_LOG")
    }
    env["INTEGRATION_ADMIN_TOKENS"] = admin_token
    env["INTEGRATION_VALIDATOR_TOKENS"] = validator_token
    process = subprocess.Popen(
        [
            str(binary),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--database-url",
            f"sqlite://{workdir}/db?mode=rwc",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    log: list[str] = []
    announced: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            log.append(line)
            address = _serving_address(line)
            if address and not announced:
                announced.append(address)
                seen.set()
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    server = Server("", admin_token, validator_token, process, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    seen.wait(STARTUP_TIMEOUT_S)
    if not announced:
        stop_server(server)
        pytest.exit(f"the server did not say where it serves:\n{server.output()}", returncode=2)
    server.target = announced[0]
    while not is_serving(server.target):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            pytest.exit(f"the server never answered SERVING:\n{server.output()}", returncode=2)
        time.sleep(0.1)
    return server


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(server_binary(), tmp_path_factory.mktemp("integration-service"))
    try:
        yield started
    finally:
        stop_server(started)


@pytest.fixture
def admin(server: Server) -> Iterator[IntegrationClient]:
    with server.admin(actor="jane@acme.example") as client:
        yield client


@pytest.fixture
def validator(server: Server) -> Iterator[IntegrationClient]:
    with server.validator() as client:
        yield client


@pytest.fixture
def organization_id() -> str:
    """A fresh organization for each test, so tests share the server only."""
    return f"org-{secrets.token_hex(6)}"
