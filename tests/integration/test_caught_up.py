"""Each request begins having heard of what another process committed before it (a
second worker, the CLI), without waiting for the listener's next look."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import Service
from tests.integration.test_cache_coherence_sqlite import asleep

_REMOVE_IN_ANOTHER_PROCESS = """
import sys

from imprint.store.api_keys import SqlApiKeyStore
from imprint.store.db import create_engine

engine = create_engine(sys.argv[1])
SqlApiKeyStore(engine).remove(sys.argv[2])
engine.dispose()
"""


def test_a_key_removed_by_another_process_is_refused_by_the_next_request(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    asleep(service.runtime.engine, monkeypatch)  # the listener's thread looks no more
    with service.admin() as admin:
        made = admin.post("/api/v1/api-keys", json={"name": "elsewhere"})
        assert made.status_code == 201, made.text
    headers = {"Authorization": f"Bearer {made.json()['token']}"}
    with service.client(headers=headers) as client:
        for _ in range(2):  # checked, and kept by the key cache for its TTL (2 s)
            assert client.get("/api/v1/certificates").status_code == 200
        removed = subprocess.run(
            [sys.executable, "-c", _REMOVE_IN_ANOTHER_PROCESS,
             service.runtime.settings.database_url(), "elsewhere"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert removed.returncode == 0, removed.stderr
        # The request's own look found the change: refused at once, not after the TTL.
        assert client.get("/api/v1/certificates").status_code == 401
