#!/usr/bin/env python3
"""The Integration tab's whole flow against a running integration service.

    INTEGRATION_ADMIN_TOKEN=... INTEGRATION_VALIDATOR_TOKEN=... \\
        python clients/python/examples/flow.py --target 127.0.0.1:50051

Creates the integration of a fresh organization, generates a secret,
activates it "later" (by entering its value), validates it, rotates to a
second secret and checks that the new one validates and the old one is
refused. Each step is printed in plain words. No secret value is ever
printed, not even the "shown once" one: only its hint, the last four
characters the dashboard shows next to it. Exits non-zero on anything
unexpected.

The tokens may be left out when the server runs without tokens on loopback.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

try:
    from centralauth_integration import IntegrationClient, IntegrationError, pb
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from centralauth_integration import IntegrationClient, IntegrationError, pb


class Surprise(Exception):
    """The service answered something the flow does not expect."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Surprise(what)


def step(text: str) -> None:
    print(f"- {text}", flush=True)


def run(target: str, admin_token: str | None, validator_token: str | None, timeout: float) -> None:
    organization_id = f"example-{secrets.token_hex(6)}"
    with (
        IntegrationClient(target, admin_token, timeout=timeout, actor="flow.py") as dashboard,
        IntegrationClient(target, validator_token, timeout=timeout) as gateway,
    ):
        integration = dashboard.create_integration(organization_id)
        client_id = integration.client_id
        step(
            f"created the integration of {organization_id}: client ID {client_id}, "
            f"login domain {integration.domain}, no secret yet"
        )
        expect(not integration.HasField("active_secret"), "a new integration already has a secret")

        first = dashboard.generate_secret(organization_id)
        step(
            f"generated secret {first.secret.id} (ending in {first.hint}); it is pending, "
            "and its value is shown once (not printed here)"
        )
        expect(first.secret.state == pb.SECRET_STATE_PENDING, "the new secret is not pending")

        # "Activate later": a person enters the value they were shown.
        entered = first.client_secret
        integration = dashboard.activate_secret(organization_id, entered)
        expect(
            integration.active_secret.id == first.secret.id,
            "activation did not make the entered secret the active one",
        )
        step(f"activated secret {first.secret.id} by entering its value")

        answer = gateway.validate_client(client_id, first.client_secret, remote_address="127.0.0.1")
        expect(answer.valid, "the active secret does not validate")
        expect(answer.organization_id == organization_id, "validation named another organization")
        step(f"the gateway's check accepts it: organization {answer.organization_id}, domain {answer.domain}")

        second = dashboard.generate_secret(organization_id)
        step(f"rotation: generated secret {second.secret.id} (ending in {second.hint}), pending")
        integration = dashboard.activate_secret(organization_id, second.client_secret)
        expect(integration.active_secret.id == second.secret.id, "the second secret is not active")
        step(f"activated secret {second.secret.id}; secret {first.secret.id} is revoked")

        answer = gateway.validate_client(client_id, second.client_secret, remote_address="127.0.0.1")
        expect(answer.valid, "the new secret does not validate")
        step("the gateway's check accepts the new secret")

        answer = gateway.validate_client(client_id, first.client_secret, remote_address="127.0.0.1")
        expect(not answer.valid, "the old secret still validates after the rotation")
        step("the gateway's check refuses the old secret (valid: false)")

        states = {s.id: pb.SecretState.Name(s.state) for s in dashboard.iter_secrets(organization_id)}
        expect(
            states == {second.secret.id: "SECRET_STATE_ACTIVE", first.secret.id: "SECRET_STATE_REVOKED"},
            f"unexpected history: {states}",
        )
        step("the history shows the new secret active and the old one revoked")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:50051", help="host:port of the service")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of each call, seconds")
    args = parser.parse_args()
    try:
        run(
            args.target,
            os.environ.get("INTEGRATION_ADMIN_TOKEN") or None,
            os.environ.get("INTEGRATION_VALIDATOR_TOKEN") or None,
            args.timeout,
        )
    except IntegrationError as error:
        print(f"failed: {error}", file=sys.stderr)
        return 1
    except Surprise as surprise:
        print(f"unexpected: {surprise}", file=sys.stderr)
        return 1
    print("the flow went as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
