"""Real TLS handshakes: who gets in, and what the handler sees."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imprint.settings import Settings
from tests.integration.conftest import Service, foreign_credentials, start_service


def test_health_over_https_with_our_root(service: Service) -> None:
    with service.client() as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_server_certificate_is_not_trusted_without_our_root(service: Service) -> None:
    with (
        httpx.Client(base_url=service.base_url, verify=True, timeout=5) as client,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        client.get("/healthz")


def test_client_certificate_from_our_ca_is_seen_by_the_handler(service: Service) -> None:
    credentials = service.device_credentials("sensor-0042")
    with service.client(cert=credentials) as client:
        body = client.get("/api/v1/whoami").json()
    seen = body["client_certificate"]
    assert seen["subject"] == "CN=sensor-0042"
    assert seen["source"] == "tls"
    assert seen["issuer"] == service.runtime.authority.material.issuing.subject.rfc4514_string()


def test_connection_without_client_certificate_is_allowed(service: Service) -> None:
    with service.client() as client:
        body = client.get("/api/v1/whoami").json()
    assert body == {"client_certificate": None, "api_key": None, "kind": None, "name": None}


def test_client_certificate_from_another_ca_is_refused_over_http(
    service: Service, tmp_path: Path
) -> None:
    """The handshake lets the chain through; the application refuses it with a reason."""
    credentials = foreign_credentials(tmp_path, "intruder")
    with service.client(cert=credentials) as client:
        response = client.get("/api/v1/whoami")
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "issuer_unknown"


def test_a_route_that_reads_no_certificate_ignores_a_foreign_one(
    service: Service, tmp_path: Path
) -> None:
    """Only routes that use the client certificate judge it: a public one answers."""
    credentials = foreign_credentials(tmp_path, "bystander")
    with service.client(cert=credentials) as client:
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "versions",
    [
        pytest.param(["--tlsv1.3"], id="tls1.3"),
        pytest.param(["--tlsv1.2", "--tls-max", "1.2"], id="tls1.2"),
    ],
)
def test_a_client_that_would_resume_its_session_is_still_seen_by_its_certificate(
    service: Service, versions: list[str]
) -> None:
    """curl keeps a session and offers it on its next connection. A session resumed
    from a ticket carries no certificate chain, so the server resumes none: each
    connection is a full handshake and the handler sees the certificate every time."""
    cert, key = service.device_credentials("sensor-reconnecting")
    url = f"{service.base_url}/api/v1/whoami"
    result = subprocess.run(
        ["curl", "-sS", "-v", "--cacert", str(service.root_cert), "--cert", str(cert),
         "--key", str(key), *versions, "-H", "Connection: close", url, url, "-w", "\\n"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("SSL connection using") == 2  # two connections, two handshakes
    answers = [json.loads(line) for line in result.stdout.splitlines() if line]
    seen = [(a["client_certificate"] or {}).get("subject") for a in answers]
    assert seen == ["CN=sensor-reconnecting"] * 2


@pytest.mark.parametrize(
    "offer",
    [pytest.param([], id="ticket"), pytest.param(["-no_ticket"], id="session-id")],
)
def test_the_server_resumes_no_tls_1_2_session(service: Service, offer: list[str]) -> None:
    """openssl s_client -reconnect offers its first session five more times, from a
    ticket or by its session id: each connection is new."""
    cert, key = service.device_credentials("sensor-s-client")
    port = service.base_url.rsplit(":", 1)[1]
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
         str(service.root_cert), "-cert", str(cert), "-key", str(key), "-tls1_2",
         "-reconnect", *offer],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    out = result.stdout
    assert out.count("New, TLSv1.2") == 6, out
    assert "Reused," not in out


@pytest.fixture
def proxied_service(settings: Settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    trusted = settings.model_copy(
        update={"server": settings.server.model_copy(update={"trusted_proxies": ["127.0.0.1/32"]})}
    )
    yield from start_service(trusted, tmp_path)


def _forwarded(path: Path) -> dict[str, str]:
    leaf_pem = (
        path.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    )
    return {"X-Client-Cert": quote(leaf_pem)}


def test_trusted_proxy_may_forward_a_client_certificate(proxied_service: Service) -> None:
    cert, _key = proxied_service.device_credentials("behind-proxy")
    with proxied_service.client() as client:
        body = client.get("/api/v1/whoami", headers=_forwarded(cert)).json()
    assert body["client_certificate"]["subject"] == "CN=behind-proxy"
    assert body["client_certificate"]["source"] == "proxy"


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(lambda chain: _b64(chain[0]), id="haproxy-leaf-base64-der"),
        pytest.param(lambda chain: quote(",".join(map(_b64, chain)), safe=""), id="traefik-chain"),
        pytest.param(
            lambda chain: quote(
                "".join(
                    x509.load_der_x509_certificate(der)
                    .public_bytes(serialization.Encoding.PEM)
                    .decode()
                    for der in chain
                )
            ),
            id="alb-pem-chain",
        ),
    ],
)
def test_trusted_proxy_may_forward_a_certificate_in_each_proxys_form(
    proxied_service: Service, form: Callable[[list[bytes]], str]
) -> None:
    cert, _key = proxied_service.device_credentials("behind-proxy-form")
    chain = [
        c.public_bytes(serialization.Encoding.DER)
        for c in x509.load_pem_x509_certificates(cert.read_bytes())
    ]
    assert len(chain) == 3  # the leaf, then imprint's issuing CA and root
    with proxied_service.client() as client:
        body = client.get("/api/v1/whoami", headers={"X-Client-Cert": form(chain)}).json()
    assert body["client_certificate"]["subject"] == "CN=behind-proxy-form"
    assert body["client_certificate"]["source"] == "proxy"


def test_a_forwarded_certificate_of_ours_is_refused_when_revoked_or_expired(
    proxied_service: Service,
) -> None:
    """The gate does not look at time or revocation, on the connection or from a proxy:
    the identity does, the same for both."""
    revoked, _key = proxied_service.device_credentials("forwarded-revoked")
    leaf = x509.load_pem_x509_certificate(revoked.read_bytes())
    proxied_service.runtime.authority.revoke(
        format(leaf.serial_number, "x"), x509.ReasonFlags.key_compromise
    )
    expiring, _key = proxied_service.device_credentials("forwarded-expired")
    with proxied_service.client() as client:
        first = client.get("/api/v1/whoami", headers=_forwarded(revoked))
        proxied_service.clock.advance(timedelta(days=400))  # past the device profile's year
        second = client.get("/api/v1/whoami", headers=_forwarded(expiring))
    assert (first.status_code, first.json()["code"]) == (403, "certificate_revoked")
    assert (second.status_code, second.json()["code"]) == (403, "certificate_expired")


def test_forwarded_certificate_from_an_untrusted_address_is_ignored(service: Service) -> None:
    cert, _key = service.device_credentials("spoofed")
    with service.client() as client:
        body = client.get("/api/v1/whoami", headers=_forwarded(cert)).json()
    assert body["client_certificate"] is None


def test_trusted_proxy_cannot_forward_a_foreign_certificate(
    proxied_service: Service, tmp_path: Path
) -> None:
    cert, _key = foreign_credentials(tmp_path, "forged")
    with proxied_service.client() as client:
        response = client.get("/api/v1/whoami", headers=_forwarded(cert))
    # Refused as the same certificate on imprint's own connection is, told where a
    # missing intermediate belongs (a proxy may forward the leaf alone).
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "issuer_unknown"
    assert "forwarded by a proxy" in response.json()["detail"]


@pytest.mark.parametrize(
    "header",
    ["not%20a%20cert", "AAAA", base64.b64encode(b"0" * 40).decode(), "-----BEGIN%20CERT"],
)
def test_garbage_forwarded_certificate_is_a_clear_error(
    proxied_service: Service, header: str
) -> None:
    with proxied_service.client() as client:
        response = client.get("/api/v1/whoami", headers={"X-Client-Cert": header})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "value_invalid"


@pytest.mark.both_databases
def test_revoked_client_certificate_is_refused_by_the_application(service: Service) -> None:
    cert, key = service.device_credentials("revoked-one")
    serial = format(x509.load_pem_x509_certificate(cert.read_bytes()).serial_number, "x")
    service.runtime.authority.revoke(serial, x509.ReasonFlags.key_compromise)
    with service.client(cert=(cert, key)) as client:
        response = client.get("/api/v1/whoami")
    assert response.status_code == 403
    assert response.json()["code"] == "certificate_revoked"
