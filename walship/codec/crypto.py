"""Client-side encryption: streaming AEAD of object bodies (spec: docs/encryption.md).

Imported only when encryption is configured for writing, or when an object
being read is encrypted; it is the only module that imports ``cryptography``
(the ``crypto`` extra).

Per object: a fresh random 32-byte data key and 7-byte nonce prefix. The data
key is sealed (the object's AEAD, zero nonce) under a key-encryption key (KEK)
that is itself unique to the object:

* ``symmetric``: KEK = HKDF-SHA256(key file secret, salt = 16 random bytes,
  info "walship-v1 symmetric kek");
* ``public-key``: an ephemeral X25519 key agrees with the recipient's public
  key; KEK = HKDF-SHA256(shared, salt = ephemeral pub || recipient pub,
  info "walship-v1 x25519 kek").

The compressed body is cut into fixed-size plaintext chunks, each sealed with
AES-256-GCM or ChaCha20-Poly1305 under nonce ``prefix(7) || index(4, BE) ||
final(1)`` and associated data ``SHA-256(serialized object header)``. The
index stops reordering and duplication, the final flag stops truncation and
extension, and the header digest stops header tampering (key id included).

Key files are text (``walship-key-v1 <type> <base64>`` lines, see
:func:`parse_key_file`); key ids are 16 hex digits of an HKDF of the key and
reveal nothing about it. Messages never contain key material.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import stat

from ..errors import ConfigError, DecryptionError, IntegrityError, KeyNotConfigured, WalshipError

try:
    from cryptography.hazmat.bindings._rust import openssl as _rust_openssl
except ImportError:  # pragma: no cover - depends on the installation
    HAVE_CRYPTOGRAPHY = False
else:
    HAVE_CRYPTOGRAPHY = True


def _is_invalid_tag(exc: BaseException) -> bool:
    """True for cryptography's InvalidTag.

    ``cryptography.exceptions`` imports ``typing`` (~5 ms per process), so it is
    imported only on this failure path, never on a successful push or fetch.
    """
    from cryptography.exceptions import InvalidTag

    return isinstance(exc, InvalidTag)


TYPE_CHECKING = False  # typing costs ~5 ms to import: kept off fetch/push
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from ..config import Config
    from .envelope import Decryptor, Encryptor

SCHEME = "walship-stream"
VERSION = 1
CHUNK = 1 << 20  # plaintext bytes per sealed chunk
MIN_CHUNK = 16
MAX_CHUNK = 1 << 24  # a reader refuses more: memory stays bounded
TAG = 16
KEY_SIZE = 32
NONCE_PREFIX = 7
KEK_SALT = 16
WRAP_NONCE = bytes(12)  # each KEK wraps exactly one data key
WRAP_AAD = b"walship-v1 data key"
MAX_CHUNKS = 1 << 32  # the 4-byte chunk index

CIPHERS = ("aes-256-gcm", "chacha20-poly1305")
MODES = ("symmetric", "public-key")

KEY_FILE_TAG = "walship-key-v1"
SYMMETRIC = "symmetric"
X25519_PRIVATE = "x25519-private"
X25519_PUBLIC = "x25519-public"
KEY_TYPES = (SYMMETRIC, X25519_PRIVATE, X25519_PUBLIC)

INFO_ID_SYMMETRIC = b"walship-v1 key-id symmetric"
INFO_ID_X25519 = b"walship-v1 key-id x25519"
INFO_KEK_SYMMETRIC = b"walship-v1 symmetric kek"
INFO_KEK_X25519 = b"walship-v1 x25519 kek"

INSTALL_HINT = "install the crypto extra: pip install 'walship[crypto]'"


# --------------------------------------------------------------------------- keys


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) on hashlib's SHA-256.

    The same result as ``hmac.new(key, msg, hashlib.sha256).digest()``
    (tests/test_crypto.py checks), without importing ``hmac`` or fetching
    OpenSSL's HMAC: ~0.4 ms of every encrypted push and fetch.
    """
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(key.translate(_IPAD) + msg).digest()
    return hashlib.sha256(key.translate(_OPAD) + inner).digest()


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32, salt: bytes = b"") -> bytes:
    """HKDF-SHA256 (RFC 5869); an empty salt means 32 zero bytes."""
    if length > 255 * 32:
        raise ValueError("HKDF output too long")
    prk = hmac_sha256(salt or bytes(32), ikm)
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes([counter]))
        out += block
        counter += 1
    return out[:length]


def symmetric_key_id(secret: bytes) -> str:
    return hkdf_sha256(secret, INFO_ID_SYMMETRIC, 8).hex()


def x25519_key_id(public: bytes) -> str:
    return hkdf_sha256(public, INFO_ID_X25519, 8).hex()


def _x25519() -> Any:
    """The X25519 key constructors: ``from_private_bytes`` / ``from_public_bytes``.

    The public classes in ``cryptography.hazmat.primitives.asymmetric.x25519``
    import the whole OpenSSL backend module on first use (rsa, ec, padding...):
    about 13 ms per process, most of the cost of public-key mode for a
    once-per-segment process. Its Rust binding makes the very same key objects
    without that import, so use it when present, else the public classes.
    tests/test_crypto.py checks both give the same results.
    """
    try:
        binding = _rust_openssl.x25519
        if callable(binding.from_private_bytes) and callable(binding.from_public_bytes):
            return binding
    except AttributeError:  # pragma: no cover - other cryptography versions
        pass
    from types import SimpleNamespace

    from cryptography.hazmat.primitives.asymmetric import x25519

    return SimpleNamespace(
        from_private_bytes=x25519.X25519PrivateKey.from_private_bytes,
        from_public_bytes=x25519.X25519PublicKey.from_public_bytes,
    )


def x25519_public_of(private: bytes) -> bytes:
    require_cryptography()
    public: bytes = _x25519().from_private_bytes(private).public_key().public_bytes_raw()
    return public


class Key:
    """One key from a key file. ``kind`` is ``symmetric`` or ``x25519``."""

    __slots__ = ("key_id", "kind", "public", "secret", "source")

    def __init__(
        self, kind: str, *, secret: bytes | None, public: bytes | None, source: str
    ) -> None:
        self.kind = kind
        self.secret = secret  # symmetric key or X25519 private key
        self.public = public  # X25519 public key
        self.source = source
        if kind == SYMMETRIC:
            assert secret is not None
            self.key_id = symmetric_key_id(secret)
        else:
            assert public is not None
            self.key_id = x25519_key_id(public)

    @property
    def can_decrypt(self) -> bool:
        return self.secret is not None

    @property
    def mode(self) -> str:
        return "symmetric" if self.kind == SYMMETRIC else "public-key"

    @property
    def description(self) -> str:
        if self.kind == SYMMETRIC:
            return "symmetric key"
        return "X25519 private key" if self.secret is not None else "X25519 public key"

    def __repr__(self) -> str:  # never the key material
        return f"Key({self.description}, id {self.key_id}, from {self.source})"


def format_key_line(key_type: str, material: bytes) -> str:
    return f"{KEY_FILE_TAG} {key_type} {binascii.b2a_base64(material, newline=False).decode()}\n"


def parse_key_file(text: str, source: str) -> list[Key]:
    """Keys of a key file: ``walship-key-v1 <type> <base64 of 32 bytes>`` lines.

    Blank lines and lines starting with ``#`` are ignored. Errors name the file
    and line, never the line's content.
    """
    keys: list[Key] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"key file {source} line {number}"
        if len(fields) != 3 or fields[0] != KEY_FILE_TAG:
            raise ConfigError(
                f"{where} is not a walship key line",
                hint=f"expected '{KEY_FILE_TAG} <type> <base64 key>' as written by walship keygen",
            )
        key_type = fields[1]
        if key_type not in KEY_TYPES:
            raise ConfigError(
                f"{where} has unknown key type {key_type!r}",
                hint=f"use one of: {', '.join(KEY_TYPES)}",
            )
        try:
            material = binascii.a2b_base64(fields[2], strict_mode=True)
        except (binascii.Error, ValueError):
            material = b""
        if len(material) != KEY_SIZE:
            raise ConfigError(
                f"{where}: the {key_type} key is not 32 bytes of base64",
                hint="the file is damaged; restore it from your key backup",
            )
        if key_type == SYMMETRIC:
            keys.append(Key(SYMMETRIC, secret=material, public=None, source=source))
        elif key_type == X25519_PRIVATE:
            keys.append(
                Key("x25519", secret=material, public=x25519_public_of(material), source=source)
            )
        else:
            keys.append(Key("x25519", secret=None, public=material, source=source))
    return keys


def check_key_file_mode(st: os.stat_result, path: str, setting: str) -> None:
    """Refuse a secret key file that other users can read or anyone else can write.

    Like PostgreSQL's rule for its TLS key: mode 0600 or stricter, or 0640 or
    stricter when owned by root (so a root-managed file can be shared with the
    postgres group).
    """
    mode = stat.S_IMODE(st.st_mode)
    allowed = 0o740 if st.st_uid == 0 else 0o700  # the owner's own bits never matter
    if mode & ~allowed & 0o777:
        raise ConfigError(
            f"key file {path} ({setting}) has mode {mode:04o}: other users can read or "
            "change a secret key",
            hint=f"run: chmod 600 {path} (or 0640 and owner root); see docs/encryption.md",
        )


def read_key_file(path: str, setting: str) -> list[Key]:
    """Read and parse one key file, checking permissions when it holds secrets."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError(
            f"key file {path} ({setting}) does not exist",
            hint="create keys with `walship keygen` (see docs/encryption.md)",
        ) from None
    except PermissionError:
        raise ConfigError(
            f"key file {path} ({setting}) is not readable by this user",
            hint="walship runs as the database's OS user; make the file readable to it only",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot open key file {path} ({setting}): {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"key file {path} ({setting}) is not a regular file")
        if st.st_size > 1 << 16:
            raise ConfigError(f"key file {path} ({setting}) is too large to be a key file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(1 << 16)
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path} ({setting}): {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(
            f"key file {path} ({setting}) is not a walship key file (not ASCII text)"
        ) from None
    keys = parse_key_file(text, path)
    if not keys:
        raise ConfigError(f"key file {path} ({setting}) holds no keys")
    if any(k.secret is not None for k in keys):
        check_key_file_mode(st, path, setting)
    return keys


class Keyring:
    """The keys configured for one :class:`Config`: one to write, many to read."""

    def __init__(self) -> None:
        self.keys: dict[str, Key] = {}

    def add(self, key: Key) -> None:
        have = self.keys.get(key.key_id)
        if have is None or (not have.can_decrypt and key.can_decrypt):
            self.keys[key.key_id] = key

    def ids(self) -> list[str]:
        return sorted(self.keys)

    def describe(self) -> str:
        if not self.keys:
            return "none"
        return ", ".join(
            k.key_id + ("" if k.can_decrypt else " (public only)")
            for k in sorted(self.keys.values(), key=lambda k: k.key_id)
        )


def _keyring_paths(path: str) -> Iterable[str]:
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            raise ConfigError(
                f"cannot list keyring directory {path} (encryption_keyring): {exc.strerror}"
            ) from None
        for name in names:
            full = os.path.join(path, name)
            if name.endswith(".key") and os.path.isfile(full):
                yield full
    elif os.path.exists(path):
        yield path
    else:
        raise ConfigError(
            f"keyring {path} (encryption_keyring) does not exist",
            hint="point encryption_keyring at a key file or a directory of *.key files",
        )


def write_key(cfg: Config) -> Key:
    """The current key for new objects (``encryption_key_file``), mode-checked."""
    mode = cfg.encryption
    path = cfg.encryption_key_file
    if not path:
        kind = "symmetric" if mode == "symmetric" else "public-key"
        raise ConfigError(
            f"encryption = {mode!r} needs the setting 'encryption_key_file'",
            hint=f"create a key with `walship keygen --mode {kind} PATH` and set "
            "encryption_key_file (or WALSHIP_ENCRYPTION_KEY_FILE) to its path",
        )
    cached = _write_cache.get((mode, path))
    if cached is not None:
        return cached
    keys = read_key_file(path, "encryption_key_file")
    if len(keys) != 1:
        raise ConfigError(
            f"key file {path} (encryption_key_file) holds {len(keys)} keys; it must hold one",
            hint="put older keys into encryption_keyring instead",
        )
    key = keys[0]
    if key.mode != mode:
        raise ConfigError(
            f"encryption = {mode!r} but encryption_key_file {path} holds a {key.description}",
            hint="use a key made by `walship keygen --mode "
            f"{mode}` or change the encryption setting",
        )
    _write_cache[(mode, path)] = key
    return key


def keyring(cfg: Config) -> Keyring:
    """Every key configured for reading: ``encryption_key_file`` + ``encryption_keyring``."""
    settings = (cfg.encryption_key_file, cfg.encryption_keyring)
    cached = _read_cache.get(settings)
    if cached is not None:
        return cached
    ring = Keyring()
    if cfg.encryption_key_file:
        for key in read_key_file(cfg.encryption_key_file, "encryption_key_file"):
            ring.add(key)
    if cfg.encryption_keyring:
        for path in _keyring_paths(cfg.encryption_keyring):
            for key in read_key_file(path, "encryption_keyring"):
                ring.add(key)
    _read_cache[settings] = ring
    return ring


# Key files are read once per process (walship push/fetch are one process per file).
_write_cache: dict[tuple[str, str], Key] = {}
_read_cache: dict[tuple[str | None, str | None], Keyring] = {}


# ------------------------------------------------------------------ the stream


def require_cryptography() -> None:
    if not HAVE_CRYPTOGRAPHY:
        raise ConfigError(
            "encryption needs the Python package 'cryptography', which is not installed",
            hint=INSTALL_HINT,
        )


def _aead_classes() -> tuple[Any, Any]:
    """(AESGCM, ChaCha20Poly1305) of ``cryptography``.

    ``cryptography.hazmat.primitives.ciphers.aead`` is only ``AESGCM =
    rust_openssl.aead.AESGCM`` (and so on), but importing it runs the
    ``ciphers`` package (modes, algorithms, decrepit...): about 7 ms per
    process. Take the same classes from the binding when it has them.
    tests/test_crypto.py checks they are the public classes.
    """
    try:
        aead = _rust_openssl.aead
        return aead.AESGCM, aead.ChaCha20Poly1305
    except AttributeError:  # pragma: no cover - other cryptography versions
        from cryptography.hazmat.primitives.ciphers import aead as public

        return public.AESGCM, public.ChaCha20Poly1305


def _aead(cipher: str, key: bytes) -> Any:
    aes, chacha = _aead_classes()
    return aes(key) if cipher == "aes-256-gcm" else chacha(key)


def chunk_nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if final else b"\x00")


class StreamEncryptor:
    """Seals a body as fixed-size chunks; buffers at most one chunk."""

    def __init__(
        self,
        header: dict[str, Any],
        cipher: str,
        data_key: bytes,
        nonce_prefix: bytes,
        chunk_size: int,
    ) -> None:
        self._header = header
        self._aead = _aead(cipher, data_key)
        self._prefix = nonce_prefix
        self._chunk = chunk_size
        self._buf = bytearray()
        self._index = 0
        self._aad: bytes | None = None

    def header(self) -> dict[str, Any]:
        return dict(self._header)

    def start(self, aad: bytes) -> bytes:
        self._aad = hashlib.sha256(aad).digest()
        return b""

    def _seal(self, data: bytes | bytearray | memoryview, final: bool) -> bytes:
        if self._aad is None:
            raise RuntimeError("StreamEncryptor.start() must be called first")
        if self._index >= MAX_CHUNKS:
            raise WalshipError("object too large to encrypt (more than 2^32 chunks)")
        nonce = chunk_nonce(self._prefix, self._index, final)
        self._index += 1
        sealed: bytes = self._aead.encrypt(nonce, data, self._aad)
        return sealed

    def update(self, data: bytes) -> bytes:
        out: list[bytes] = []
        buf = self._buf
        size = self._chunk
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if len(buf) == size:  # full, and more follows: not the last chunk
                out.append(self._seal(buf, False))
                buf.clear()
            if not buf and end - pos > size:
                out.append(self._seal(view[pos : pos + size], False))
                pos += size
                continue
            take = min(size - len(buf), end - pos)
            buf += view[pos : pos + take]
            pos += take
        return b"".join(out)

    def finalize(self) -> bytes:
        last = self._seal(self._buf, True)
        self._buf.clear()
        return last


class StreamDecryptor:
    """Opens the chunks of :class:`StreamEncryptor`; holds at most one sealed chunk."""

    def __init__(
        self, cipher: str, data_key: bytes, nonce_prefix: bytes, chunk_size: int, where: str
    ) -> None:
        self._aead = _aead(cipher, data_key)
        self._prefix = nonce_prefix
        self._sealed = chunk_size + TAG
        self._where = where
        self._buf = bytearray()
        self._index = 0
        self._aad: bytes | None = None

    def start(self, aad: bytes) -> None:
        self._aad = hashlib.sha256(aad).digest()

    def _open(self, data: bytes | bytearray | memoryview, final: bool) -> bytes:
        if self._aad is None:
            raise RuntimeError("StreamDecryptor.start() must be called first")
        if self._index >= MAX_CHUNKS:
            raise DecryptionError(f"{self._where}: encrypted object has too many chunks")
        nonce = chunk_nonce(self._prefix, self._index, final)
        try:
            plain: bytes = self._aead.decrypt(nonce, data, self._aad)
        except Exception as exc:
            if not _is_invalid_tag(exc):
                raise
            what = "its last chunk" if final else f"chunk {self._index}"
            raise DecryptionError(
                f"{self._where}: encrypted object fails authentication at {what}: "
                "it is tampered, truncated, reordered or corrupt",
                hint="do not use this copy; restore the object from another copy of the archive",
            ) from None
        self._index += 1
        return plain

    def update(self, data: bytes) -> bytes:
        # A sealed chunk is known to be non-final only once a byte after it has
        # arrived, so up to one whole sealed chunk stays buffered. Chunks lying
        # entirely inside ``data`` are opened in place, without copying.
        buf = self._buf
        size = self._sealed
        view = memoryview(data)
        end = len(view)
        pos = 0
        out: list[bytes] = []
        if buf:
            pos = min(size - len(buf), end)
            buf += view[:pos]
            if pos == end:  # nothing after the buffered bytes yet
                return b""
            out.append(self._open(buf, False))
            buf.clear()
        while end - pos > size:  # more follows: not the last chunk
            out.append(self._open(view[pos : pos + size], False))
            pos += size
        buf += view[pos:]
        return b"".join(out)

    def finalize(self) -> bytes:
        if len(self._buf) < TAG:
            raise DecryptionError(
                f"{self._where}: encrypted object is truncated (its last chunk is missing)",
                hint="do not use this copy; restore the object from another copy of the archive",
            )
        last = self._open(self._buf, True)
        self._buf.clear()
        return last


# ------------------------------------------------------------- key wrapping


def _x25519_kek(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return hkdf_sha256(shared, INFO_KEK_X25519, 32, salt=ephemeral_public + recipient_public)


def _wrap(cipher: str, kek: bytes, data_key: bytes) -> bytes:
    """Seal the data key under a KEK used for this one object (so a fixed nonce)."""
    wrapped: bytes = _aead(cipher, kek).encrypt(WRAP_NONCE, data_key, WRAP_AAD)
    return wrapped


def _unwrap(cipher: str, kek: bytes, wrapped: bytes, key_id: str, where: str) -> bytes:
    try:
        data_key: bytes = _aead(cipher, kek).decrypt(WRAP_NONCE, wrapped, WRAP_AAD)
    except Exception as exc:
        if not _is_invalid_tag(exc):
            raise
        raise DecryptionError(
            f"{where}: the data key does not unwrap with key id {key_id}: "
            "the object header is tampered or corrupt",
            hint="do not use this copy; restore the object from another copy of the archive",
        ) from None
    return data_key


def build_encryptor(
    key: Key,
    *,
    cipher: str = "aes-256-gcm",
    chunk_size: int = CHUNK,
    data_key: bytes | None = None,
    nonce_prefix: bytes | None = None,
    kek_salt: bytes | None = None,
    ephemeral_private: bytes | None = None,
) -> StreamEncryptor:
    """An encryptor for one object under ``key``.

    The random inputs can be given for known-answer tests; in normal use they
    are fresh from the OS random source for every object.
    """
    require_cryptography()
    if cipher not in CIPHERS:
        raise ConfigError(f"unknown encryption_cipher {cipher!r}", hint=f"use one of {CIPHERS}")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ValueError("chunk size out of range")
    data_key = os.urandom(KEY_SIZE) if data_key is None else data_key
    nonce_prefix = os.urandom(NONCE_PREFIX) if nonce_prefix is None else nonce_prefix
    header: dict[str, Any] = {
        "scheme": SCHEME,
        "version": VERSION,
        "mode": key.mode,
        "key_id": key.key_id,
        "cipher": cipher,
        "chunk_size": chunk_size,
        "nonce_prefix": nonce_prefix.hex(),
    }
    if key.kind == SYMMETRIC:
        assert key.secret is not None
        kek_salt = os.urandom(KEK_SALT) if kek_salt is None else kek_salt
        kek = hkdf_sha256(key.secret, INFO_KEK_SYMMETRIC, 32, salt=kek_salt)
        header["kek_salt"] = kek_salt.hex()
    else:
        assert key.public is not None
        x25519 = _x25519()
        if ephemeral_private is None:
            ephemeral_private = os.urandom(KEY_SIZE)
        eph = x25519.from_private_bytes(ephemeral_private)
        eph_public = eph.public_key().public_bytes_raw()
        shared = eph.exchange(x25519.from_public_bytes(key.public))
        kek = _x25519_kek(shared, eph_public, key.public)
        header["ephemeral_public_key"] = eph_public.hex()
    header["wrapped_key"] = _wrap(cipher, kek, data_key).hex()
    return StreamEncryptor(header, cipher, data_key, nonce_prefix, chunk_size)


def make_encryptor(cfg: Config) -> Encryptor:
    """Encryptor for one new object with the configured current key."""
    require_cryptography()
    return build_encryptor(write_key(cfg), cipher=cfg.encryption_cipher)


def _field_hex(enc: dict[str, Any], name: str, size: int, where: str) -> bytes:
    value = enc.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise IntegrityError(f"{where}: encryption header field {name!r} is malformed")
    return raw


def parse_header(enc: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate an object's ``encryption`` header; returns it with decoded bytes."""
    if not isinstance(enc, dict):
        raise IntegrityError(f"{where}: malformed encryption header")
    scheme, version = enc.get("scheme"), enc.get("version")
    if scheme != SCHEME or version != VERSION:
        raise IntegrityError(
            f"{where} uses encryption scheme {scheme!r} version {version!r}, "
            "which this walship cannot read",
            hint="upgrade walship to read it",
        )
    mode, cipher, key_id = enc.get("mode"), enc.get("cipher"), enc.get("key_id")
    chunk_size = enc.get("chunk_size")
    if mode not in MODES:
        raise IntegrityError(f"{where}: encryption header field 'mode' is malformed")
    if cipher not in CIPHERS:
        raise IntegrityError(
            f"{where} uses cipher {cipher!r}, which this walship cannot read",
            hint="upgrade walship to read it",
        )
    if not isinstance(key_id, str) or len(key_id) != 16:
        raise IntegrityError(f"{where}: encryption header field 'key_id' is malformed")
    if (
        not isinstance(chunk_size, int)
        or isinstance(chunk_size, bool)
        or not MIN_CHUNK <= chunk_size <= MAX_CHUNK
    ):
        raise IntegrityError(f"{where}: encryption header field 'chunk_size' is malformed")
    out: dict[str, Any] = {
        "mode": mode,
        "cipher": cipher,
        "key_id": key_id,
        "chunk_size": chunk_size,
        "nonce_prefix": _field_hex(enc, "nonce_prefix", NONCE_PREFIX, where),
        "wrapped_key": _field_hex(enc, "wrapped_key", KEY_SIZE + TAG, where),
    }
    if mode == "public-key":
        out["ephemeral_public_key"] = _field_hex(enc, "ephemeral_public_key", 32, where)
    else:
        out["kek_salt"] = _field_hex(enc, "kek_salt", KEK_SALT, where)
    return out


def unwrap_data_key(key: Key, fields: dict[str, Any], where: str) -> bytes:
    require_cryptography()
    assert key.secret is not None
    if key.kind == SYMMETRIC:
        kek = hkdf_sha256(key.secret, INFO_KEK_SYMMETRIC, 32, salt=fields["kek_salt"])
    else:
        assert key.public is not None
        eph_public: bytes = fields["ephemeral_public_key"]
        x25519 = _x25519()
        try:
            shared = x25519.from_private_bytes(key.secret).exchange(
                x25519.from_public_bytes(eph_public)
            )
        except ValueError:
            raise DecryptionError(
                f"{where}: encryption header holds an invalid ephemeral key (tampered)"
            ) from None
        kek = _x25519_kek(shared, eph_public, key.public)
    return _unwrap(fields["cipher"], kek, fields["wrapped_key"], key.key_id, where)


def make_decryptor(cfg: Config, enc_header: dict[str, Any], where: str) -> Decryptor:
    """Decryptor for the object ``where`` whose header holds ``enc_header``."""
    require_cryptography()
    fields = parse_header(enc_header, where)
    key_id: str = fields["key_id"]
    ring = keyring(cfg)
    key = ring.keys.get(key_id)
    if key is None or not key.can_decrypt:
        why = "only its public key is configured" if key is not None else "it is not configured"
        raise KeyNotConfigured(
            f"{where} is encrypted with key id {key_id}, but {why} "
            f"(configured key ids: {ring.describe()})",
            hint="add the key file with that id to encryption_keyring "
            "(`walship keygen --show FILE` prints a file's key id); see docs/encryption.md",
        )
    if key.mode != fields["mode"]:
        raise DecryptionError(
            f"{where}: encryption header names key id {key_id} with mode "
            f"{fields['mode']!r}, but that key is a {key.description} (tampered header)"
        )
    data_key = unwrap_data_key(key, fields, where)
    return StreamDecryptor(
        fields["cipher"], data_key, fields["nonce_prefix"], fields["chunk_size"], where
    )
