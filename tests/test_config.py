"""Settings: sources, precedence, and one clear line for every bad input."""

from __future__ import annotations

import ast
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


# --- one table: every setting, every variable, one parser per type ------------------


@pytest.mark.parametrize(
    ("text", "both"),
    [
        ('s3_region = "a"\n[s3]\nregion = "b"\n', ("'s3_region'", "'[s3] region'")),
        (
            '[s3]\nsse_kms_key_id = "a"\n[s3.sse]\nkms_key_id = "b"\n',
            ("'[s3] sse_kms_key_id'", "'[s3.sse] kms_key_id'"),
        ),
        ('[log]\nlevel = "info"\n[log]\n', ("not valid TOML",)),  # tomllib's own duplicate
        ('log = {level = "info"}\nlog_level = "debug"\n', ("'[log] level'", "'log_level'")),
    ],
)
def test_a_setting_given_twice_in_the_file_is_an_error_naming_both(
    tmp_path: Path, text: str, both: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(config_path=write(tmp_path, text), env={})
    line = info.value.one_line()
    for spelling in both:
        assert spelling in line, line
    assert "\n" not in line


def test_environment_only_variables_are_rows_of_the_table(tmp_path: Path) -> None:
    rows = {s.env: s for s in config.SETTINGS if not s.in_file}
    assert set(rows) == {"WALSHIP_CONFIG", "WALSHIP_AGENT_DIR"}
    path = write(tmp_path, 'repo = "/x"\n')
    other = str(tmp_path / "other.toml")
    Path(other).write_text('repo = "/other"\n')
    # --config wins over WALSHIP_CONFIG, and the effective file is a setting
    cfg = config.load(config_path=path, env={"WALSHIP_CONFIG": other})
    assert (cfg.repo, cfg.config) == ("/x", path)
    cfg = config.load(env={"WALSHIP_CONFIG": other, "WALSHIP_AGENT_DIR": "/old/agent"})
    assert (cfg.repo, cfg.config, cfg.agent_dir) == ("/other", other, "/old/agent")
    with pytest.raises(ConfigError) as info:
        config.load(config_path=write(tmp_path, 'config = "/elsewhere.toml"\n'), env={})
    assert "not a file setting" in info.value.one_line()
    assert "WALSHIP_CONFIG" in info.value.one_line()


def test_deprecated_agent_settings_are_accepted(tmp_path: Path) -> None:
    cfg = config.load(
        config_path=write(tmp_path, "agent = false\n"), env={"WALSHIP_AGENT_DIR": "/tmp/a"}
    )
    assert cfg.agent is False
    assert config.load(env={"WALSHIP_AGENT": "off", "WALSHIP_CONFIG": os.devnull}).agent is False


@pytest.mark.parametrize(
    ("name", "env", "expected"),
    [
        ("fetch_error_exit", {"WALSHIP_FETCH_ERROR_EXIT": "missing"}, "missing"),
        ("fetch_error_exit", {"WALSHIP_FETCH_ERROR_EXIT": "sometimes"}, "abort"),
        ("fetch_error_exit", {}, "abort"),
        ("pgdata", {"WALSHIP_PGDATA": "/srv/pg"}, "/srv/pg"),
        ("pgdata", {"WALSHIP_PGDATA": ""}, None),
        ("fetch_prefetch", {"WALSHIP_FETCH_PREFETCH": "3"}, 3),
        ("fetch_prefetch", {"WALSHIP_FETCH_PREFETCH": "999"}, 8),
    ],
)
def test_from_environment_parses_with_the_table(
    name: str, env: dict[str, str], expected: object
) -> None:
    assert config.from_environment(name, env) == expected


def test_every_row_has_one_parser_and_a_default_of_its_type() -> None:
    assert len(config.SETTINGS) == len(config.Config.__annotations__)
    for row in config.SETTINGS:
        assert row.type in config.PARSERS, row.name
        if row.default is not None:
            assert type(row.default) is row.type, row.name
            assert config.PARSERS[row.type](row.default) == row.default
        else:
            assert row.optional, row.name
    cfg = config.Config()
    assert [getattr(cfg, s.name) for s in config.SETTINGS] == [s.default for s in config.SETTINGS]


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (bool, "on", True),
        (bool, "No", False),
        (bool, True, True),
        (int, "42", 42),
        (int, 7, 7),
        (float, "1.5", 1.5),
        (float, 2, 2.0),
        (str, "x", "x"),
    ],
)
def test_parsers_take_file_and_environment_values(
    kind: type, raw: object, expected: object
) -> None:
    value = config.PARSERS[kind](raw)
    assert value == expected and type(value) is kind


@pytest.mark.parametrize(
    ("kind", "raw"),
    [(bool, "maybe"), (bool, 1), (int, True), (int, 1.5), (float, False), (str, 3), (int, "1e3")],
)
def test_parsers_refuse_other_values(kind: type, raw: object) -> None:
    with pytest.raises(ValueError):
        config.PARSERS[kind](raw)


def _environment_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, variable) of every read of the process environment in ``tree``;
    variable is "*" when the whole environment is used (passed on, iterated)."""

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ"
        )

    def key(node: ast.AST | None) -> str:
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else "?"

    found: list[tuple[int, str]] = []
    consumed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            first = node.args[0] if node.args else None
            if isinstance(func, ast.Attribute) and is_environ(func.value):
                consumed.add(id(func.value))
                found.append((node.lineno, key(first) if func.attr == "get" else "*"))
            elif (isinstance(func, ast.Attribute) and func.attr in ("getenv", "getenvb")) or (
                isinstance(func, ast.Name) and func.id == "getenv"
            ):
                found.append((node.lineno, key(first)))
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            consumed.add(id(node.value))
            found.append((node.lineno, key(node.slice)))
    for node in ast.walk(tree):
        if is_environ(node) and id(node) not in consumed and isinstance(node, ast.Attribute):
            found.append((node.lineno, "*"))
    return found


#: reads of the environment outside config.py, each with its reason
ENVIRONMENT_READS = {
    # zstandard's own variable, honoured when walship loads its C backend directly
    ("codec/compress.py", "PYTHON_ZSTANDARD_IMPORT_POLICY"),
    # the background process is spawned with the caller's environment
    ("background.py", "*"),
    # the settings' fingerprint digests the storage SDKs' own variables (AWS_*, ...)
    ("archive/lookahead.py", "*"),
}


def test_no_setting_is_read_outside_the_table() -> None:
    import walship

    root = Path(walship.__file__).parent
    reads = set()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "config.py":
            continue
        for line, var in _environment_reads(ast.parse(path.read_text(), rel)):
            assert not var.startswith("WALSHIP_"), f"{rel}:{line} reads {var}: use walship.config"
            reads.add((rel, var))
    assert reads == ENVIRONMENT_READS, "a new environment read: make it a setting of the table"


def test_environment_read_finder_sees_every_form() -> None:
    tree = ast.parse(
        "import os\nfrom os import environ, getenv\n"
        "os.environ.get('WALSHIP_A')\nos.environ['WALSHIP_B']\nos.getenv('WALSHIP_C')\n"
        "getenv('D')\nenviron.get(name)\nspawn(os.environ)\nos.environ.copy()\n"
    )
    assert sorted(_environment_reads(tree)) == [
        (3, "WALSHIP_A"),
        (4, "WALSHIP_B"),
        (5, "WALSHIP_C"),
        (6, "D"),
        (7, "?"),
        (8, "*"),
        (9, "*"),
    ]
