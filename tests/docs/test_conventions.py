"""The conventions the documentation runner holds pages to: what it runs, what it
compares, what it lets vary, and that a changed output or a malformed marker fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.pages import PageError, read_page
from tests.docs.runner import from_port, output_matches, to_port

PAGE = """# A page

<!-- docs-test: server-config -->
```yaml
auth:
  self_registration: true
```

```console
$ export IMPRINT_TOKEN="$(cat data/admin-token)"
$ curl -s https://127.0.0.1:8443/healthz \\
    -H 'Accept: application/json'
{"status":"ok"}
$ imprint regkey create simpsons     # exits 1
error: enrollment 'simpsons' has a registration key already; rotate it
```

```sh
jq -n '{a: 1}'
```

```text
{
  "a": 1
}
```

<!-- docs-test: skip (needs a hardware token) -->
```sh
pkcs11-tool --list-slots
```

```python
print("not a shell block")
```
"""


def test_a_page_is_read_into_its_steps_in_order(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text(PAGE)
    page = read_page(path)

    assert page.server_config == ["auth:\n  self_registration: true"]
    assert page.skipped == [(29, "needs a hardware token")]  # the fence line
    export, health, regkey, script = page.steps
    assert export.expected is None
    assert export.exit_status == 0
    assert health.text.endswith("-H 'Accept: application/json'")
    assert health.expected == ('{"status":"ok"}',)
    assert regkey.exit_status == 1
    assert script.script
    assert script.expected == ("{", '  "a": 1', "}")


@pytest.mark.parametrize(
    "marker", ["<!-- docs-test: skip -->", "<!-- docs-test: skip () -->", "<!-- docs-test: ok -->"]
)
def test_a_marker_without_a_reason_or_unknown_is_refused(tmp_path: Path, marker: str) -> None:
    path = tmp_path / "page.md"
    path.write_text(f"{marker}\n```sh\ntrue\n```\n")
    with pytest.raises(PageError):
        read_page(path)


def test_values_that_vary_match_by_their_shape() -> None:
    shown = [
        "issued serial 1acf8218a33dfa9181d43d637f0b5a954, valid until 2026-12-01 12:32 UTC",
        '{"id": "075f8f76-b31f-4957-a36b-c936362c914e", "key": "HQ481047-1JWORF43"}',
        "Last Update: Nov 24 12:32:27 2026 GMT",
    ]
    actual = (
        "issued serial 1ff00aa93b2c4d5e6f708192a3b4c5d6e, valid until 2027-03-03 17:53 UTC\n"
        '{"id": "ff732d56-82e9-4636-8a96-acb3fe81791f", "key": "KXI1RQ6R-I72ABQ7M"}\n'
        "Last Update: Dec  3 17:08:46 2026 GMT\n"
    )
    assert output_matches(shown, actual)


def test_placeholders_and_elided_lines() -> None:
    shown = ["sensor-17: created, valid until …", "...", "<n> entries", "…"]
    assert output_matches(shown, "sensor-17: created, valid until soon\na\nb\n12 entries\nx\n")
    assert output_matches(shown, "sensor-17: created, valid until soon\n12 entries\n")
    assert not output_matches(shown, "sensor-18: created, valid until soon\n12 entries\n")


def test_a_changed_word_or_a_missing_line_fails() -> None:
    shown = ['{"status":"approved","device_id":"th-0001"}', "device.pem: OK"]
    assert output_matches(shown, '{"status":"approved","device_id":"th-0001"}\ndevice.pem: OK\n')
    assert not output_matches(shown, '{"status":"pending","device_id":"th-0001"}\ndevice.pem: OK')
    assert not output_matches(shown, '{"status":"approved","device_id":"th-0001"}\n')
    assert not output_matches(shown, '{"status":"approved","device_id":"th-0001"}\nOK\nextra')


def test_table_widths_and_openssl_progress_do_not_count() -> None:
    shown = ["┏━━━━┳━━━━━━┓", "┃ id ┃ name ┃", "Certificate request self-signature ok"]
    actual = (
        "┏━━━━━━━━┳━━━━┓\n┃ id     ┃ name ┃\n...+++++*...+\n-----\n"
        "Certificate request self-signature ok\n"
    )
    assert output_matches(shown, actual)


def test_the_documented_port_stands_for_the_test_servers() -> None:
    command = "curl https://127.0.0.1:8443/healthz https://localhost:8443/"
    assert (
        to_port(command, 40123) == "curl https://127.0.0.1:40123/healthz https://localhost:40123/"
    )
    workdir = Path("/tmp/page")
    shown = from_port(
        "at https://127.0.0.1:40123, port=40123, file /tmp/page/data/x", 40123, workdir
    )
    assert shown == "at https://127.0.0.1:8443, port=8443, file data/x"
