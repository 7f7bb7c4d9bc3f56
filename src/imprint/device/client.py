"""The connection to an imprint server: HTTPS with keep-alive, verified, retried.

The server's certificate is always verified: against the CA file or trust anchors you
give (imprint's root, from ``imprint ca show`` or ``/ca/chain.pem`` fetched once over
a trusted path), or else against the system's trust store (a server behind a proxy
with a public certificate). A client certificate for mutual TLS is optional.

Finding the server: pass its URL (:meth:`ImprintClient.from_url`). Discovery on the
local network (DNS-SD) is planned; it will produce the same URL and feed it here.
"""

from __future__ import annotations

import json
import os
import random
import ssl
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from imprint import __version__
from imprint.device.errors import ProtocolError, RequestRefused, ServiceUnavailable
from imprint.device.keys import PrivateKey, chain_pem, load_certificates, load_private_key
from imprint.device.retry import Clock, RetryPolicy, SystemClock, send_with_retry

__all__ = [
    "DIRECTORY_PATH",
    "ClientIdentity",
    "Directory",
    "ImprintClient",
    "Response",
    "WaitPolicy",
]

DIRECTORY_PATH = "/.well-known/imprint"
PROVISION_PATH = "/api/v1/provision"
RENEW_PATH = "/api/v1/renew"
MAX_BODY = 1 << 20  # no answer of the device protocol comes near a megabyte


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """A certificate (leaf first, then intermediates) and its key, for mutual TLS."""

    chain: tuple[x509.Certificate, ...]
    key: PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValueError("a client identity needs its certificate")

    @classmethod
    def from_files(
        cls, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
    ) -> ClientIdentity:
        """Load a PEM certificate chain and its private key.

        Raises:
            OSError: a file cannot be read.
            ValueError: not a certificate or not a usable key.
        """
        return cls(tuple(load_certificates(cert_file)), load_private_key(key_file))


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """How long to keep asking while a request is pending (202), e.g. awaiting approval.

    The device waits what the server's Retry-After says, but never longer than
    ``max_interval`` at a time nor ``max_total`` in all.
    """

    max_total: float = 900.0
    max_interval: float = 300.0

    def __post_init__(self) -> None:
        if self.max_total < 0 or self.max_interval <= 0:
            raise ValueError("max_total must not be negative and max_interval must be positive")


@dataclass(frozen=True, slots=True)
class Directory:
    """What ``/.well-known/imprint`` says: the server's endpoints, CA chain and services."""

    version: str
    endpoints: Mapping[str, str]
    ca_chain: tuple[x509.Certificate, ...]
    trust_anchors: tuple[x509.Certificate, ...]
    services: Mapping[str, str]
    mechanisms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Response:
    """A final answer of the device protocol: 200 or 202 with its JSON body."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str]  # names in lower case


def _normalise(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme != "https":
        raise ValueError("the imprint server URL must start with https://")
    if not parts.hostname:
        raise ValueError("the imprint server URL needs a host name")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("the imprint server URL takes no user, query or fragment")
    path = parts.path.rstrip("/")
    if path.endswith(DIRECTORY_PATH):
        path = path[: -len(DIRECTORY_PATH)]
    return f"https://{parts.netloc}{path}"


def _trust_pem(
    ca_file: str | os.PathLike[str] | None,
    trust_anchors: str | Sequence[x509.Certificate] | None,
) -> str | None:
    if ca_file is not None and trust_anchors is not None:
        raise ValueError("give ca_file or trust_anchors, not both")
    if ca_file is not None:
        return chain_pem(load_certificates(ca_file))
    if trust_anchors is None:
        return None
    if isinstance(trust_anchors, str):
        return chain_pem(x509.load_pem_x509_certificates(trust_anchors.encode("ascii")))
    if not trust_anchors:
        raise ValueError("trust_anchors is empty")
    return chain_pem(trust_anchors)


def _load_identity(context: ssl.SSLContext, identity: ClientIdentity) -> None:
    """Hand an in-memory certificate and key to ``ssl``, which only reads files.

    They go to a private temporary directory for the moment of loading; the key is
    encrypted there with a random one-time password.
    """
    password = os.urandom(32).hex().encode("ascii")
    key_pem = identity.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="imprint-tls-") as directory:
        cert_path, key_path = Path(directory, "cert.pem"), Path(directory, "key.pem")
        for path, data in ((cert_path, chain_pem(identity.chain).encode()), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_path, key_path, password=password)


def _tls_context(trust_pem: str | None, identity: ClientIdentity | None) -> ssl.SSLContext:
    context = (
        ssl.create_default_context(cadata=trust_pem)
        if trust_pem is not None
        else ssl.create_default_context()
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None:
        _load_identity(context, identity)
    return context


def _json_body(response: httpx.Response) -> dict[str, Any]:
    if len(response.content) > MAX_BODY:
        raise ProtocolError(f"the answer is larger than {MAX_BODY} bytes")
    try:
        body = json.loads(response.content)
    except ValueError:
        raise ProtocolError(f"the server answered {response.status_code} without JSON") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"the server answered {response.status_code} with a non-object")
    return body


def _refusal(response: httpx.Response) -> RequestRefused:
    try:
        body = _json_body(response)
    except ProtocolError:
        body = {}
    code = body.get("code")
    detail = body.get("detail")
    return RequestRefused(
        response.status_code,
        code if isinstance(code, str) else f"http_{response.status_code}",
        detail[:500] if isinstance(detail, str) else response.reason_phrase,
    )


class ImprintClient:
    """A keep-alive HTTPS connection to one imprint server.

    Use it as a context manager, or call :meth:`close`::

        with ImprintClient("https://imprint.example:8443", ca_file="root.pem") as client:
            bundle = provision_oob_secret(client, "sensor-17", secret)

    Args:
        base_url: ``https://host[:port][/prefix]``.
        ca_file: PEM file with the CA(s) that issued the server's certificate.
        trust_anchors: the same, as PEM text or certificates. Neither: the system store.
        client_cert: a certificate to show in the TLS handshake, as a
            :class:`ClientIdentity` or a ``(certificate file, key file)`` pair.
        timeout: seconds for connecting and for each read.
        retry: backoff for connection errors, 5xx and 429.
        wait: how long to keep asking while a request is pending.
        clock: time and sleep (tests pass a fake).
        rng: randomness for the backoff jitter.

    Raises:
        ValueError: a URL that is not https, or unusable trust or client certificate.
        OSError: a file cannot be read.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        trust_anchors: str | Sequence[x509.Certificate] | None = None,
        client_cert: ClientIdentity
        | tuple[str | os.PathLike[str], str | os.PathLike[str]]
        | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        wait: WaitPolicy | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._base_url = _normalise(base_url)
        self._trust_pem = _trust_pem(ca_file, trust_anchors)
        self._identity = (
            ClientIdentity.from_files(*client_cert)
            if isinstance(client_cert, tuple)
            else client_cert
        )
        self._timeout = timeout
        self.retry = retry or RetryPolicy()
        self.wait = wait or WaitPolicy()
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.SystemRandom()
        self._directory: Directory | None = None
        self._http = httpx.Client(
            base_url=self._base_url,
            verify=_tls_context(self._trust_pem, self._identity),
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": f"imprint-device/{__version__}"},
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ImprintClient:
        """A client for the server at ``url``.

        Accepts ``host``, ``host:port``, ``https://host:port`` or the directory URL
        ``https://host:port/.well-known/imprint``; a bare host means https.

        Args:
            url: where the server is.
            **options: as for :class:`ImprintClient`.
        """
        text = url.strip()
        if "://" not in text:
            text = f"https://{text}"
        return cls(text, **options)

    @property
    def base_url(self) -> str:
        """``https://host[:port][/prefix]``, without a trailing slash."""
        return self._base_url

    @property
    def trust_pem(self) -> str | None:
        """The CA certificates the server's certificate is checked against (None: system)."""
        return self._trust_pem

    @property
    def client_identity(self) -> ClientIdentity | None:
        return self._identity

    def with_client_certificate(
        self, chain: Sequence[x509.Certificate], key: PrivateKey
    ) -> ImprintClient:
        """Another client to the same server, with the same settings, showing ``chain``.

        Mutual TLS authenticates the connection, so each identity has its own; close
        the new client when done.
        """
        client = ImprintClient(
            self._base_url,
            trust_anchors=self._trust_pem,
            client_cert=ClientIdentity(tuple(chain), key),
            timeout=self._timeout,
            retry=self.retry,
            wait=self.wait,
            clock=self.clock,
            rng=self.rng,
        )
        client._directory = self._directory
        return client

    def directory(self, *, refresh: bool = False) -> Directory:
        """The server's directory, fetched once and then cached.

        Raises:
            RequestRefused, ServiceUnavailable, ProtocolError: as for every request.
        """
        if self._directory is not None and not refresh:
            return self._directory
        body = self.request("GET", DIRECTORY_PATH).body
        try:
            directory = Directory(
                version=str(body["version"]),
                endpoints={str(k): str(v) for k, v in body["endpoints"].items()},
                ca_chain=tuple(x509.load_pem_x509_certificates(body["ca_chain"].encode())),
                trust_anchors=tuple(
                    x509.load_pem_x509_certificate(p.encode()) for p in body["trust_anchors"]
                ),
                services={str(k): str(v) for k, v in body.get("services", {}).items()},
                mechanisms=tuple(str(m) for m in body.get("mechanisms", [])),
            )
        except (KeyError, AttributeError, TypeError, ValueError):
            raise ProtocolError("the directory is not what an imprint server publishes") from None
        self._directory = directory
        return directory

    def endpoint(self, name: str, default_path: str) -> str:
        """The URL the server calls ``name`` in its directory (the audience of signed
        requests), or ``default_path`` under the base URL when it names none."""
        return self.directory().endpoints.get(name, f"{self._base_url}{default_path}")

    def request(
        self,
        method: str,
        path: str,
        build: Callable[[], tuple[Mapping[str, Any] | None, Mapping[str, str]]] | None = None,
    ) -> Response:
        """Send a request, retrying what may succeed later, and read its JSON answer.

        Args:
            method: ``GET`` or ``POST``.
            path: below the base URL, e.g. ``/api/v1/provision``.
            build: makes ``(json body, headers)`` afresh for each attempt.

        Returns:
            A 2xx answer.

        Raises:
            RequestRefused: a 4xx other than 429, or another final status.
            ServiceUnavailable: 5xx, 429 or no connection after the retries.
            VerificationFailed: the server's TLS certificate does not verify.
            ProtocolError: an answer without a JSON object.
        """

        def send() -> httpx.Response:
            body, headers = build() if build is not None else (None, {})
            return self._http.request(method, path, json=body, headers=dict(headers))

        try:
            response = send_with_retry(send, self.retry, clock=self.clock, rng=self.rng)
        except ServiceUnavailable as exc:
            if exc.status is None and self._identity is not None:
                exc.message += "; the server may not trust the client certificate"
                exc.args = (exc.message,)
            raise
        if not 200 <= response.status_code < 300:
            raise _refusal(response)
        headers = {k.lower(): v for k, v in response.headers.items()}
        return Response(response.status_code, _json_body(response), headers)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
