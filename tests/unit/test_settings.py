"""Configuration: defaults, the YAML file, IMPRINT_* overrides, and clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imprint.errors import ConfigurationError
from imprint.settings import KeyType, Settings, load_settings


def write_config(directory: Path, text: str, name: str = "imprint.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_zero_configuration_gives_working_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no imprint.yaml here
    settings = load_settings()
    assert settings.data_dir == Path("data")
    assert settings.development is False
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8443
    assert settings.server.tls is True
    assert settings.server.base_url() == "https://127.0.0.1:8443"
    assert settings.ca.key_type is KeyType.EC_P256
    assert settings.ca.passphrase is None
    assert settings.database_url() == f"sqlite:///{tmp_path / 'data' / 'imprint.db'}"
    assert settings.passphrase_path() == Path("data") / "ca-passphrase"


def test_imprint_yaml_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, "server:\n  port: 9443\nca:\n  key_type: ec-p384\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.server.port == 9443
    assert settings.ca.key_type is KeyType.EC_P384


def test_explicit_config_file_is_read(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "data_dir: /srv/imprint\n"
        "database:\n  url: postgresql+psycopg://imprint@db/imprint\n"
        "profiles:\n  device_validity_days: 365\n"
        "logging:\n  json: true\n",
        name="custom.yaml",
    )
    settings = load_settings(path)
    assert settings.data_dir == Path("/srv/imprint")
    assert settings.database_url() == "postgresql+psycopg://imprint@db/imprint"
    assert settings.profiles.device_validity_days == 365
    assert settings.logging.json_format is True


def test_imprint_config_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "server:\n  host: 10.1.2.3\n", name="elsewhere.yaml")
    monkeypatch.setenv("IMPRINT_CONFIG", str(path))
    assert load_settings().server.host == "10.1.2.3"


def test_empty_config_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write_config(tmp_path, "")).server.port == 8443


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, "server:\n  port: 9443\n  host: 10.0.0.1\n")
    monkeypatch.setenv("IMPRINT_SERVER__PORT", "7443")
    monkeypatch.setenv("IMPRINT_CA__PASSPHRASE", "from-env")
    monkeypatch.setenv("IMPRINT_DEVELOPMENT", "true")
    monkeypatch.setenv("IMPRINT_SERVER__SAN", '["ca.example.com", "192.0.2.7"]')
    settings = load_settings(path)
    assert settings.server.port == 7443
    assert settings.server.host == "10.0.0.1"  # untouched keys still come from the file
    assert settings.ca.passphrase is not None
    assert settings.ca.passphrase.get_secret_value() == "from-env"
    assert settings.development is True
    assert settings.server.san == ["ca.example.com", "192.0.2.7"]


def test_unknown_key_in_file_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server:\n  prot: 9443\n")
    with pytest.raises(ConfigurationError, match=r"server\.prot: unknown key") as caught:
        load_settings(path)
    assert caught.value.code == "config_invalid"


def test_unknown_top_level_section_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="serve: unknown key"):
        load_settings(write_config(tmp_path, "serve:\n  port: 1\n"))


def test_unknown_imprint_variable_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMPRINT_SERVER__PROT", "9443")
    with pytest.raises(ConfigurationError, match="IMPRINT_SERVER__PROT"):
        load_settings()


def test_the_admin_token_variable_from_the_readme_is_not_a_typo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMPRINT_TOKEN", "imp_x_y")
    assert load_settings().server.port == Settings().server.port


def test_bad_value_in_file_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path, "server:\n  port: not-a-number\n")
    with pytest.raises(ConfigurationError, match=r"server\.port: .*integer"):
        load_settings(path)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("server:\n  port: 70000\n", "server.port"),
        ("ca:\n  key_type: dsa-1024\n", "ca.key_type"),
        ("database:\n  url: mysql://db/imprint\n", "database.url"),
        ("server:\n  trusted_proxies: [not-an-ip]\n", "server.trusted_proxies"),
        ("server:\n  san: []\n", "server.san"),
        ("logging:\n  level: loud\n", "logging.level"),
    ],
)
def test_out_of_range_values_are_errors_naming_the_key(
    tmp_path: Path, yaml_text: str, key: str
) -> None:
    with pytest.raises(ConfigurationError, match=key.replace(".", r"\.")):
        load_settings(write_config(tmp_path, yaml_text))


def test_bad_value_in_environment_is_an_error_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMPRINT_SERVER__PORT", "abc")
    with pytest.raises(ConfigurationError, match=r"server\.port"):
        load_settings()


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read configuration file"):
        load_settings(tmp_path / "absent.yaml")


@pytest.mark.parametrize("text", ["server: [unclosed\n", "- just\n- a list\n"])
def test_file_that_is_not_a_yaml_mapping_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigurationError, match="configuration file"):
        load_settings(write_config(tmp_path, text))


def test_masked_configuration_hides_the_ca_passphrase_and_database_password() -> None:
    settings = Settings(
        database={"url": "postgresql+psycopg://imprint:s3cret-pw@db.internal/imprint"},
        ca={"passphrase": "very-secret-passphrase"},
    )
    masked = settings.masked()
    text = json.dumps(masked)
    assert "very-secret-passphrase" not in text
    assert "s3cret-pw" not in text
    assert masked["ca"]["passphrase"] == "********"
    assert masked["database"]["url"] == "postgresql+psycopg://imprint:********@db.internal/imprint"
    assert masked["database"]["effective_url"] == masked["database"]["url"]
    assert masked["server"]["port"] == 8443  # everything else is shown as is


def test_masked_configuration_leaves_urls_without_password_alone() -> None:
    masked = Settings(data_dir=Path("/var/lib/imprint")).masked()
    assert masked["ca"]["passphrase"] is None
    assert masked["database"]["url"] is None
    assert masked["database"]["effective_url"] == "sqlite:////var/lib/imprint/imprint.db"


def test_public_url_is_used_as_base_url_without_trailing_slash() -> None:
    settings = Settings(server={"public_url": "https://ca.example.com/"})
    assert settings.server.base_url() == "https://ca.example.com"
    ipv6 = Settings(server={"host": "::1", "tls": False})
    assert ipv6.server.base_url() == "http://[::1]:8443"


def test_workers_default_to_the_cores_but_for_sqlite_in_memory(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    sqlite = Settings(data_dir=tmp_path)
    postgres = Settings(data_dir=tmp_path, database={"url": "postgresql://db/imprint"})
    assert sqlite.server.workers is None
    assert sqlite.worker_count() == min(64, cores)
    assert postgres.worker_count() == min(64, cores)
    for memory in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"):
        assert Settings(data_dir=tmp_path, database={"url": memory}).worker_count() == 1
    chosen = Settings(data_dir=tmp_path, server={"workers": 3})
    assert chosen.worker_count() == 3
