"""`imprint import plgd-values`: the plgd DPS values from the seed, imported with the real
command line into a running imprint, then a device attests against the enrollment group
and gets the owner, the pre-shared key and a hub token."""

from __future__ import annotations

import subprocess
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from imprint.store.cache import TTL_SECONDS
from tests.e2e.conftest import run_imprint
from tests.integration.conftest import Service
from tests.integration.oauth_helpers import OWNER_CLAIM, client_token, verify
from tests.integration.test_x509_attestation import Manufacturer, signed_body

GROUP_ID = "98be12de-3991-4567-aeea-edd9a656e6df"
AUDIENCE = "https://api.example.com"

# The seed's "final configuration with mock oauth server", with a manufacturer chain made
# for this test in place of the seed's (long expired) MfgRootCA.
SEED_VALUES = """\
global:
  domain: "example.com"
  hubId: "d03a1bb4-0a77-428c-b78c-1c46efe6a38e"
  ownerClaim: "https://plgd.dev/owner"
mockoauthserver:
  enabled: true
  oauth:
    - name: "plgd.dps"
      clientID: "test"
      clientSecret: "test"
      grantType: "clientCredentials"
      scopes: ['openid']
      audience: "https://api.example.com"
      redirectURL: "https://mock.plgd.cloud/things"
    - name: "plgd.web"
      clientID: "test"
      clientSecret: "test"
      redirectURL: "https://mock.plgd.cloud/things"
      scopes: ['openid']
      useInUi: true
coapgateway:
  service:
    type: NodePort
    nodePort: 5684
deviceProvisioningService:
  image:
    dockerConfigSecret: |
      {
        "auths": {
          "ghcr.io": {
              "auth": "amty...CMFh3"
          }
        }
      }
  service:
    type: NodePort
    nodePort: 15684
  enrollmentGroups:
    - id: 98be12de-3991-4567-aeea-edd9a656e6df
      owner: "1" # for mockoauthserver
      preSharedKey: "{psk}" # must be 16 characters
      attestationMechanism:
        x509:
          certificateChain: |-
{chain}
      hub:
        authorization:
          provider:
            name: "plgd.dps"
            clientId: "test"
            clientSecret: "test"
"""


@pytest.fixture(scope="module")
def maker() -> Manufacturer:
    return Manufacturer.create("Mfg")


def write_values(
    path: Path,
    maker: Manufacturer,
    psk: str = "0123456789012345",
    chain_pem: list[str] | None = None,
) -> Path:
    chain = textwrap.indent("".join(chain_pem or maker.chain()).strip(), " " * 12)
    path.write_text(SEED_VALUES.replace("{chain}", chain).replace("{psk}", psk))
    return path


def imprint(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, on the running service's data directory and database."""
    return run_imprint(service.runtime.settings, *args)


def stored(service: Service) -> tuple[int, bool]:
    runtime = service.runtime
    clients = runtime.oauth_clients.find("test") is not None
    return len(runtime.enrollments.search(limit=1000)), clients


def attest(service: Service, maker: Manufacturer, name: str) -> dict[str, Any]:
    leaf, key = maker.line.idevid(name)
    body = signed_body(service, leaf, key, [maker.line.certificate])
    with service.client() as http:
        answer = http.post("/api/v1/provision", json=body)
    assert answer.status_code == 200, answer.text
    bundle: dict[str, Any] = answer.json()["bundle"]
    return bundle


@pytest.mark.slow
@pytest.mark.both_databases
def test_seed_values_import_and_a_device_gets_owner_psk_and_hub_token(
    service: Service, maker: Manufacturer
) -> None:
    values = write_values(service.workdir / "withMock.yaml", maker)

    dry = imprint(service, "import", "plgd-values", str(values), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"enrollment {GROUP_ID}: would be created" in dry.stdout
    assert stored(service) == (0, False)

    done = imprint(service, "import", "plgd-values", str(values))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "owner claim: https://plgd.dev/owner (global.ownerClaim and auth.owner_claim agree)",
        "oauth client test: created (plgd.dps and plgd.web (one client: same id and secret), "
        "client_credentials + authorization_code, audience https://api.example.com)",
        f"enrollment {GROUP_ID}: created (x509, owner 1, pre-shared key, hub provider "
        "plgd.dps via imprint's OAuth server)",
    ]
    again = imprint(service, "import", "plgd-values", str(values))
    assert again.returncode == 0, again.stderr
    assert f"enrollment {GROUP_ID}: unchanged" in again.stdout
    assert "oauth client test: unchanged" in again.stdout

    with service.admin() as admin:
        shown = admin.get(f"/api/v1/enrollments/{GROUP_ID}")
    assert shown.status_code == 200, shown.text
    group = shown.json()
    assert (group["mechanism"], group["owner"], group["has_pre_shared_key"]) == ("x509", "1", True)
    assert group["hub"]["authorization"]["provider"]["name"] == "plgd.dps"
    assert group["hub"]["authorization"]["provider"]["has_client_secret"] is True
    assert "client_secret" not in group["hub"]["authorization"]["provider"]

    bundle = attest(service, maker, "device-1")
    assert bundle["owner"] == "1"
    assert bundle["pre_shared_key"] == "0123456789012345"
    hub = bundle["tokens"]["hub"]
    claims = verify(service, hub["access_token"], audience=AUDIENCE)  # PyJWT + our JWKS
    assert claims[OWNER_CLAIM] == "1"
    assert claims["client_id"] == "test"
    assert claims["scope"] == "openid"
    # The imported client works on the token endpoint too.
    answer = client_token(service, "test", "test")
    assert answer.status_code == 200, answer.text

    # A changed file updates the group; the next device gets the new key.
    write_values(values, maker, psk="abcdefghijklmnop")
    updated = imprint(service, "import", "plgd-values", str(values))
    assert updated.returncode == 0, updated.stderr
    assert f"enrollment {GROUP_ID}: updated (pre_shared_key)" in updated.stdout
    # The server learns of a change made by another process (this CLI) within the read
    # cache's bound (docs/configuration.md), not at once: move the server's clock past it.
    service.clock.advance(timedelta(seconds=TTL_SECONDS))
    assert attest(service, maker, "device-2")["pre_shared_key"] == "abcdefghijklmnop"


@pytest.mark.slow
def test_bad_values_are_refused_with_the_place_and_store_nothing(
    service: Service, maker: Manufacturer, tmp_path: Path
) -> None:
    good = write_values(tmp_path / "good.yaml", maker).read_text()
    bad = {
        "owner": (
            good.replace('      owner: "1" # for mockoauthserver\n', ""),
            "deviceProvisioningService.enrollmentGroups.0.owner",
        ),
        "chain": (
            write_values(tmp_path / "x", maker, chain_pem=maker.chain()[:1]).read_text(),
            "deviceProvisioningService.enrollmentGroups.0: x509.certificate_chain must end "
            "with a self-signed root",
        ),
        "authority": (
            good.replace('clientId: "test"', 'authority: "https://auth.example.com"', 1),
            "provider.authority: imprint does not discover token endpoints",
        ),
        "client": (
            good.replace('grantType: "clientCredentials"', 'grantType: "password"'),
            "mockoauthserver.oauth.0: grantType",
        ),
        "yaml": ("global: [", "not YAML"),
    }
    for reason, (text, message) in bad.items():
        path = tmp_path / f"{reason}.yaml"
        path.write_text(text)
        result = imprint(service, "import", "plgd-values", str(path))
        assert result.returncode == 1, reason
        assert message in " ".join(result.stderr.split()), (reason, result.stderr)
        assert "Traceback" not in result.stderr
    assert stored(service) == (0, False)


@pytest.mark.slow
def test_a_different_owner_claim_is_reported_with_how_to_set_it(
    service: Service, maker: Manufacturer
) -> None:
    values = write_values(service.workdir / "values.yaml", maker)
    values.write_text(values.read_text().replace('"https://plgd.dev/owner"', '"owner-id"'))
    result = imprint(service, "import", "plgd-values", str(values), "--dry-run")
    assert result.returncode == 0, result.stderr
    warning = " ".join(result.stderr.split())
    assert "global.ownerClaim is owner-id" in warning
    assert "IMPRINT_AUTH__OWNER_CLAIM=owner-id" in warning
