"""Settings: one table, three sources.

Precedence, lowest first: built-in defaults < TOML file < ``WALSHIP_*``
environment variables < command-line flags. The file is the first of
``--config``, ``$WALSHIP_CONFIG``, ``/etc/walship/walship.toml`` that is given
(an explicitly named file must exist; the system path is optional).

TOML tables flatten with ``_``: ``[s3] region = "x"`` is the setting
``s3_region``, environment variable ``WALSHIP_S3_REGION``; a setting spelled
both ways in one file is an error naming both.

The body of :class:`Config` is the settings table: one ``name: type =
setting(default, doc, ...)`` line per setting, the annotation giving the type
(and so the one parser of :data:`PARSERS` that reads it from every source).
Variables that are not file settings (``WALSHIP_CONFIG``) are rows too, marked
``in_file=False``; nothing in walship reads a ``WALSHIP_*`` variable but this
module (tests/test_config.py checks the source). The table in
docs/configuration.md is generated from it (``walship config-docs``) and a test
keeps the two in step. Settings marked secret are never echoed in messages.

This module is on the path of every ``walship push``, including the look-ahead
fast path (< 30 ms whole-process): it imports neither ``typing`` nor
``dataclasses`` nor ``tomllib`` (unless a file needs more TOML than
:func:`parse_simple_toml` reads); see "Stand-ins" in docs/benchmarks.md.
"""

from __future__ import annotations

import os

from .errors import ConfigError

TYPE_CHECKING = False  # typing is not imported at run time: see the docstring
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TypeVar

    _T = TypeVar("_T")

SYSTEM_CONFIG_PATH = "/etc/walship/walship.toml"
ENV_PREFIX = "WALSHIP_"
ENV_CONFIG = "WALSHIP_CONFIG"


class Setting:
    """One row of the settings table (made by :func:`setting` in :class:`Config`).

    A plain class, not a dataclass: ``dataclasses`` imports ``inspect``, which
    the push fast path would pay for (docs/benchmarks.md, "Stand-ins").
    """

    __slots__ = (
        "choices",
        "default",
        "doc",
        "in_file",
        "maximum",
        "minimum",
        "name",
        "optional",
        "required",
        "secret",
        "type",
    )

    def __init__(
        self,
        default: object,
        doc: str,
        *,
        choices: tuple[str, ...] | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        secret: bool = False,
        required: bool = False,
        in_file: bool = True,
    ) -> None:
        self.name = ""  # set from the table: the attribute's name
        self.type: type = str  # ... and its annotation
        self.optional = False
        self.default = default
        self.doc = doc
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum
        self.secret = secret
        self.required = required
        self.in_file = in_file

    @property
    def env(self) -> str:
        """The environment variable of this setting."""
        return ENV_PREFIX + self.name.upper()


def setting(
    default: _T,
    doc: str,
    *,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    secret: bool = False,
    required: bool = False,
    in_file: bool = True,
) -> _T:
    """A row of the table; typed as its default so that ``Config`` type-checks."""
    row = Setting(
        default,
        doc,
        choices=choices,
        minimum=minimum,
        maximum=maximum,
        secret=secret,
        required=required,
        in_file=in_file,
    )
    return row  # type: ignore[return-value]


class Config:
    """Effective settings. The class body is the settings table."""

    # --- repository ---
    repo: str | None = setting(
        None,
        "Repository URL: a directory path or file:///path (local), s3://bucket/prefix, "
        "gs://bucket/prefix, az://container/prefix, or mem://name (tests).",
        required=True,
    )
    # --- objects ---
    compression: str = setting(
        "zstd",
        "Compression of new objects. Old objects stay readable either way.",
        choices=("zstd", "none"),
    )
    compression_level: int = setting(
        1,
        "zstd level for new objects (1 = fastest; see docs/benchmarks.md).",
        minimum=-7,
        maximum=22,
    )
    compression_threads: int = setting(
        0,
        "zstd worker threads (0 = compress in the calling thread).",
        minimum=0,
        maximum=64,
    )
    # --- encryption (docs/encryption.md) ---
    encryption: str = setting(
        "none",
        "Encryption of new objects: 'symmetric' (a secret key file), 'public-key' (an "
        "X25519 public key; reading needs the private key) or 'none'. Encrypted and "
        "plain objects can coexist; reading never depends on this setting.",
        choices=("none", "symmetric", "public-key"),
    )
    encryption_key_file: str | None = setting(
        None,
        "Path of the current key file (made by `walship keygen`): new objects are "
        "encrypted to it, and it is also a read key. Symmetric mode: the secret key "
        "file; public-key mode: the .pub file (or the private key file). A path, never "
        "the key itself.",
    )
    encryption_keyring: str | None = setting(
        None,
        "Path of a key file, or of a directory whose *.key files are read, holding "
        "further keys for reading (older keys after rotation, private keys on the "
        "restore host).",
    )
    encryption_cipher: str = setting(
        "aes-256-gcm",
        "AEAD of new encrypted objects (chacha20-poly1305 for CPUs without AES instructions).",
        choices=("aes-256-gcm", "chacha20-poly1305"),
    )
    # --- push and fetch ---
    agent: bool = setting(
        True,
        "Deprecated, ignored: the walship agent (a fork-server per user) was removed; "
        "push look-ahead (archive_lookahead) replaces it. Still accepted so that existing "
        "config files keep working.",
    )
    # --- push look-ahead (docs/push-fetch.md) ---
    archive_lookahead: int = setting(
        64,
        "Files `walship push` archives ahead of PostgreSQL's archiver when it falls behind "
        "(0: off): a background process pushes the oldest waiting .ready files of "
        "pg_wal/archive_status with the normal push rules and records each one, so the "
        "call for a file pushed ahead only checks its record. Never drops WAL: the backlog "
        "is reported by `walship archive-status`.",
        minimum=0,
        maximum=4096,
    )
    push_concurrency: int = setting(
        0,
        "Files the background process pushes at once (0: one per core for a local "
        "repository, one per core plus one, up to 16, for S3, GCS and Azure).",
        minimum=0,
        maximum=64,
    )
    background_idle: float = setting(
        300.0,
        "Seconds the walship background process stays without work before it exits "
        "(choose it above archive_timeout so a steady trickle keeps one process).",
        minimum=1.0,
        maximum=86400.0,
    )
    # --- fetch ---
    fetch_error_exit: str = setting(
        "abort",
        "What `walship fetch` does on a real error (not an absent file): 'abort' exits "
        "255 so recovery stops; 'missing' exits 1 like an absent file (a standby then "
        "retries or streams); 'auto' is 'missing' when standby.signal exists in the data "
        "directory and 'abort' otherwise.",
        choices=("abort", "missing", "auto"),
    )
    fetch_prefetch: int = setting(
        8,
        "Segments `walship fetch` fetches ahead while PostgreSQL replays (0: off). The walship "
        "background process fills a spool in pg_wal/.walship/<tag>/f; each later fetch of a "
        "spooled segment checks it and renames it into place. Uses up to this many segments "
        "of disk in pg_wal during recovery. See docs/push-fetch.md.",
        minimum=0,
        maximum=64,
    )
    pgdata: str | None = setting(
        None,
        "Data directory, for fetch_error_exit = 'auto', the cluster check on fetch, "
        "archive-status and backup-push. Default: the current directory (PostgreSQL runs "
        "restore_command there); backup-push asks the server (data_directory).",
    )
    # --- the server (backup-push, check, status, drill) ---
    conninfo: str | None = setting(
        None,
        "libpq connection string for the commands that talk to the server (backup-push, "
        "check, status, drill). Default: libpq's own environment (PGHOST, PGPORT, PGUSER, "
        "PGSERVICE, ...). Keep passwords in ~/.pgpass or PGPASSFILE, not here.",
        secret=True,
    )
    # --- operations: check, status, metrics, drill (docs/operations.md) ---
    check_archive_wait: float = setting(
        60.0,
        "Seconds `walship check` waits for the segment it switched to (pg_switch_wal) to "
        "reach the repository before it reports archiving as failing.",
        minimum=1.0,
        maximum=3600.0,
    )
    check_backup_max_age: float = setting(
        26.0,
        "Hours: `walship check` fails when the newest base backup is older (default: a "
        "daily backup plus two hours of slack). The alert rules use the same default.",
        minimum=0.1,
        maximum=24.0 * 366,
    )
    metrics_cache: str | None = setting(
        None,
        "File where `walship metrics` keeps the repository summary it exports, so a scrape "
        "does not list the repository (default: ~/.cache/walship/summary-<tag>.json, one "
        "file per repository).",
    )
    metrics_cache_max_age: float = setting(
        300.0,
        "Seconds the cached repository summary is used before `walship metrics` refreshes "
        "it (its age is exported as walship_summary_age_seconds).",
        minimum=0.0,
        maximum=86400.0,
    )
    drill_dir: str | None = setting(
        None,
        "Scratch directory of `walship drill` (a restored copy of the backup and a "
        "temporary server live below it; it needs the backup's size free). Default: "
        "/var/tmp/walship-drill-<uid>.",
    )
    drill_bindir: str | None = setting(
        None,
        "Directory of the PostgreSQL server binaries for `walship drill`; '{major}' is "
        "replaced by the backup's major version. Default: the Debian/Ubuntu "
        "(/usr/lib/postgresql/{major}/bin) and RHEL (/usr/pgsql-{major}/bin) locations, "
        "then pg_config on PATH.",
    )
    drill_sql: str | None = setting(
        None,
        "SQL the drill runs on the restored server; it must return one row whose first "
        'column is true or a non-zero number, e.g. "SELECT count(*) > 0 FROM orders" or '
        "\"SELECT max(created) > now() - interval '1 day' FROM orders\". Default: none.",
    )
    drill_database: str = setting("postgres", "Database the drill's checks connect to.")
    drill_user: str | None = setting(
        None,
        "Role the drill connects as on the restored server (over its private socket, "
        "trust). Default: the operating-system user running the drill.",
    )
    drill_timeout: float = setting(
        3600.0,
        "Seconds the drill waits for the temporary server to finish recovery.",
        minimum=10.0,
        maximum=7.0 * 86400,
    )
    drill_amcheck: bool = setting(
        True,
        "Run pg_amcheck (when installed with the server binaries) on the restored server.",
    )
    # --- base backups (docs/backups.md) ---
    backup_workers: int = setting(
        0,
        "Files `walship backup-push` reads, compresses and uploads at once (0: one per core).",
        minimum=0,
        maximum=64,
    )
    backup_part_size: int = setting(
        64 << 20,
        "Raw bytes per part object of a base backup (rounded down to a multiple of 1 MiB): "
        "small files are bundled into one part, larger files split across parts. The "
        "workers together hold up to 16 MiB of compressed parts in memory, the rest in "
        "temp files.",
        minimum=1 << 20,
        maximum=1 << 30,
    )
    backup_wal_timeout: float = setting(
        300.0,
        "Seconds `walship backup-push` waits, after pg_backup_stop, for the WAL that makes "
        "the backup consistent to reach the repository; then it fails and the backup is "
        "not recorded.",
        minimum=0.0,
        maximum=86400.0,
    )
    # --- remote storage: retries (S3, GCS, Azure) ---
    retry_deadline: float = setting(
        30.0,
        "Seconds a remote storage request (one PUT, one part, one listing page) is retried "
        "on transient faults (timeouts, resets, 5xx, throttling) before walship gives up. "
        "Only transient faults are retried. See docs/storage.md.",
        minimum=0.0,
        maximum=3600.0,
    )
    retry_attempt_timeout: float = setting(
        10.0,
        "Seconds one attempt may wait for the store to connect or send data (SDK "
        "connect/read timeouts; connect is capped at 5).",
        minimum=0.1,
        maximum=600.0,
    )
    # --- S3 ---
    s3_region: str | None = setting(
        None,
        "S3 region (default: boto3's chain: AWS_REGION, the profile, else us-east-1).",
    )
    s3_endpoint_url: str | None = setting(
        None,
        "Endpoint of an S3-compatible store, e.g. http://minio:9000 (default: AWS).",
    )
    s3_force_path_style: bool = setting(
        False,
        "Address buckets as endpoint/bucket instead of bucket.endpoint (most "
        "S3-compatible stores need this).",
    )
    s3_profile: str | None = setting(
        None,
        "Shared credentials/config profile (default: boto3's chain: environment, "
        "AWS_PROFILE, instance or task role).",
    )
    s3_sse: str = setting(
        "none",
        "Server-side encryption of new objects: 'none' (the bucket default), 'AES256' "
        "(SSE-S3) or 'aws:kms' (SSE-KMS, see s3_sse_kms_key_id).",
        choices=("none", "AES256", "aws:kms"),
    )
    s3_sse_kms_key_id: str | None = setting(
        None,
        "KMS key id or ARN for s3_sse = 'aws:kms' (default: the AWS managed key).",
    )
    s3_storage_class: str | None = setting(
        None,
        "Storage class of new objects, e.g. STANDARD_IA (default: the bucket's). "
        "Do not use GLACIER/DEEP_ARCHIVE: fetch needs immediate reads.",
    )
    s3_checksum: str = setting(
        "when_required",
        "Request checksums (botocore request_checksum_calculation): 'when_required' "
        "works with every S3-compatible store; 'when_supported' adds CRC32 trailers "
        "that AWS verifies but some compatible stores reject.",
        choices=("when_required", "when_supported"),
    )
    s3_part_size: int = setting(
        16 << 20,
        "Bytes per multipart part at the start of a large upload; doubles every 1000 "
        "parts, so 10,000 parts cover >= 7.8 TiB. Objects below it are one PUT. Memory "
        "per upload is about one part up to 64 MiB; larger parts are spooled to a temp "
        "file and sent from it.",
        minimum=8 << 20,
        maximum=5 << 30,
    )
    # --- Google Cloud Storage ---
    gcs_credentials_file: str | None = setting(
        None,
        "Service-account JSON key file (default: Application Default Credentials).",
    )
    gcs_project: str | None = setting(None, "Project id (default: from the credentials).")
    gcs_endpoint_url: str | None = setting(
        None,
        "API endpoint override, e.g. an emulator at http://127.0.0.1:4443 "
        "(default: https://storage.googleapis.com).",
    )
    gcs_anonymous: bool = setting(
        False,
        "Send no credentials (public buckets, emulators).",
    )
    gcs_chunk_size: int = setting(
        16 << 20,
        "Bytes per resumable-upload chunk; objects below it are one request. A multiple "
        "of 256 KiB. Memory per upload is about one chunk up to 64 MiB; larger chunks "
        "are spooled to a temp file and sent from it.",
        minimum=256 << 10,
        maximum=1 << 30,
    )
    # --- Azure Blob ---
    azure_account_url: str | None = setting(
        None,
        "Blob service URL, e.g. https://ACCOUNT.blob.core.windows.net or an Azurite "
        "http://127.0.0.1:10000/devstoreaccount1 (default: from azure_account_name).",
    )
    azure_account_name: str | None = setting(None, "Storage account name.")
    azure_connection_string: str | None = setting(
        None,
        "Storage connection string (alternative to account + key/SAS).",
        secret=True,
    )
    azure_account_key: str | None = setting(None, "Storage account shared key.", secret=True)
    azure_sas_token: str | None = setting(None, "Shared access signature (SAS) token.", secret=True)
    azure_block_size: int = setting(
        16 << 20,
        "Bytes per staged block at the start of a large upload (doubles every 1000 "
        "blocks); objects below it are one Put Blob. Memory per upload is about one "
        "block up to 64 MiB; larger blocks are spooled to a temp file and sent from it.",
        minimum=1 << 20,
        maximum=4000 << 20,
    )
    # --- segment index (docs/index.md) ---
    index_on_push: bool = setting(
        False,
        "Also scan each pushed segment and store its index entry (commit times, xids, "
        "restore points) for restore planning. Off: run `walship index` instead. Costs "
        "about 50-150 ms of CPU per busy 16 MiB segment (docs/benchmarks.md); a failure "
        "to index never fails the push.",
    )
    # --- logging ---
    log_format: str = setting("text", "Log line format on stderr.", choices=("text", "json"))
    log_level: str = setting(
        "info",
        "Least severe level logged (-v / -q shift it).",
        choices=("debug", "info", "warning", "error"),
    )
    # --- variables that are not file settings ---
    config: str | None = setting(
        None,
        "Config file to read (an explicitly named file must exist); the `--config` flag "
        "overrides it. Default: /etc/walship/walship.toml if it exists, else none. Not a "
        "file setting.",
        in_file=False,
    )
    agent_dir: str | None = setting(
        None,
        "Deprecated, ignored: the directory of the removed walship agent. Still accepted "
        "so that an old environment is not an error. Not a file setting.",
        in_file=False,
    )

    def __init__(self, **values: object) -> None:
        for s in SETTINGS:
            setattr(self, s.name, values.pop(s.name, s.default))
        if values:
            raise TypeError(f"unknown settings {sorted(values)}")

    def redacted(self) -> dict[str, object]:
        """Effective settings with secrets replaced by '***'."""
        out: dict[str, object] = {}
        for s in SETTINGS:
            value = getattr(self, s.name)
            out[s.name] = "***" if s.secret and value is not None else value
        return out

    def require(self, name: str) -> Any:
        value = getattr(self, name)
        if value is None or value == "":
            raise ConfigError(
                f"missing setting {name!r}",
                hint=f"set {name} in the config file or {ENV_PREFIX}{name.upper()} "
                "(see docs/configuration.md)",
            )
        return value


#: annotation of a row in :class:`Config` -> the value type
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _table() -> tuple[Setting, ...]:
    """The rows of :class:`Config`, named and typed from its annotations."""
    rows = []
    for name, annotation in Config.__annotations__.items():
        row = Config.__dict__.get(name)
        kind, _, none = str(annotation).partition(" | ")
        if not isinstance(row, Setting) or kind not in _TYPES or none not in ("", "None"):
            raise TypeError(f"Config.{name}: declare it as `{name}: T = setting(...)`")
        row.name, row.type, row.optional = name, _TYPES[kind], none == "None"
        default = row.default
        if not (default is None and row.optional) and type(default) is not row.type:
            raise TypeError(f"Config.{name}: default {default!r} is not a {kind}")
        rows.append(row)
    return tuple(rows)


#: The settings table, in the order of :class:`Config`'s body.
SETTINGS: tuple[Setting, ...] = _table()
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


# ------------------------------------------------------------------ parsers
# One parser per value type, for every source: a TOML value (str, int, bool,
# float, or anything else tomllib returns), an environment variable or a flag
# (str). Each raises ValueError for a value it does not take.


def _parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError


def _parse_int(raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise ValueError
    return int(raw)


def _parse_float(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError
    return float(raw)


def _parse_str(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError
    return raw


PARSERS: dict[type, Callable[[object], object]] = {
    bool: _parse_bool,
    int: _parse_int,
    float: _parse_float,
    str: _parse_str,
}


def _convert(name: str, raw: object, source: str, meta: Setting) -> object:
    shown = "(hidden)" if meta.secret else repr(raw)
    where = f"setting {name!r} from {source}"
    try:
        value = PARSERS[meta.type](raw)
    except ValueError:
        raise ConfigError(
            f"{where} has bad value {shown}", hint=f"expected a {meta.type.__name__}"
        ) from None
    choices = meta.choices
    if choices and value not in choices:
        raise ConfigError(
            f"{where} has bad value {shown}", hint=f"use one of: {', '.join(choices)}"
        )
    lo, hi = meta.minimum, meta.maximum
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{where} has bad value {shown}", hint=f"allowed range {lo}..{hi}")
    return value


def _flatten(
    table: Mapping[str, object],
    source: str,
    out: dict[str, object] | None = None,
    spelled: dict[str, str] | None = None,
    section: str = "",
) -> dict[str, object]:
    """``{"s3": {"region": x}}`` -> ``{"s3_region": x}``; a name given twice is an error."""
    out = {} if out is None else out
    spelled = {} if spelled is None else spelled
    for key, value in table.items():
        name = f"{section.replace('.', '_')}_{key}" if section else key
        if isinstance(value, dict):
            _flatten(value, source, out, spelled, f"{section}.{key}" if section else key)
            continue
        here = f"[{section}] {key}" if section else key
        if name in spelled:
            raise ConfigError(
                f"setting {name!r} is given twice in {source}: as {spelled[name]!r} "
                f"and as {here!r}",
                hint="keep one of them",
            )
        spelled[name] = here
        out[name] = value
    return out


def _unknown(name: str, source: str, known: list[str]) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(
        f"unknown setting {name!r} in {source}",
        hint=hint + "valid settings are listed in docs/configuration.md",
    )


_WS = " \t"  # TOML whitespace (str.strip() would also take other characters)
_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _simple_value(text: str) -> object:
    """A string, integer or boolean value (with an optional comment), else None."""
    if text[:1] in ('"', "'"):
        quote = text[0]
        if text.startswith(quote * 3):
            return None  # multi-line string: tomllib's job
        end = text.find(quote, 1)
        if end < 0:
            return None
        value = text[1:end]
        if (quote == '"' and "\\" in value) or any(
            (ord(c) < 0x20 and c != "\t") or c == "\x7f" for c in value
        ):
            return None  # escapes and control characters: tomllib's job
        rest = text[end + 1 :].strip(_WS)
        return value if not rest or rest.startswith("#") else None
    word = text.split("#", 1)[0].strip(_WS)
    if word in ("true", "false"):
        return word == "true"
    digits = word[1:] if word[:1] in ("+", "-") else word
    if digits.isascii() and digits.isdigit() and (digits == "0" or not digits.startswith("0")):
        return int(word)
    return None


def parse_simple_toml(text: str) -> dict[str, object] | None:
    """Parse the flat subset of TOML that walship's config files use.

    Tables of ``key = value`` lines with bare keys and string, integer or
    boolean values. Returns None for anything else (the caller then uses
    tomllib), so a result is always what tomllib would return. tomllib costs
    ~10 ms to import (it pulls in ``typing``), paid by every push and fetch.
    """
    out: dict[str, object] = {}
    table = out
    for raw in text.split("\n"):
        line = (raw[:-1] if raw.endswith("\r") else raw).strip(_WS)
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            name = line[1:-1].strip(_WS) if line.endswith("]") else ""
            if line.startswith("[[") or not name or not set(name) <= _BARE or name in out:
                return None
            table = out[name] = {}
            continue
        key, sep, rest = line.partition("=")
        key, rest = key.strip(_WS), rest.strip(_WS)
        if not sep or not key or not set(key) <= _BARE or key in table or not rest:
            return None
        value = _simple_value(rest)
        if value is None:
            return None
        table[key] = value
    return out


def read_toml(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist",
            hint=f"create it or point --config / {ENV_CONFIG} at an existing file",
        ) from None
    except PermissionError:
        raise ConfigError(
            f"config file {path} is not readable by this user",
            hint="PostgreSQL runs walship as the postgres user; make the file readable to it",
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid UTF-8 text") from None
    data = parse_simple_toml(text)
    if data is None:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return _flatten(data, path)


def load(
    *,
    config_path: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the effective :class:`Config` from file, environment and flags."""
    env = os.environ if env is None else env
    by_name = SETTINGS_BY_NAME
    known = sorted(by_name)

    from_env: dict[str, object] = {}
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name not in by_name:
            raise _unknown(name, f"environment variable {var}", known)
        if text == "":
            continue
        from_env[name] = _convert(name, text, f"environment variable {var}", by_name[name])

    values: dict[str, object] = {}
    path = config_path or str(from_env.get("config") or "")
    if path:
        file_values, source = read_toml(path), path
    elif os.path.exists(SYSTEM_CONFIG_PATH):
        file_values, source = read_toml(SYSTEM_CONFIG_PATH), SYSTEM_CONFIG_PATH
    else:
        file_values, source = {}, ""
    for name, raw in file_values.items():
        row = by_name.get(name)
        if row is None:
            raise _unknown(name, source, [n for n in known if by_name[n].in_file])
        if not row.in_file:
            raise ConfigError(
                f"{name!r} in {source} is not a file setting",
                hint=f"set it as {row.env} instead (see docs/configuration.md)",
            )
        values[name] = _convert(name, raw, source, row)

    values.update(from_env)
    if path:
        values["config"] = path
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        values[name] = _convert(name, raw, "the command line", by_name[name])

    return Config(**values)


def from_environment(name: str, env: Mapping[str, str] | None = None) -> object:
    """Setting ``name`` from its environment variable alone, when the configuration
    as a whole could not be loaded: its value, or its default if unset or invalid."""
    row = SETTINGS_BY_NAME[name]
    raw = (os.environ if env is None else env).get(row.env, "")
    if raw == "":
        return row.default
    try:
        return _convert(name, raw, f"environment variable {row.env}", row)
    except ConfigError:
        return row.default


def environment_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings given as ``WALSHIP_*`` variables (non-empty), as their raw text.

    For commands that write a command line for another process to run with
    the same settings (``backup-fetch``'s restore_command).
    """
    env = os.environ if env is None else env
    out: dict[str, str] = {}
    for row in SETTINGS:
        text = env.get(row.env, "")
        if text != "":
            out[row.name] = text
    return out


def markdown_table() -> str:
    """The settings reference table for docs/configuration.md."""
    rows = [
        "| setting | environment variable | type | default | description |",
        "|---|---|---|---|---|",
    ]
    for f in SETTINGS:
        kind = f.type.__name__
        if f.choices:
            kind = " \\| ".join(f"`{c}`" for c in f.choices)
        default = (
            "(required)"
            if f.required
            else ("(none)" if f.default is None else f"`{f.default!r}`".replace("'", '"'))
        )
        doc = f.doc + (" **Secret**: never echoed." if f.secret else "")
        name = f"`{f.name}`" if f.in_file else "(environment only)"
        rows.append(f"| {name} | `{f.env}` | {kind} | {default} | {doc} |")
    return "\n".join(rows) + "\n"
