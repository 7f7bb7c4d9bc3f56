"""The CA's certificate files are written whole or not at all."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from imprint.pki.material import init_ca
from imprint.settings import Settings


def test_the_ca_files_are_whole_and_leave_nothing_partial(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", ca={"passphrase": "pass"})
    first = init_ca(settings)
    ca_dir = settings.layout().ca.root_certificate.parent
    root = x509.load_pem_x509_certificates(settings.layout().ca.root_certificate.read_bytes())
    chain = x509.load_pem_x509_certificates(settings.layout().ca.chain.read_bytes())
    assert root == [chain[-1]]
    assert len(chain) == 2
    # Made again over the old files: replaced whole, no partial file left beside them.
    again = init_ca(settings, force=True)
    assert again.chain[-1] != first.chain[-1]
    root = x509.load_pem_x509_certificates(settings.layout().ca.root_certificate.read_bytes())
    assert root == [again.chain[-1]]
    assert not [p.name for p in ca_dir.iterdir() if p.name.endswith(".partial")]
