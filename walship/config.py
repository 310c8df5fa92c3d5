"""Settings: one table, three sources.

Precedence, lowest first: built-in defaults < TOML file < ``WALSHIP_*``
environment variables < command-line flags. The file is the first of
``--config``, ``$WALSHIP_CONFIG``, ``/etc/walship/walship.toml`` that is given
(an explicitly named file must exist; the system path is optional).

TOML tables flatten with ``_``: ``[s3] region = "x"`` is the setting
``s3_region``, environment variable ``WALSHIP_S3_REGION``.

Every setting is a field of :class:`Config` carrying its documentation; the
table in docs/configuration.md is generated from it (``walship config-docs``)
and a test keeps the two in step. Settings marked secret are never echoed in
messages.
"""

from __future__ import annotations

import os

from .errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SYSTEM_CONFIG_PATH = "/etc/walship/walship.toml"
ENV_PREFIX = "WALSHIP_"
ENV_CONFIG = "WALSHIP_CONFIG"
#: variables that are not settings: the config file's path, and the directory of the
#: walship agent (removed; still accepted so that an old environment is not an error)
ENV_ONLY = (ENV_CONFIG, "WALSHIP_AGENT_DIR")


class Setting:
    """One row of the settings table."""

    __slots__ = (
        "choices",
        "default",
        "doc",
        "maximum",
        "minimum",
        "name",
        "required",
        "secret",
        "type",
    )

    def __init__(
        self,
        name: str,
        default: Any,
        doc: str,
        *,
        type_: type = str,
        choices: tuple[str, ...] | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        secret: bool = False,
        required: bool = False,
    ) -> None:
        self.name = name
        self.default = default
        self.doc = doc
        self.type = type_
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum
        self.secret = secret
        self.required = required


#: The settings table. Add a row here and an annotation on Config together.
SETTINGS: tuple[Setting, ...] = (
    # --- repository ---
    Setting(
        "repo",
        None,
        "Repository URL: a directory path or file:///path (local), s3://bucket/prefix, "
        "gs://bucket/prefix, az://container/prefix, or mem://name (tests).",
        required=True,
    ),
    # --- objects ---
    Setting(
        "compression",
        "zstd",
        "Compression of new objects. Old objects stay readable either way.",
        choices=("zstd", "none"),
    ),
    Setting(
        "compression_level",
        1,
        "zstd level for new objects (1 = fastest; see docs/benchmarks.md).",
        type_=int,
        minimum=-7,
        maximum=22,
    ),
    Setting(
        "compression_threads",
        0,
        "zstd worker threads (0 = compress in the calling thread).",
        type_=int,
        minimum=0,
        maximum=64,
    ),
    # --- encryption (docs/encryption.md) ---
    Setting(
        "encryption",
        "none",
        "Encryption of new objects: 'symmetric' (a secret key file), 'public-key' (an "
        "X25519 public key; reading needs the private key) or 'none'. Encrypted and "
        "plain objects can coexist; reading never depends on this setting.",
        choices=("none", "symmetric", "public-key"),
    ),
    Setting(
        "encryption_key_file",
        None,
        "Path of the current key file (made by `walship keygen`): new objects are "
        "encrypted to it, and it is also a read key. Symmetric mode: the secret key "
        "file; public-key mode: the .pub file (or the private key file). A path, never "
        "the key itself.",
    ),
    Setting(
        "encryption_keyring",
        None,
        "Path of a key file, or of a directory whose *.key files are read, holding "
        "further keys for reading (older keys after rotation, private keys on the "
        "restore host).",
    ),
    Setting(
        "encryption_cipher",
        "aes-256-gcm",
        "AEAD of new encrypted objects (chacha20-poly1305 for CPUs without AES instructions).",
        choices=("aes-256-gcm", "chacha20-poly1305"),
    ),
    # --- push and fetch ---
    Setting(
        "agent",
        True,
        "Deprecated, ignored: the walship agent (a fork-server per user) was removed; "
        "push look-ahead (archive_lookahead) replaces it. Still accepted so that existing "
        "config files keep working.",
        type_=bool,
    ),
    # --- push look-ahead (docs/push-fetch.md) ---
    Setting(
        "archive_lookahead",
        64,
        "Files `walship push` archives ahead of PostgreSQL's archiver when it falls behind "
        "(0: off): a background process pushes the oldest waiting .ready files of "
        "pg_wal/archive_status with the normal push rules and records each one, so the "
        "call for a file pushed ahead only checks its record. Never drops WAL: the backlog "
        "is reported by `walship archive-status`.",
        type_=int,
        minimum=0,
        maximum=4096,
    ),
    Setting(
        "push_concurrency",
        0,
        "Files the background process pushes at once (0: one per core for a local "
        "repository, four per core up to 16 for S3, GCS and Azure).",
        type_=int,
        minimum=0,
        maximum=64,
    ),
    Setting(
        "background_idle",
        300.0,
        "Seconds the walship background process stays without work before it exits "
        "(choose it above archive_timeout so a steady trickle keeps one process).",
        type_=float,
        minimum=1.0,
        maximum=86400.0,
    ),
    # --- fetch ---
    Setting(
        "fetch_error_exit",
        "abort",
        "What `walship fetch` does on a real error (not an absent file): 'abort' exits "
        "255 so recovery stops; 'missing' exits 1 like an absent file (a standby then "
        "retries or streams); 'auto' is 'missing' when standby.signal exists in the data "
        "directory and 'abort' otherwise.",
        choices=("abort", "missing", "auto"),
    ),
    Setting(
        "fetch_prefetch",
        8,
        "Segments `walship fetch` fetches ahead while PostgreSQL replays (0: off). The walship "
        "background process fills a spool in pg_wal/.walship/<tag>/f; each later fetch of a "
        "spooled segment checks it and renames it into place. Uses up to this many segments "
        "of disk in pg_wal during recovery. See docs/push-fetch.md.",
        type_=int,
        minimum=0,
        maximum=64,
    ),
    Setting(
        "pgdata",
        None,
        "Data directory, for fetch_error_exit = 'auto' and the cluster check on fetch. "
        "Default: the current directory (PostgreSQL runs restore_command there).",
    ),
    # --- remote storage: retries (S3, GCS, Azure) ---
    Setting(
        "retry_deadline",
        30.0,
        "Seconds a remote storage request (one PUT, one part, one listing page) is retried "
        "on transient faults (timeouts, resets, 5xx, throttling) before walship gives up. "
        "Only transient faults are retried. See docs/storage.md.",
        type_=float,
        minimum=0.0,
        maximum=3600.0,
    ),
    Setting(
        "retry_attempt_timeout",
        10.0,
        "Seconds one attempt may wait for the store to connect or send data (SDK "
        "connect/read timeouts; connect is capped at 5).",
        type_=float,
        minimum=0.1,
        maximum=600.0,
    ),
    # --- S3 ---
    Setting(
        "s3_region",
        None,
        "S3 region (default: boto3's chain: AWS_REGION, the profile, else us-east-1).",
    ),
    Setting(
        "s3_endpoint_url",
        None,
        "Endpoint of an S3-compatible store, e.g. http://minio:9000 (default: AWS).",
    ),
    Setting(
        "s3_force_path_style",
        False,
        "Address buckets as endpoint/bucket instead of bucket.endpoint (most "
        "S3-compatible stores need this).",
        type_=bool,
    ),
    Setting(
        "s3_profile",
        None,
        "Shared credentials/config profile (default: boto3's chain: environment, "
        "AWS_PROFILE, instance or task role).",
    ),
    Setting(
        "s3_sse",
        "none",
        "Server-side encryption of new objects: 'none' (the bucket default), 'AES256' "
        "(SSE-S3) or 'aws:kms' (SSE-KMS, see s3_sse_kms_key_id).",
        choices=("none", "AES256", "aws:kms"),
    ),
    Setting(
        "s3_sse_kms_key_id",
        None,
        "KMS key id or ARN for s3_sse = 'aws:kms' (default: the AWS managed key).",
    ),
    Setting(
        "s3_storage_class",
        None,
        "Storage class of new objects, e.g. STANDARD_IA (default: the bucket's). "
        "Do not use GLACIER/DEEP_ARCHIVE: fetch needs immediate reads.",
    ),
    Setting(
        "s3_checksum",
        "when_required",
        "Request checksums (botocore request_checksum_calculation): 'when_required' "
        "works with every S3-compatible store; 'when_supported' adds CRC32 trailers "
        "that AWS verifies but some compatible stores reject.",
        choices=("when_required", "when_supported"),
    ),
    Setting(
        "s3_part_size",
        16 << 20,
        "Bytes per multipart part at the start of a large upload; doubles every 1000 "
        "parts, so 10,000 parts cover >= 7.8 TiB. Objects below it are one PUT. Memory "
        "per upload is about one part up to 64 MiB; larger parts are spooled to a temp "
        "file and sent from it.",
        type_=int,
        minimum=8 << 20,
        maximum=5 << 30,
    ),
    # --- Google Cloud Storage ---
    Setting(
        "gcs_credentials_file",
        None,
        "Service-account JSON key file (default: Application Default Credentials).",
    ),
    Setting("gcs_project", None, "Project id (default: from the credentials)."),
    Setting(
        "gcs_endpoint_url",
        None,
        "API endpoint override, e.g. an emulator at http://127.0.0.1:4443 "
        "(default: https://storage.googleapis.com).",
    ),
    Setting(
        "gcs_anonymous",
        False,
        "Send no credentials (public buckets, emulators).",
        type_=bool,
    ),
    Setting(
        "gcs_chunk_size",
        16 << 20,
        "Bytes per resumable-upload chunk; objects below it are one request. A multiple "
        "of 256 KiB. Memory per upload is about one chunk up to 64 MiB; larger chunks "
        "are spooled to a temp file and sent from it.",
        type_=int,
        minimum=256 << 10,
        maximum=1 << 30,
    ),
    # --- Azure Blob ---
    Setting(
        "azure_account_url",
        None,
        "Blob service URL, e.g. https://ACCOUNT.blob.core.windows.net or an Azurite "
        "http://127.0.0.1:10000/devstoreaccount1 (default: from azure_account_name).",
    ),
    Setting("azure_account_name", None, "Storage account name."),
    Setting(
        "azure_connection_string",
        None,
        "Storage connection string (alternative to account + key/SAS).",
        secret=True,
    ),
    Setting("azure_account_key", None, "Storage account shared key.", secret=True),
    Setting("azure_sas_token", None, "Shared access signature (SAS) token.", secret=True),
    Setting(
        "azure_block_size",
        16 << 20,
        "Bytes per staged block at the start of a large upload (doubles every 1000 "
        "blocks); objects below it are one Put Blob. Memory per upload is about one "
        "block up to 64 MiB; larger blocks are spooled to a temp file and sent from it.",
        type_=int,
        minimum=1 << 20,
        maximum=4000 << 20,
    ),
    # --- segment index (docs/index.md) ---
    Setting(
        "index_on_push",
        False,
        "Also scan each pushed segment and store its index entry (commit times, xids, "
        "restore points) for restore planning. Off: run `walship index` instead. Costs "
        "about 50-150 ms of CPU per busy 16 MiB segment (docs/benchmarks.md); a failure "
        "to index never fails the push.",
        type_=bool,
    ),
    # --- logging ---
    Setting("log_format", "text", "Log line format on stderr.", choices=("text", "json")),
    Setting(
        "log_level",
        "info",
        "Least severe level logged (-v / -q shift it).",
        choices=("debug", "info", "warning", "error"),
    ),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


class Config:
    """Effective settings; one attribute per row of :data:`SETTINGS`."""

    repo: str | None
    compression: str
    compression_level: int
    compression_threads: int
    encryption: str
    encryption_key_file: str | None
    encryption_keyring: str | None
    encryption_cipher: str
    agent: bool
    archive_lookahead: int
    push_concurrency: int
    background_idle: float
    fetch_error_exit: str
    fetch_prefetch: int
    pgdata: str | None
    retry_deadline: float
    retry_attempt_timeout: float
    s3_region: str | None
    s3_endpoint_url: str | None
    s3_force_path_style: bool
    s3_profile: str | None
    s3_sse: str
    s3_sse_kms_key_id: str | None
    s3_storage_class: str | None
    s3_checksum: str
    s3_part_size: int
    gcs_credentials_file: str | None
    gcs_project: str | None
    gcs_endpoint_url: str | None
    gcs_anonymous: bool
    gcs_chunk_size: int
    azure_account_url: str | None
    azure_account_name: str | None
    azure_connection_string: str | None
    azure_account_key: str | None
    azure_sas_token: str | None
    azure_block_size: int
    index_on_push: bool
    log_format: str
    log_level: str

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


def _convert(name: str, raw: object, source: str, meta: Setting) -> object:
    kind = meta.type
    shown = "(hidden)" if meta.secret else repr(raw)
    where = f"setting {name!r} from {source}"
    try:
        if kind is bool:
            if isinstance(raw, bool):
                value: object = raw
            elif isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
                value = True
            elif isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off"):
                value = False
            else:
                raise ValueError
        elif kind is int:
            if isinstance(raw, bool):
                raise ValueError
            value = int(raw) if isinstance(raw, (int, str)) else _raise()
        elif kind is float:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw) if isinstance(raw, (int, float, str)) else _raise()
        else:
            if not isinstance(raw, str):
                raise ValueError
            value = raw
    except ValueError:
        raise ConfigError(
            f"{where} has bad value {shown}", hint=f"expected a {kind.__name__}"
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


def _raise() -> object:
    raise ValueError


def _flatten(table: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "_"))
        else:
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
    return _flatten(data)


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
    values: dict[str, object] = {}

    path = config_path or env.get(ENV_CONFIG) or None
    if path:
        file_values, source = read_toml(path), path
    elif os.path.exists(SYSTEM_CONFIG_PATH):
        file_values, source = read_toml(SYSTEM_CONFIG_PATH), SYSTEM_CONFIG_PATH
    else:
        file_values, source = {}, ""
    for name, raw in file_values.items():
        if name not in by_name:
            raise _unknown(name, source, known)
        values[name] = _convert(name, raw, source, by_name[name])

    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var in ENV_ONLY:
            continue
        name = var[len(ENV_PREFIX) :].lower()
        if name not in by_name:
            raise _unknown(name, f"environment variable {var}", known)
        if raw == "":
            continue
        values[name] = _convert(name, raw, f"environment variable {var}", by_name[name])

    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        values[name] = _convert(name, raw, "the command line", by_name[name])

    return Config(**values)


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
        rows.append(f"| `{f.name}` | `{ENV_PREFIX}{f.name.upper()}` | {kind} | {default} | {doc} |")
    return "\n".join(rows) + "\n"
