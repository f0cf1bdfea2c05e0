"""A small typed client of centralauth.integration.v1.IntegrationService.

One `IntegrationClient` holds one channel. Every call carries the bearer
token (`authorization: Bearer <token>`) and, when set, the person acting
(`x-actor`), and has a deadline. A failed call raises `IntegrationError`
with the gRPC status code, the server's message and the request id the
server answered with.

Secret values never reach a repr or an error message: the client's repr
names neither its token nor anything it sent, `GeneratedSecret` hides the
value it carries, and an error's message is scrubbed of the value the
failed call sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message

try:
    from .centralauth.integration.v1 import integration_pb2 as pb
    from .centralauth.integration.v1 import integration_pb2_grpc as pb_grpc
except ImportError as exc:  # pragma: no cover - only without generated stubs
    raise ImportError(
        "the generated stubs are missing: run `python clients/python/generate.py` "
        "(needs the package's dev extra, grpcio-tools)"
    ) from exc

__all__ = ["GeneratedSecret", "IntegrationClient", "IntegrationError", "pb"]

_REQUEST_ID = "x-request-id"
_REDACTED = "[redacted]"

Metadata = Sequence[tuple[str, str | bytes]]
R = TypeVar("R", bound=Message)


class IntegrationError(Exception):
    """A call that the service (or the channel) answered with a non-OK status.

    `code` is the `grpc.StatusCode` (`NOT_FOUND`, `UNAUTHENTICATED`,
    `PERMISSION_DENIED`, `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`,
    `UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...), `details` the server's message
    and `request_id` the `x-request-id` the server answered with (`None` when
    the call never reached it, e.g. an unreachable server). `method` is the
    RPC's name.
    """

    code: grpc.StatusCode
    details: str
    request_id: str | None
    method: str

    def __init__(
        self,
        method: str,
        code: grpc.StatusCode,
        details: str,
        request_id: str | None,
    ) -> None:
        self.method = method
        self.code = code
        self.details = details
        self.request_id = request_id
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.method}: {self.code.name}: {self.details}"
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text

    def __repr__(self) -> str:
        return (
            f"IntegrationError(method={self.method!r}, code={self.code!r}, "
            f"details={self.details!r}, request_id={self.request_id!r})"
        )

    def __reduce__(self) -> tuple[type[IntegrationError], tuple[str, grpc.StatusCode, str, str | None]]:
        return (type(self), (self.method, self.code, self.details, self.request_id))


@dataclasses.dataclass(frozen=True, repr=False)
class GeneratedSecret:
    """What GenerateSecret answers: the value, shown exactly once, and its
    metadata. The value is left out of the repr, so logging this object
    does not leak it; read `client_secret` to hand it to the person."""

    client_secret: str = dataclasses.field(repr=False)
    secret: pb.Secret

    def __repr__(self) -> str:
        return (
            f"GeneratedSecret(id={self.secret.id!r}, "
            f"state={pb.SecretState.Name(self.secret.state)}, hint={self.secret.hint!r}, "
            "client_secret=<shown once, not in this repr>)"
        )

    @property
    def hint(self) -> str:
        """The last four characters of the value, as the service shows them."""
        return self.secret.hint


class IntegrationClient:
    """A client of IntegrationService over one channel.

    `target` is `host:port`. `token` is sent as `authorization: Bearer
    <token>` on every call (leave it out for a server without tokens on
    loopback). `tls=True` (or `root_certificates`, PEM bytes of the CAs to
    trust instead of the system's) makes the channel TLS. `timeout` is the
    deadline of every call, in seconds. `actor` is sent as `x-actor`: the
    person the audit trail records for every change made through this
    client.

    Use it as a context manager, or call `close()`, to close the channel.
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = 5.0,
        actor: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._target = target
        self._tls = tls or root_certificates is not None
        self._timeout = timeout
        self._actor = actor
        metadata: list[tuple[str, str]] = []
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        if actor:
            metadata.append(("x-actor", actor))
        self._metadata: tuple[tuple[str, str], ...] = tuple(metadata)
        self._has_token = bool(token)
        if self._tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel: grpc.Channel = grpc.secure_channel(target, credentials)
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.IntegrationServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._closed = False

    # The token is a credential: the repr says only whether there is one.
    def __repr__(self) -> str:
        return (
            f"IntegrationClient(target={self._target!r}, tls={self._tls}, "
            f"token={'<set>' if self._has_token else None}, "
            f"timeout={self._timeout}, actor={self._actor!r})"
        )

    def __enter__(self) -> IntegrationClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls after it fail."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    @property
    def target(self) -> str:
        return self._target

    # -- the dashboard's calls (admin token) ---------------------------------

    def create_integration(self, organization_id: str) -> pb.Integration:
        """Creates the organization's integration: a new client ID, the
        default domain, no secret yet. `ALREADY_EXISTS` if it has one."""
        request = pb.CreateIntegrationRequest(organization_id=organization_id)
        return self._unary("CreateIntegration", self._stub.CreateIntegration, request, pb.CreateIntegrationResponse).integration

    def get_integration(self, organization_id: str) -> pb.Integration:
        """What the Integration tab shows: domain, client ID, and the metadata
        of the active and pending secrets (never a value)."""
        request = pb.GetIntegrationRequest(organization_id=organization_id)
        return self._unary("GetIntegration", self._stub.GetIntegration, request, pb.GetIntegrationResponse).integration

    def generate_secret(self, organization_id: str) -> GeneratedSecret:
        """A new PENDING secret. Its value is in the answer and nowhere else,
        ever: show it once. An older pending secret is discarded."""
        request = pb.GenerateSecretRequest(organization_id=organization_id)
        response = self._unary("GenerateSecret", self._stub.GenerateSecret, request, pb.GenerateSecretResponse)
        return GeneratedSecret(client_secret=response.client_secret, secret=response.secret)

    def activate_secret(self, organization_id: str, client_secret: str) -> pb.Integration:
        """Activates the pending secret whose value is `client_secret` (the
        value just shown, or one a person typed in); the previously active
        secret is revoked in the same step. Sending the active secret's value
        again succeeds and changes nothing."""
        request = pb.ActivateSecretRequest(
            organization_id=organization_id, client_secret=client_secret
        )
        return self._unary(
            "ActivateSecret", self._stub.ActivateSecret, request, pb.ActivateSecretResponse, sent_secret=client_secret
        ).integration

    def revoke_secret(self, organization_id: str, secret_id: str) -> pb.Integration:
        """Retires one secret at once, for a leak: the active one becomes
        REVOKED (no secret validates until another is activated), the pending
        one DISCARDED. Retiring a retired secret changes nothing."""
        request = pb.RevokeSecretRequest(organization_id=organization_id, secret_id=secret_id)
        return self._unary("RevokeSecret", self._stub.RevokeSecret, request, pb.RevokeSecretResponse).integration

    def list_secrets(
        self, organization_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListSecretsResponse:
        """One page of every secret the organization had, newest first. Pass
        `next_page_token` back as `page_token`; it is empty on the last page."""
        request = pb.ListSecretsRequest(
            organization_id=organization_id, page_size=page_size, page_token=page_token
        )
        return self._unary("ListSecrets", self._stub.ListSecrets, request, pb.ListSecretsResponse)

    def iter_secrets(self, organization_id: str, *, page_size: int = 0) -> Iterator[pb.Secret]:
        """Every secret, newest first, fetching page after page."""
        token = ""
        while True:
            page = self.list_secrets(organization_id, page_size=page_size, page_token=token)
            yield from page.secrets
            token = page.next_page_token
            if not token:
                return

    def update_domain(self, organization_id: str, custom_domain: str) -> pb.Integration:
        """Sets the custom login domain (UNVERIFIED, with a verification
        code), or with `""` goes back to the default domain."""
        request = pb.UpdateDomainRequest(organization_id=organization_id, custom_domain=custom_domain)
        return self._unary("UpdateDomain", self._stub.UpdateDomain, request, pb.UpdateDomainResponse).integration

    def verify_domain(self, organization_id: str) -> pb.Integration:
        """Looks up TXT `_centralauth.<domain>`; `FAILED_PRECONDITION`, saying
        what to create, until it holds the verification code."""
        request = pb.VerifyDomainRequest(organization_id=organization_id)
        return self._unary("VerifyDomain", self._stub.VerifyDomain, request, pb.VerifyDomainResponse).integration

    def list_audit_events(
        self, organization_id: str, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListAuditEventsResponse:
        """One page of the audit trail, newest first; kept after deletion."""
        request = pb.ListAuditEventsRequest(
            organization_id=organization_id, page_size=page_size, page_token=page_token
        )
        return self._unary("ListAuditEvents", self._stub.ListAuditEvents, request, pb.ListAuditEventsResponse)

    def delete_integration(self, organization_id: str) -> None:
        """Deletes the integration: its secrets stop validating at once and
        its client ID is never issued again."""
        request = pb.DeleteIntegrationRequest(organization_id=organization_id)
        self._unary("DeleteIntegration", self._stub.DeleteIntegration, request, pb.DeleteIntegrationResponse)

    # -- the gateway's calls (validator token) -------------------------------

    def validate_client(
        self, client_id: str, client_secret: str, remote_address: str | None = None
    ) -> pb.ValidateClientResponse:
        """Checks a client ID and secret pair: `valid` is true, with the
        organization and its login domain, only for the active secret; any
        other pair is `valid: false`, which is final. `remote_address` is the
        IP address of whoever presented the pair; send it so that a flood
        from elsewhere cannot spend this client's budget of failures.
        `RESOURCE_EXHAUSTED` and `UNAVAILABLE` are worth a retry with
        backoff."""
        request = pb.ValidateClientRequest(
            client_id=client_id,
            client_secret=client_secret,
            remote_address=remote_address or "",
        )
        return self._unary(
            "ValidateClient", self._stub.ValidateClient, request, pb.ValidateClientResponse, sent_secret=client_secret
        )

    def watch_integrations(
        self, organization_id: str = "", *, timeout: float | None = None
    ) -> Generator[pb.WatchIntegrationsResponse, None, None]:
        """Every committed change, as a stream: first `CHANGE_KIND_RESYNC`,
        then one message per change (and `RESYNC` again whenever changes may
        have been missed). `organization_id=""` watches every organization.

        A stream is meant to stay open, so it has no deadline unless
        `timeout` (seconds) gives one; stop it by closing the iterator or
        the client."""
        request = pb.WatchIntegrationsRequest(organization_id=organization_id)
        stream = self._stub.WatchIntegrations(request, timeout=timeout, metadata=self._metadata)
        try:
            for message in stream:
                yield message
        except grpc.RpcError as err:
            raise _to_error("WatchIntegrations", err, None) from None
        finally:
            stream.cancel()

    # -- plumbing ------------------------------------------------------------

    def _unary(
        self,
        method: str,
        call: Callable[..., Any],
        request: Message,
        response: type[R],
        *,
        sent_secret: str | None = None,
    ) -> R:
        # The generated stub is untyped: `response` names what it answers.
        try:
            return cast(R, call(request, timeout=self._timeout, metadata=self._metadata))
        except grpc.RpcError as err:
            # `from None`: the original RpcError's text would repeat the
            # details unscrubbed in a traceback.
            raise _to_error(method, err, sent_secret) from None


def _to_error(method: str, err: grpc.RpcError, sent_secret: str | None) -> IntegrationError:
    code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else None) or ""
    # The service never echoes a value, but a proxy in between might; the
    # one value this call sent is the one that could show up.
    if sent_secret:
        details = details.replace(sent_secret, _REDACTED)
    request_id = None
    if isinstance(err, grpc.Call):
        request_id = _find(err.trailing_metadata(), _REQUEST_ID) or _find(
            err.initial_metadata(), _REQUEST_ID
        )
    return IntegrationError(method, code, details, request_id)


def _find(metadata: Metadata | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None
