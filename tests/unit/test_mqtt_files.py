"""The broker's files are written whole, also by several writers at once (the outbox may
deliver two CRL updates side by side)."""

from __future__ import annotations

import threading
from pathlib import Path

from imprint.mqtt.broker import _write


def test_concurrent_writers_each_replace_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "crl.pem"
    contents = [bytes([65 + n]) * 50_000 for n in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(contents))

    def write(data: bytes) -> None:
        start.wait()
        try:
            for _ in range(20):
                _write(target, data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(data,)) for data in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in contents
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crl.pem"]  # no temporary left
    assert target.stat().st_mode & 0o777 == 0o644
