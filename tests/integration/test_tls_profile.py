"""The server's TLS matches Mozilla's "intermediate" profile, checked with openssl s_client,
and every HTTPS response carries Strict-Transport-Security."""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.conftest import Service


def s_client(service: Service, *options: str) -> str:
    port = service.base_url.rsplit(":", 1)[1]
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
         str(service.root_cert), "-brief", *options],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return result.stdout + result.stderr


def negotiated(output: str) -> bool:
    return "CONNECTION ESTABLISHED" in output


def test_tls_1_2_offers_no_cbc_suite(service: Service) -> None:
    cbc = ":".join(
        [
            "ECDHE-ECDSA-AES128-SHA",
            "ECDHE-ECDSA-AES256-SHA",
            "ECDHE-ECDSA-AES128-SHA256",
            "ECDHE-ECDSA-AES256-SHA384",
            "AES128-SHA",
            "AES256-SHA",
            "AES128-GCM-SHA256",  # AEAD, but no forward secrecy
        ]
    )
    out = s_client(service, "-tls1_2", "-cipher", cbc)
    assert not negotiated(out), out


def temp_key(output: str) -> str:
    return output.split("Server Temp Key: ", 1)[1].split("\n", 1)[0]


@pytest.mark.parametrize("group", ["X448", "P-521", "ffdhe2048"])
def test_tls_1_3_refuses_groups_outside_the_profile(service: Service, group: str) -> None:
    out = s_client(service, "-tls1_3", "-groups", group)
    assert not negotiated(out), out


@pytest.mark.parametrize(
    ("group", "shown"), [("X25519", "X25519"), ("P-256", "prime256v1"), ("P-384", "secp384r1")]
)
def test_tls_1_3_accepts_the_profile_groups(service: Service, group: str, shown: str) -> None:
    out = s_client(service, "-tls1_3", "-groups", group)
    assert negotiated(out), out
    assert shown in temp_key(out), out


def test_tls_1_2_never_picks_x448_or_p521(service: Service) -> None:
    # TLS 1.2 clients must offer the curve of the server's ECDSA certificate (P-256).
    out = s_client(service, "-tls1_2", "-groups", "X448:P-521:P-256")
    assert negotiated(out), out
    assert "prime256v1" in temp_key(out), out
    out = s_client(service, "-tls1_2", "-groups", "X448:P-521:X25519:P-256")
    assert "X25519" in temp_key(out), out


def test_tls_1_2_negotiates_ecdhe_with_aead(service: Service) -> None:
    out = s_client(service, "-tls1_2")
    assert negotiated(out), out
    suite = out.split("Ciphersuite: ", 1)[1].split()[0]
    assert suite.startswith("ECDHE-"), suite
    assert "GCM" in suite or "CHACHA20" in suite, suite


def test_tls_1_1_is_refused(service: Service) -> None:
    out = s_client(service, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert not negotiated(out), out


def test_every_https_response_carries_hsts(service: Service) -> None:
    with service.client() as client:
        for path in ("/healthz", "/no-such-page", "/api/v1/whoami", "/console/"):
            response = client.get(path)
            assert response.headers["strict-transport-security"] == "max-age=63072000", path
        too_big = client.get("/healthz", headers={"X-Padding": "a" * 20000})
    assert too_big.status_code == 431
    assert too_big.headers["strict-transport-security"] == "max-age=63072000"
