"""Settings: sources, precedence, and one clear line for every bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# --- the fast reader of flat config files agrees with tomllib ----------------------

SIMPLE_FILES = [
    'repo = "/var/lib/walship/main"\ncompression_level = 3\n',
    "# comment\n\nrepo = '/x y/z'  # trailing\nlog_format=\"json\"\n",
    '[s3]\nregion = "eu-west-1"\nforce_path_style = true\n[log]\nlevel = "debug"\n',
    "a = -7\nb = +0\nc = false\n\tindented = 'tab'\r\n",
    'hash = "a#b"\nempty = ""\n',
]
FALLBACK_FILES = [
    'repo = "C:\\\\dir"\n',  # escapes
    "a = 1.5\n",  # float
    "a.b = 1\n",  # dotted key
    "a = [1, 2]\n",  # array
    'a = """x"""\n',  # multi-line string
    "[[arr]]\nx = 1\n",  # array of tables
    "a = 1\na = 2\n",  # duplicate: tomllib's error
    "a = 01\n",  # leading zero: tomllib's error
    '"quoted" = 1\n',
    "[t] # c\nx = 1\n",
    "a = \n",
]


@pytest.mark.parametrize("text", SIMPLE_FILES)
def test_simple_reader_matches_tomllib(text: str) -> None:
    import tomllib

    assert config.parse_simple_toml(text) == tomllib.loads(text)


@pytest.mark.parametrize("text", FALLBACK_FILES)
def test_simple_reader_declines_what_it_does_not_know(text: str) -> None:
    assert config.parse_simple_toml(text) is None


@given(
    st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=12),
        st.one_of(
            st.booleans(),
            st.integers(min_value=-(10**9), max_value=10**9),
            st.text(
                alphabet=st.characters(
                    blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\'
                ),
                max_size=20,
            ),
        ),
        max_size=8,
    )
)
def test_simple_reader_property(values: dict[str, object]) -> None:
    import tomllib

    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f'{key} = "{value}"  # note')
    text = "\n".join(lines) + "\n"
    parsed = config.parse_simple_toml(text)
    assert parsed is not None
    assert parsed == tomllib.loads(text)


def test_not_utf8_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "walship.toml"
    path.write_bytes(b'repo = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        config.load(config_path=str(path), env={})


@pytest.mark.parametrize("text", ["a = 1\x0b\n", "a = 'x'\x0c\n", "a = 1\rb = 2\n"])
def test_simple_reader_leaves_odd_whitespace_to_tomllib(text: str) -> None:
    assert config.parse_simple_toml(text) is None
