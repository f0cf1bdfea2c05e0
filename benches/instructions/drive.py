"""Makes one integration with an active secret, then checks it N times, one
call after another, through the Python client (clients/python).

    drive.py HOST:PORT N
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python" / "src"))

from centralauth_integration import IntegrationClient  # noqa: E402

target, count = sys.argv[1], int(sys.argv[2])
# The server starts slowly under valgrind: wait for it.
for _ in range(600):
    try:
        client = IntegrationClient(target, timeout=30)
        client.create_integration("org-instructions")
        break
    except Exception:  # not listening yet
        time.sleep(0.5)
else:
    sys.exit(f"no server at {target}")
generated = client.generate_secret("org-instructions")
client.activate_secret("org-instructions", generated.client_secret)
client_id = client.get_integration("org-instructions").client_id
# Warm: verified once, then answered from the cache.
for _ in range(20):
    assert client.validate_client(client_id, generated.client_secret).valid
for _ in range(count):
    client.validate_client(client_id, generated.client_secret)
