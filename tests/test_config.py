"""Settings: sources, precedence, and one clear line for every bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from walship import config
from walship.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "walship.toml"
    path.write_text(text)
    return str(path)


def test_defaults_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'repo = "/var/lib/walship/main"\ncompression_level = 3\n')
    cfg = config.load(config_path=path, env={})
    assert cfg.repo == "/var/lib/walship/main"
    assert cfg.compression_level == 3
    assert cfg.compression == "zstd"
    assert cfg.fetch_error_exit == "abort"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'repo = "/from/file"\nlog_format = "json"\n')
    cfg = config.load(config_path=path, env={"WALSHIP_REPO": "/from/env"})
    assert cfg.repo == "/from/env"
    assert cfg.log_format == "json"
    cfg = config.load(
        config_path=path, env={"WALSHIP_REPO": "/from/env"}, overrides={"repo": "/from/flag"}
    )
    assert cfg.repo == "/from/flag"


def test_env_config_path(tmp_path: Path) -> None:
    path = write(tmp_path, 'repo = "/x"\n')
    assert config.load(env={"WALSHIP_CONFIG": path}).repo == "/x"


def test_tables_flatten(tmp_path: Path) -> None:
    path = write(tmp_path, '[log]\nformat = "json"\nlevel = "debug"\n')
    cfg = config.load(config_path=path, env={})
    assert (cfg.log_format, cfg.log_level) == ("json", "debug")


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        ('repoo = "/x"\n', {}, "unknown setting 'repoo'"),
        ("", {"WALSHIP_REOP": "/x"}, "did you mean 'repo'"),
        ('compression = "lz4"\n', {}, "use one of: zstd, none"),
        ("compression_level = 99\n", {}, "allowed range"),
        ('compression_level = "fast"\n', {}, "expected a int"),
        ("", {"WALSHIP_COMPRESSION_LEVEL": "fast"}, "WALSHIP_COMPRESSION_LEVEL"),
        ("repo = [1]\n", {}, "setting 'repo'"),
        ("repo = \n", {}, "not valid TOML"),
        ('fetch_error_exit = "sometimes"\n', {}, "abort, missing, auto"),
    ],
)
def test_bad_settings_name_the_key(
    tmp_path: Path, text: str, env: dict[str, str], fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(config_path=path, env=env)
    line = info.value.one_line()
    assert fragment in line
    assert "\n" not in line


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(config_path=str(tmp_path / "nope.toml"), env={})


def test_missing_repo_is_named() -> None:
    cfg = config.load(env={"WALSHIP_CONFIG": os.devnull})
    with pytest.raises(ConfigError) as info:
        cfg.require("repo")
    assert "WALSHIP_REPO" in info.value.one_line()


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    secret_rows = [s for s in config.SETTINGS if s.secret]
    for row in secret_rows:
        if row.type is not str:
            continue
        with pytest.raises(ConfigError) as info:
            config.load(config_path=write(tmp_path, f"{row.name} = 12345678\n"), env={})
        assert "12345678" not in info.value.one_line()


def test_docs_table_is_current() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert config.markdown_table() in docs.read_text(), (
        "docs/configuration.md is stale: regenerate the table with `walship config-docs`"
    )
