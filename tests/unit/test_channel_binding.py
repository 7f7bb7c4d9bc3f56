"""The connection's channel binding, worked out when EST first asks for it."""

from __future__ import annotations

from typing import Any

import pytest

from imprint import channel_binding
from imprint.channel_binding import ChannelBinding
from imprint.tls import tls_extension


class _Connection:
    """Stands for an ``ssl.SSLObject`` after its handshake: counts what is asked of it."""

    def __init__(self, version: str) -> None:
        self._version = version
        self.asked: list[str] = []

    def version(self) -> str:
        return self._version

    def cipher(self) -> tuple[str, str, int]:
        return ("TLS_AES_128_GCM_SHA256", self._version, 128)

    def get_channel_binding(self, kind: str) -> bytes:
        self.asked.append(kind)
        return b"u" * 12

    def getpeercert(self, binary_form: bool = False) -> None:
        return None


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []

    def export(ssl_object: Any) -> bytes | None:
        calls.append(ssl_object)
        return b"e" * 32 if ssl_object.version() == "TLSv1.3" else None

    monkeypatch.setattr(channel_binding, "tls_exporter", export)
    return calls


def test_a_connection_is_not_asked_for_its_binding_until_it_is_wanted(
    exporter: list[Any],
) -> None:
    for version in ("TLSv1.2", "TLSv1.3"):
        connection = _Connection(version)
        extension = tls_extension(connection)  # type: ignore[arg-type]
        assert connection.asked == []
        assert exporter == []
        assert isinstance(extension["channel_binding"], ChannelBinding)
        assert extension["tls_version"] == {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}[version]


def test_the_binding_is_tls_unique_on_tls_1_2_the_exporter_on_1_3_and_worked_out_once(
    exporter: list[Any],
) -> None:
    older = _Connection("TLSv1.2")
    binding = ChannelBinding(older)  # type: ignore[arg-type]
    assert binding.value() == b"u" * 12
    assert binding.value() == b"u" * 12
    assert older.asked == ["tls-unique"]
    assert exporter == []

    newer = _Connection("TLSv1.3")
    binding = ChannelBinding(newer)  # type: ignore[arg-type]
    assert binding.value() == b"e" * 32
    assert binding.value() == b"e" * 32
    assert exporter == [newer]
    assert newer.asked == []


def test_a_connection_without_a_binding_has_none(exporter: list[Any]) -> None:
    binding = ChannelBinding(_Connection("TLSv1.1"))  # type: ignore[arg-type]
    assert binding.value() is None
    assert binding.value() is None
    assert len(exporter) == 1  # asked once: the exporter answers None below TLS 1.3


def test_the_real_exporter_refuses_anything_but_tls_1_3() -> None:
    assert channel_binding.tls_exporter(_Connection("TLSv1.2")) is None  # type: ignore[arg-type]
