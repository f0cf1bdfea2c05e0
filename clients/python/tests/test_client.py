"""The client against the real server: the dashboard's and the gateway's flow,
how each refusal surfaces, and that no secret value reaches a repr or an
error message."""

from __future__ import annotations

import pickle
import re
import secrets
from collections.abc import Callable

import grpc
import pytest

from centralauth_integration import GeneratedSecret, IntegrationClient, IntegrationError, pb
from centralauth_integration.client import _to_error

from .conftest import Server

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def test_a_rotation_validates_the_new_secret_and_refuses_the_old_one(
    admin: IntegrationClient, validator: IntegrationClient, organization_id: str
) -> None:
    integration = admin.create_integration(organization_id)
    assert integration.organization_id == organization_id, integration
    assert len(integration.client_id) == 24, "a client ID is 24 base62 characters"
    assert not integration.HasField("active_secret"), "a new integration has no secret"
    client_id = integration.client_id

    first = admin.generate_secret(organization_id)
    assert first.secret.state == pb.SECRET_STATE_PENDING, first
    assert first.client_secret.endswith(first.hint), "the hint is the value's last four characters"
    pending = validator.validate_client(client_id, first.client_secret)
    assert not pending.valid, "a pending secret does not validate"

    # "Activate later": the value a person types in is the same call.
    typed_in = str(first.client_secret)
    activated = admin.activate_secret(organization_id, typed_in)
    assert activated.active_secret.id == first.secret.id, activated
    assert activated.active_secret.state == pb.SECRET_STATE_ACTIVE, activated
    again = admin.activate_secret(organization_id, typed_in)
    assert again.active_secret.id == first.secret.id, "activating again changes nothing"

    valid = validator.validate_client(client_id, first.client_secret, remote_address="192.0.2.7")
    assert valid.valid, "the active secret validates"
    assert valid.organization_id == organization_id, valid
    assert valid.domain == integration.domain, valid

    second = admin.generate_secret(organization_id)
    shown = admin.get_integration(organization_id)
    assert shown.active_secret.id == first.secret.id, "generating does not rotate yet"
    assert shown.pending_secret.id == second.secret.id, shown
    rotated = admin.activate_secret(organization_id, second.client_secret)
    assert rotated.active_secret.id == second.secret.id, rotated
    assert not rotated.HasField("pending_secret"), rotated

    assert validator.validate_client(client_id, second.client_secret).valid, "the new secret validates"
    old = validator.validate_client(client_id, first.client_secret)
    assert not old.valid, "the rotated-out secret is refused"
    assert old.organization_id == "" and old.domain == "", "a refusal says nothing else"

    states = [(s.id, s.state) for s in admin.iter_secrets(organization_id, page_size=1)]
    assert states == [
        (second.secret.id, pb.SECRET_STATE_ACTIVE),
        (first.secret.id, pb.SECRET_STATE_REVOKED),
    ], "the history is newest first, one page at a time"


def test_a_revoked_secret_stops_validating_and_the_audit_names_the_actor(
    admin: IntegrationClient, validator: IntegrationClient, organization_id: str
) -> None:
    client_id = admin.create_integration(organization_id).client_id
    generated = admin.generate_secret(organization_id)
    admin.activate_secret(organization_id, generated.client_secret)
    assert validator.validate_client(client_id, generated.client_secret).valid

    revoked = admin.revoke_secret(organization_id, generated.secret.id)
    assert not revoked.HasField("active_secret"), revoked
    assert not validator.validate_client(client_id, generated.client_secret).valid

    events = admin.list_audit_events(organization_id, page_size=1).events
    assert events[0].action == pb.AUDIT_ACTION_SECRET_REVOKED, events
    assert events[0].actor == "jane@acme.example", "x-actor is recorded"
    assert events[0].caller.startswith("admin:"), events

    admin.delete_integration(organization_id)
    with pytest.raises(IntegrationError) as raised:
        admin.get_integration(organization_id)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_an_unknown_organization_is_not_found_with_a_request_id(admin: IntegrationClient) -> None:
    with pytest.raises(IntegrationError) as raised:
        admin.get_integration("nobody-" + secrets.token_hex(4))
    error = raised.value
    assert error.code == grpc.StatusCode.NOT_FOUND, repr(error)
    assert error.method == "GetIntegration"
    assert error.details, "the server says what is wrong"
    assert error.request_id and UUID.match(error.request_id), f"a request id: {error!r}"
    assert error.request_id in str(error), str(error)


def test_an_existing_organization_cannot_be_created_twice(
    admin: IntegrationClient, organization_id: str
) -> None:
    admin.create_integration(organization_id)
    with pytest.raises(IntegrationError) as raised:
        admin.create_integration(organization_id)
    assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS, repr(raised.value)


@pytest.mark.parametrize("token", [None, "not-a-token-the-service-knows-" + "x" * 8])
def test_a_call_without_a_known_token_is_unauthenticated(server: Server, token: str | None) -> None:
    with IntegrationClient(server.target, token) as anonymous:
        with pytest.raises(IntegrationError) as raised:
            anonymous.get_integration("acme")
        assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED, repr(raised.value)
        assert raised.value.request_id, repr(raised.value)
        with pytest.raises(IntegrationError) as raised:
            anonymous.validate_client("3PjHtqI5S5bs3j98IV2srpj8", "cas_" + "a" * 60)
        assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED, repr(raised.value)


ADMIN_CALLS: list[tuple[str, Callable[[IntegrationClient], object]]] = [
    ("CreateIntegration", lambda c: c.create_integration("acme")),
    ("GetIntegration", lambda c: c.get_integration("acme")),
    ("GenerateSecret", lambda c: c.generate_secret("acme")),
    ("ActivateSecret", lambda c: c.activate_secret("acme", "cas_" + "a" * 60)),
    ("ListSecrets", lambda c: c.list_secrets("acme")),
    ("RevokeSecret", lambda c: c.revoke_secret("acme", "01a227c6-2d7a-77ca-b687-4401866c120b")),
    ("DeleteIntegration", lambda c: c.delete_integration("acme")),
]


@pytest.mark.parametrize("method,call", ADMIN_CALLS, ids=[name for name, _ in ADMIN_CALLS])
def test_a_validator_token_cannot_call_an_admin_rpc(
    validator: IntegrationClient, method: str, call: Callable[[IntegrationClient], object]
) -> None:
    with pytest.raises(IntegrationError) as raised:
        call(validator)
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED, repr(raised.value)
    assert raised.value.method == method


def test_an_admin_token_cannot_validate(admin: IntegrationClient) -> None:
    with pytest.raises(IntegrationError) as raised:
        admin.validate_client("3PjHtqI5S5bs3j98IV2srpj8", "cas_" + "a" * 60)
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED, repr(raised.value)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda a, v: a.get_integration(""), id="empty organization id"),
        pytest.param(lambda a, v: a.get_integration("has space"), id="organization id with a space"),
        pytest.param(lambda a, v: a.get_integration("x" * 129), id="organization id over 128"),
        pytest.param(lambda a, v: a.revoke_secret("acme", "not-a-uuid"), id="secret id not a uuid"),
        pytest.param(lambda a, v: a.list_secrets("acme", page_size=-1), id="negative page size"),
        pytest.param(lambda a, v: v.validate_client("", "cas_x"), id="empty client id"),
        pytest.param(
            lambda a, v: v.validate_client("3PjHtqI5S5bs3j98IV2srpj8", "cas_x", "not-an-ip"),
            id="remote address not an ip",
        ),
    ],
)
def test_a_malformed_request_is_invalid_argument(
    admin: IntegrationClient,
    validator: IntegrationClient,
    call: Callable[[IntegrationClient, IntegrationClient], object],
) -> None:
    with pytest.raises(IntegrationError) as raised:
        call(admin, validator)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT, repr(raised.value)
    assert raised.value.request_id, repr(raised.value)


def test_a_call_past_its_deadline_is_deadline_exceeded(
    server: Server, admin: IntegrationClient, organization_id: str
) -> None:
    admin.create_integration(organization_id)
    value = admin.generate_secret(organization_id).client_secret
    # A well-formed value for an unknown client ID costs an argon2id verify,
    # far longer than a millisecond.
    with server.validator(timeout=0.001) as hurried:
        with pytest.raises(IntegrationError) as raised:
            hurried.validate_client("0" * 24, value)
    # The deadline travels as grpc-timeout: whichever side sees it pass first
    # ends the call, the client with DEADLINE_EXCEEDED, the server with
    # CANCELLED ("Timeout expired").
    assert raised.value.code in (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    ), repr(raised.value)
    assert value not in str(raised.value)


def test_no_secret_value_appears_in_an_error(
    admin: IntegrationClient, validator: IntegrationClient, organization_id: str
) -> None:
    client_id = admin.create_integration(organization_id).client_id
    generated = admin.generate_secret(organization_id)
    value = generated.client_secret
    errors: list[IntegrationError] = []
    calls: list[Callable[[], object]] = [
        lambda: admin.activate_secret("nobody-" + secrets.token_hex(4), value),  # NOT_FOUND
        lambda: admin.activate_secret(organization_id, value[:-1] + "A"),  # a wrong value
        lambda: admin.activate_secret(organization_id, value + "x" * 300),  # too long
        lambda: validator.validate_client(client_id, value, remote_address="nowhere"),
    ]
    for call in calls:
        with pytest.raises(IntegrationError) as raised:
            call()
        errors.append(raised.value)
    for error in errors:
        for text in (str(error), repr(error), str(error.args), repr(pickle.loads(pickle.dumps(error)))):
            assert value not in text, f"{error.method} leaked the value"
            assert value[:-1] not in text, f"{error.method} leaked most of the value"


def test_an_error_message_is_scrubbed_of_the_value_the_call_sent() -> None:
    value = "cas_" + "s" * 60

    class Echoing(grpc.RpcError, grpc.Call):  # type: ignore[misc]
        """A proxy's answer that repeats the value it was sent."""

        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return f"upstream refused {value}"

        def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("x-request-id", "abc"),)

        def initial_metadata(self) -> tuple[tuple[str, str], ...]:
            return ()

        def is_active(self) -> bool:
            return False

        def time_remaining(self) -> float | None:
            return None

        def cancel(self) -> bool:
            return False

        def add_callback(self, callback: object) -> bool:
            return False

    error = _to_error("ActivateSecret", Echoing(), value)
    assert value not in str(error) and value not in repr(error), repr(error)
    assert error.details == "upstream refused [redacted]", error.details
    assert error.request_id == "abc"


def test_no_secret_or_token_appears_in_a_repr(server: Server, organization_id: str) -> None:
    with server.admin(actor="jane@acme.example") as admin:
        admin.create_integration(organization_id)
        generated = admin.generate_secret(organization_id)
        admin.activate_secret(organization_id, generated.client_secret)
        for text in (repr(admin), str(admin)):
            assert server.admin_token not in text, "the client's repr shows its token"
            assert generated.client_secret not in text
            assert "token=<set>" in text, text
        for text in (repr(generated), str(generated)):
            assert generated.client_secret not in text, "GeneratedSecret's repr shows the value"
            assert generated.hint in text, "the hint is what identifies it"
    assert isinstance(generated, GeneratedSecret)
    with IntegrationClient(server.target) as anonymous:
        assert "token=None" in repr(anonymous)


def test_a_closed_client_makes_no_more_calls(server: Server) -> None:
    with server.admin() as admin:
        pass
    with pytest.raises(ValueError):
        admin.get_integration("acme")


def test_a_change_stream_starts_with_resync_and_sees_a_creation(
    admin: IntegrationClient, organization_id: str
) -> None:
    stream = admin.watch_integrations(organization_id, timeout=10)
    first = next(stream)
    assert first.kind == pb.CHANGE_KIND_RESYNC, first
    admin.create_integration(organization_id)
    created = next(stream)
    assert created.kind == pb.CHANGE_KIND_CREATED, created
    assert created.organization_id == organization_id, created
    stream.close()
