"""Python client of CentralAuth's integration service.

`IntegrationClient` calls `centralauth.integration.v1.IntegrationService`;
a failed call raises `IntegrationError`. The generated messages are in
`centralauth_integration.pb` (`pb.Integration`, `pb.Secret`, `pb.SecretState`,
...), generated from proto/ by `clients/python/generate.py`.
"""

from .client import GeneratedSecret, IntegrationClient, IntegrationError, pb

__all__ = ["GeneratedSecret", "IntegrationClient", "IntegrationError", "pb"]
