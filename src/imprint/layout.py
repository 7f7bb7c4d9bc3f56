"""Where imprint keeps its files: one value object per directory, so file names are
written down once.

```
DATA_DIR/
  ca/        root.crt  root.key  issuing.crt  issuing.key  chain.crt   (CAFiles)
  tls/       server.crt  server.key                                    (DataLayout)
  admin-token                                                          (first start)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CAFiles", "DataLayout"]


@dataclass(frozen=True, slots=True)
class CAFiles:
    """The CA directory: certificates in PEM, keys encrypted (PKCS#8)."""

    directory: Path

    @property
    def root_certificate(self) -> Path:
        return self.directory / "root.crt"

    @property
    def root_key(self) -> Path:
        return self.directory / "root.key"

    @property
    def issuing_certificate(self) -> Path:
        return self.directory / "issuing.crt"

    @property
    def issuing_key(self) -> Path:
        return self.directory / "issuing.key"

    @property
    def chain(self) -> Path:
        """The issuing CA, then every CA up to and including the root."""
        return self.directory / "chain.crt"


@dataclass(frozen=True, slots=True)
class DataLayout:
    """The data directory (``data_dir``) and the CA directory in it (``ca``)."""

    data_dir: Path
    ca: CAFiles

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def server_certificate(self) -> Path:
        """The HTTPS server's certificate, then its issuing CA."""
        return self.tls_dir / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.tls_dir / "server.key"

    @property
    def admin_token(self) -> Path:
        """The first admin API key's token, written on the first start (0600)."""
        return self.data_dir / "admin-token"
