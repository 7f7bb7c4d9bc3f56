"""Named connections to imprint servers, kept in the user's configuration directory.

``imprint login`` writes a profile: the server's URL, the credential (an API key, or an
access token from a user's sign-in), and the CA file to trust the server with. The file
is ``$XDG_CONFIG_HOME/imprint/profiles.yaml`` (``~/.config/imprint/profiles.yaml``),
readable by its owner alone (mode 0600 in a 0700 directory), because it holds secrets.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from imprint.errors import ConfigurationError

__all__ = ["Profile", "ProfileBook", "config_dir", "private_dir"]

#: The environment variable that picks a profile (as ``--profile`` does).
PROFILE_ENV = "IMPRINT_PROFILE"


def config_dir() -> Path:
    """imprint's directory in the user's configuration directory (XDG)."""
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return root / "imprint"


def private_dir(path: Path) -> Path:
    """``path`` made if need be, readable by its owner alone (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


@dataclass(frozen=True)
class Profile:
    """One server and the credential used there."""

    name: str
    server: str
    token: str
    kind: str  # "api-key" or "user"
    ca_file: str | None = None
    username: str | None = None
    expires_at: str | None = None  # a user's access token runs out (ISO 8601)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and datetime.fromisoformat(self.expires_at) <= now


class ProfileBook:
    """The profiles file: read, change, write back (0600)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "profiles.yaml"
        self._data: dict[str, Any] = {"current": None, "profiles": {}}
        if self.path.exists():
            try:
                loaded = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigurationError(f"cannot read {self.path}: {exc}") from None
            if not isinstance(loaded, dict) or not isinstance(loaded.get("profiles", {}), dict):
                raise ConfigurationError(f"{self.path}: not a profiles file")
            self._data = {"current": loaded.get("current"), "profiles": loaded.get("profiles", {})}

    @property
    def current(self) -> str | None:
        current = self._data.get("current")
        return current if isinstance(current, str) else None

    def names(self) -> list[str]:
        return sorted(self._data["profiles"])

    def get(self, name: str) -> Profile:
        """Raises ConfigurationError for an unknown profile."""
        entry = self._data["profiles"].get(name)
        if not isinstance(entry, dict):
            raise ConfigurationError(
                f"no profile {name!r} in {self.path}: imprint login --server URL --profile {name}"
            )
        fields = {k: v for k, v in entry.items() if k in Profile.__dataclass_fields__}
        try:
            return Profile(name=name, **{k: v for k, v in fields.items() if k != "name"})
        except TypeError:
            raise ConfigurationError(f"{self.path}: profile {name!r} is incomplete") from None

    def put(self, profile: Profile, *, make_current: bool = True) -> None:
        entry = {k: v for k, v in asdict(profile).items() if k != "name" and v is not None}
        self._data["profiles"][profile.name] = entry
        if make_current:
            self._data["current"] = profile.name
        self._write()

    def remove(self, name: str) -> bool:
        gone = self._data["profiles"].pop(name, None) is not None
        if self._data.get("current") == name:
            self._data["current"] = None
        self._write()
        return gone

    def use(self, name: str) -> None:
        self.get(name)
        self._data["current"] = name
        self._write()

    def _write(self) -> None:
        private_dir(self.path.parent)
        text = yaml.safe_dump(self._data, sort_keys=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)
