"""Settings precedence: arguments > RECPLANE_* env > recplane.yaml > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from recplane.config import Settings, setting_sources
from recplane.errors import InvalidSpec


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for key in ("RECPLANE_HOME", "RECPLANE_PORT", "RECPLANE_CONFIG", "RECPLANE_DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)


def test_defaults_put_everything_under_dot_recplane() -> None:
    settings = Settings()
    assert settings.home == Path(".recplane")
    assert settings.catalog_url.startswith("sqlite:///") and settings.catalog_url.endswith("catalog.db")
    assert settings.lake_root.endswith("lake")


def test_yaml_overrides_defaults_and_env_overrides_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("recplane.yaml").write_text("port: 9001\nhome: from-yaml\n")
    assert Settings().port == 9001
    monkeypatch.setenv("RECPLANE_PORT", "9002")
    assert Settings().port == 9002
    assert Settings(port=9003).port == 9003


def test_sources_name_where_each_value_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("recplane.yaml").write_text("port: 9001\n")
    monkeypatch.setenv("RECPLANE_HOST", "127.0.0.2")
    sources = {name: origin for name, _value, origin in setting_sources({"log_level": "debug"})}
    assert sources["port"] == "recplane.yaml"
    assert sources["host"] == "env RECPLANE_HOST"
    assert sources["log_level"] == "argument"
    assert sources["home"] == "default"


def test_unknown_yaml_setting_is_a_clear_error() -> None:
    Path("recplane.yaml").write_text("prot: 9001\n")
    with pytest.raises(InvalidSpec, match="prot"):
        Settings()


def test_invalid_value_is_rejected() -> None:
    with pytest.raises(ValueError, match="port"):
        Settings(port=70000)
