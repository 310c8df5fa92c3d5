"""Client-side encryption (walship/codec/crypto.py, docs/encryption.md).

Streams, key files, keyrings, rotation, tampering, and a mixed plain/encrypted
repository driven through the real push/fetch code on the in-memory backend.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import make_segment, segment_name
from hypothesis import given, settings
from hypothesis import strategies as st

from walship import repository
from walship.archive import fetch, push
from walship.codec import crypto, envelope, objects
from walship.config import Config, load
from walship.errors import (
    ConfigError,
    ConflictError,
    DecryptionError,
    IntegrityError,
    KeyNotConfigured,
)
from walship.storage import memory

# ----------------------------------------------------------------- helpers


def write_key(path: str, key_type: str, material: bytes, mode: int = 0o600) -> str:
    with open(path, "w") as fh:
        fh.write("# test key\n" + crypto.format_key_line(key_type, material))
    os.chmod(path, mode)
    return path


def new_symmetric(path: str) -> str:
    return write_key(path, crypto.SYMMETRIC, os.urandom(32))


def new_pair(directory: str, stem: str) -> tuple[str, str]:
    """(private key path, public key path) of a fresh X25519 pair."""
    private = os.urandom(32)
    priv = write_key(os.path.join(directory, stem + ".key"), crypto.X25519_PRIVATE, private)
    pub = write_key(
        os.path.join(directory, stem + ".pub"),
        crypto.X25519_PUBLIC,
        crypto.x25519_public_of(private),
    )
    return priv, pub


def key_id_of(path: str) -> str:
    (key,) = crypto.read_key_file(path, "test")
    return key.key_id


def cfg_for(repo: str = "mem://crypto", **settings: Any) -> Config:
    settings.setdefault("pgdata", "/nonexistent-pgdata")
    return Config(repo=repo, **settings)


def encode_object(
    cfg: Config,
    raw: bytes,
    *,
    name: str = "00000002.history",
    compression: str = "none",
    chunk_size: int = 64,
    pieces: int = 1,
) -> bytes:
    """A whole stored object (envelope + body) for ``raw``, with small chunks."""
    key = crypto.write_key(cfg)
    enc = crypto.build_encryptor(key, cipher=cfg.encryption_cipher, chunk_size=chunk_size)
    header = {
        "name": name,
        "kind": "history",
        "compression": compression,
        "raw_size": len(raw),
        "raw_sha256": hashlib.sha256(raw).hexdigest(),
    }
    step = max(1, len(raw) // pieces)
    chunks = [raw[i : i + step] for i in range(0, len(raw), step)] or [b""]
    return b"".join(envelope.encode(header, chunks, encryptor=enc))


def decode_object(cfg: Config, data: bytes, split: int = 1 << 20) -> bytes:
    parts = iter([data[i : i + split] for i in range(0, len(data), split)])
    _, raw = envelope.decode(parts, "mem://t/obj", decryptor_factory=objects.decryptor_factory(cfg))
    return b"".join(raw)


def split_object(data: bytes) -> tuple[bytes, dict[str, Any], bytes]:
    """(serialized header bytes, header dict, body)."""
    (length,) = struct.unpack(">I", data[8:12])
    head = data[: 12 + length]
    return head, json.loads(data[12 : 12 + length]), data[12 + length :]


def reheader(header: dict[str, Any], body: bytes) -> bytes:
    return envelope.serialize_header(header) + body


@pytest.fixture
def sym_cfg(tmp_path: Any) -> Config:
    path = new_symmetric(f"{tmp_path}/current.key")
    return cfg_for(encryption="symmetric", encryption_key_file=path)


@pytest.fixture
def pk_cfg(tmp_path: Any) -> Config:
    """Public-key mode, with the private key configured (a restore host)."""
    priv, _pub = new_pair(str(tmp_path), "pk")
    return cfg_for(encryption="public-key", encryption_key_file=priv)


MODES = ["symmetric", "public-key", "chacha20"]


@pytest.fixture(params=MODES)
def any_cfg(request: pytest.FixtureRequest, tmp_path: Any) -> Config:
    if request.param == "public-key":
        priv, _ = new_pair(str(tmp_path), "pk")
        return cfg_for(encryption="public-key", encryption_key_file=priv)
    path = new_symmetric(f"{tmp_path}/k.key")
    cipher = "chacha20-poly1305" if request.param == "chacha20" else "aes-256-gcm"
    return cfg_for(encryption="symmetric", encryption_key_file=path, encryption_cipher=cipher)


@pytest.fixture
def mem() -> Iterator[memory.MemoryBackend]:
    memory.reset("crypto")
    yield memory.MemoryBackend("crypto")
    memory.reset("crypto")


# ------------------------------------------------------------ round trips


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 1000])
def test_round_trip_sizes_around_chunk_boundaries(any_cfg: Config, size: int) -> None:
    raw = os.urandom(size)
    data = encode_object(any_cfg, raw)
    assert size < 16 or raw not in data
    assert decode_object(any_cfg, data) == raw
    # sealed layout: ceil(size/64) chunks (at least one), each +16 bytes of tag
    _, header, body = split_object(data)
    chunks = max(1, -(-size // 64))
    assert len(body) == size + 16 * chunks
    assert header["encryption"]["key_id"] == key_id_of(any_cfg.encryption_key_file or "")


def test_round_trip_with_irregular_input_and_ciphertext_splits(any_cfg: Config) -> None:
    raw = os.urandom(5000)
    key = crypto.write_key(any_cfg)
    rng = random.Random(7)
    outputs = set()
    for _ in range(5):
        enc = crypto.build_encryptor(
            key,
            cipher=any_cfg.encryption_cipher,
            chunk_size=100,
            data_key=b"k" * 32,
            nonce_prefix=b"p" * 7,
            ephemeral_private=b"e" * 32,
        )
        enc.start(b"header")
        out, pos = [], 0
        while pos < len(raw):
            n = rng.randint(0, 350)
            out.append(enc.update(raw[pos : pos + n]))
            pos += n
        out.append(enc.finalize())
        outputs.add(b"".join(out))
    assert len(outputs) == 1, "ciphertext must not depend on how the input was split"
    sealed = outputs.pop()
    fields = crypto.parse_header(enc.header(), "x")
    for _ in range(5):
        dec = crypto.StreamDecryptor(
            any_cfg.encryption_cipher, b"k" * 32, fields["nonce_prefix"], 100, "x"
        )
        dec.start(b"header")
        got, pos = [], 0
        while pos < len(sealed):
            n = rng.randint(0, 400)
            got.append(dec.update(sealed[pos : pos + n]))
            pos += n
        got.append(dec.finalize())
        assert b"".join(got) == raw


def test_memory_is_bounded_by_one_chunk(sym_cfg: Config) -> None:
    key = crypto.write_key(sym_cfg)
    enc = crypto.build_encryptor(key, chunk_size=1 << 16)
    enc.start(b"h")
    fields = crypto.parse_header(enc.header(), "x")
    dec = crypto.StreamDecryptor(
        "aes-256-gcm",
        crypto.unwrap_data_key(key, fields, "x"),
        fields["nonce_prefix"],
        1 << 16,
        "x",
    )
    dec.start(b"h")
    total = 0
    for piece in (os.urandom(200_000), os.urandom(1), os.urandom(70_000), os.urandom(300_000)):
        sealed = enc.update(piece)
        assert len(enc._buf) <= 1 << 16
        total += len(dec.update(sealed))
        assert len(dec._buf) <= (1 << 16) + crypto.TAG
    total += len(dec.update(enc.finalize()))
    total += len(dec.finalize())
    assert total == 570_001


def test_every_object_gets_a_fresh_data_key_and_nonce_prefix(sym_cfg: Config) -> None:
    raw = b"same plaintext" * 10
    a, b = encode_object(sym_cfg, raw), encode_object(sym_cfg, raw)
    ha, hb = split_object(a)[1]["encryption"], split_object(b)[1]["encryption"]
    assert ha["wrapped_key"] != hb["wrapped_key"]
    assert ha["nonce_prefix"] != hb["nonce_prefix"]
    assert split_object(a)[2] != split_object(b)[2]


def test_push_fetch_segment_round_trip(any_cfg: Config, mem: Any, tmp_path: Any) -> None:
    seg = make_segment(3)
    src = f"{tmp_path}/seg"
    with open(src, "wb") as fh:
        fh.write(seg)
    name = segment_name(3)
    result = push.push(any_cfg, mem, src, name)
    assert not result.already
    stored = memory._STORES["crypto"][repository.key_for(name)][0]
    _, header, body = split_object(stored)
    assert header["encryption"]["mode"] == any_cfg.encryption
    assert seg[100:4096] not in body
    fetch.fetch(any_cfg, mem, name, f"{tmp_path}/out")
    with open(f"{tmp_path}/out", "rb") as fh:
        assert fh.read() == seg


# --------------------------------------------------------- known answers


def test_hkdf_matches_rfc5869_case_1() -> None:
    okm = crypto.hkdf_sha256(
        b"\x0b" * 22, bytes(range(0xF0, 0xFA)), 42, salt=bytes(range(0x0D))
    ).hex()
    assert okm == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_matches_cryptography_with_empty_salt() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    for ikm in (b"", b"x" * 32, os.urandom(77)):
        ref = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"i").derive(ikm)
        assert crypto.hkdf_sha256(ikm, b"i") == ref


KAT_KEY = bytes(range(32))
KAT_DATA_KEY = bytes(range(0x40, 0x60))
KAT_PREFIX = bytes.fromhex("a0a1a2a3a4a5a6")
KAT_EPHEMERAL = bytes(range(0x80, 0xA0))
KAT_SALT = bytes(range(0xC0, 0xD0))
KAT_AAD = b"walship known-answer header"
KAT_PLAIN = b"The quick brown fox jumps over the lazy dog. " * 3  # 135 bytes


def _kat(key: crypto.Key, cipher: str) -> tuple[dict[str, Any], bytes]:
    enc = crypto.build_encryptor(
        key,
        cipher=cipher,
        chunk_size=64,
        data_key=KAT_DATA_KEY,
        nonce_prefix=KAT_PREFIX,
        kek_salt=KAT_SALT,
        ephemeral_private=KAT_EPHEMERAL,
    )
    enc.start(KAT_AAD)
    return enc.header(), enc.update(KAT_PLAIN) + enc.finalize()


def test_key_ids_known_answers() -> None:
    assert crypto.symmetric_key_id(KAT_KEY) == "4d92c24836c6fbd1"
    public = crypto.x25519_public_of(KAT_KEY)
    assert public.hex() == "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f"
    assert crypto.x25519_key_id(public) == "a3651eceb1e4ef8e"


def test_x25519_binding_matches_the_public_api() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    fast = crypto._x25519()
    for _ in range(5):
        a, b = os.urandom(32), os.urandom(32)
        pub_b = X25519PrivateKey.from_private_bytes(b).public_key().public_bytes_raw()
        assert crypto.x25519_public_of(b) == pub_b
        ref = X25519PrivateKey.from_private_bytes(a).exchange(
            X25519PublicKey.from_public_bytes(pub_b)
        )
        assert fast.from_private_bytes(a).exchange(fast.from_public_bytes(pub_b)) == ref
    with pytest.raises(ValueError):  # low-order point: refused, as by the public API
        fast.from_private_bytes(a).exchange(fast.from_public_bytes(bytes(32)))


def test_symmetric_known_answer() -> None:
    key = crypto.Key(crypto.SYMMETRIC, secret=KAT_KEY, public=None, source="kat")
    header, sealed = _kat(key, "aes-256-gcm")
    assert header == {
        "scheme": "walship-stream",
        "version": 1,
        "mode": "symmetric",
        "key_id": "4d92c24836c6fbd1",
        "cipher": "aes-256-gcm",
        "chunk_size": 64,
        "nonce_prefix": "a0a1a2a3a4a5a6",
        "kek_salt": KAT_SALT.hex(),
        "wrapped_key": KAT_SYM_WRAPPED,
    }
    assert hashlib.sha256(sealed).hexdigest() == KAT_SYM_SEALED_SHA256
    assert len(sealed) == 135 + 3 * 16
    # chunk 1 of 3, straight from the documented construction
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = KAT_PREFIX + (1).to_bytes(4, "big") + b"\x00"
    aad = hashlib.sha256(KAT_AAD).digest()
    assert sealed[80:160] == AESGCM(KAT_DATA_KEY).encrypt(nonce, KAT_PLAIN[64:128], aad)
    final = KAT_PREFIX + (2).to_bytes(4, "big") + b"\x01"
    assert sealed[160:] == AESGCM(KAT_DATA_KEY).encrypt(final, KAT_PLAIN[128:], aad)


def test_public_key_known_answer() -> None:
    public = crypto.x25519_public_of(KAT_KEY)
    key = crypto.Key("x25519", secret=None, public=public, source="kat")
    header, sealed = _kat(key, "chacha20-poly1305")
    assert header["mode"] == "public-key"
    assert header["key_id"] == "a3651eceb1e4ef8e"
    assert header["ephemeral_public_key"] == crypto.x25519_public_of(KAT_EPHEMERAL).hex()
    assert header["wrapped_key"] == KAT_PK_WRAPPED
    assert hashlib.sha256(sealed).hexdigest() == KAT_PK_SEALED_SHA256


KAT_SYM_WRAPPED = (
    "bb288fb48d500792fb7aed4074fabcc85faf4a21e66e37fb6faaaed54b34fa73"
    "fe6d77235edb3fc510f028951170a709"
)
KAT_SYM_SEALED_SHA256 = "f31eec339b8d4348f3491139e84a981ae2c27deb1aaf60ea998af4fb4c5b0f3d"
KAT_PK_WRAPPED = (
    "6504862830c0a62dd0a4a4d7937fdab48920bd3f3d388e2e08cf53be623aeeaa"
    "3c347c48b81a7a77dbee2f9fdb18185e"
)
KAT_PK_SEALED_SHA256 = "d8061aaf713e240190990d445d6de83b436b3f9bce32af40c54a1f00d42a5a78"


def spec_decrypt(data: bytes, secret: bytes) -> bytes:
    """An independent reader written from docs/encryption.md, not from crypto.py."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    def hkdf(ikm: bytes, info: bytes, salt: bytes | None = None, n: int = 32) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=n, salt=salt, info=info).derive(ikm)

    assert data[:8] == b"\x89WALSHP\n"
    (n,) = struct.unpack(">I", data[8:12])
    head, body = data[: 12 + n], data[12 + n :]
    header = json.loads(head[12:])
    enc = header["encryption"]
    assert (enc["scheme"], enc["version"]) == ("walship-stream", 1)
    if enc["mode"] == "symmetric":
        assert hkdf(secret, b"walship-v1 key-id symmetric", n=8).hex() == enc["key_id"]
        kek = hkdf(secret, b"walship-v1 symmetric kek", salt=bytes.fromhex(enc["kek_salt"]))
    else:
        priv = X25519PrivateKey.from_private_bytes(secret)
        mine = priv.public_key().public_bytes_raw()
        assert hkdf(mine, b"walship-v1 key-id x25519", n=8).hex() == enc["key_id"]
        eph = bytes.fromhex(enc["ephemeral_public_key"])
        shared = priv.exchange(X25519PublicKey.from_public_bytes(eph))
        kek = hkdf(shared, b"walship-v1 x25519 kek", salt=eph + mine)
    cipher = AESGCM if enc["cipher"] == "aes-256-gcm" else ChaCha20Poly1305
    wrapped = bytes.fromhex(enc["wrapped_key"])
    data_key = cipher(kek).decrypt(bytes(12), wrapped, b"walship-v1 data key")
    aead = cipher(data_key)
    aad = hashlib.sha256(head).digest()
    size = enc["chunk_size"] + 16
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    plain = b""
    for index, piece in enumerate(pieces):
        final = index == len(pieces) - 1
        nonce = bytes.fromhex(enc["nonce_prefix"]) + struct.pack(">IB", index, int(final))
        plain += aead.decrypt(nonce, piece, aad)
    if header["compression"] == "zstd":
        import zstandard

        plain = zstandard.ZstdDecompressor().decompressobj().decompress(plain)
    return plain


@pytest.mark.parametrize("size", [0, 64, 200, 3000])
def test_documented_format_decrypts_with_an_independent_reader(any_cfg: Config, size: int) -> None:
    raw = os.urandom(size // 2) + b"\0" * (size - size // 2)
    (key,) = crypto.read_key_file(any_cfg.encryption_key_file or "", "t")
    assert key.secret is not None
    for compression in ("none", "zstd"):
        data = encode_object(any_cfg, raw, compression=compression)
        assert spec_decrypt(data, key.secret) == raw


# ------------------------------------------------------------- tampering


def test_every_single_byte_flip_is_detected(any_cfg: Config) -> None:
    raw = os.urandom(300)
    data = encode_object(any_cfg, raw)
    head, _, _ = split_object(data)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        expected = DecryptionError if i >= len(head) else (IntegrityError, KeyNotConfigured)
        with pytest.raises(expected):
            decode_object(any_cfg, bytes(bad))


def test_flip_in_each_body_region_names_the_object(any_cfg: Config) -> None:
    data = encode_object(any_cfg, os.urandom(300))  # 4 full chunks + final of 44
    head, _, body = split_object(data)
    regions = {
        "first chunk ciphertext": 0,
        "first chunk tag": 70,
        "middle chunk": 80 * 2 + 5,
        "final chunk ciphertext": 80 * 4 + 1,
        "final chunk tag": len(body) - 1,
    }
    for region, offset in regions.items():
        bad = bytearray(data)
        bad[len(head) + offset] ^= 0x80
        with pytest.raises(DecryptionError, match="mem://t/obj: encrypted object fails") as info:
            decode_object(any_cfg, bytes(bad))
        assert isinstance(info.value, IntegrityError), region


def test_dropping_the_last_chunk_is_truncation(any_cfg: Config) -> None:
    data = encode_object(any_cfg, os.urandom(320))  # 5 full chunks, the 5th flagged final
    head, _, body = split_object(data)
    assert len(body) == 5 * 80
    with pytest.raises(DecryptionError, match="last chunk"):
        decode_object(any_cfg, head + body[:-80])
    with pytest.raises(DecryptionError, match="last chunk"):
        decode_object(any_cfg, head + body[: 3 * 80])
    with pytest.raises(DecryptionError, match="truncated"):
        decode_object(any_cfg, head)
    for cut in range(1, len(body)):
        with pytest.raises(IntegrityError):
            decode_object(any_cfg, head + body[:cut])


def test_reordered_duplicated_or_extended_chunks_fail(any_cfg: Config) -> None:
    data = encode_object(any_cfg, os.urandom(300))
    head, _, body = split_object(data)
    c = [body[i : i + 80] for i in range(0, len(body), 80)]
    assert len(c) == 5
    variants = {
        "swap 0,1": [c[1], c[0], *c[2:]],
        "swap 2,3": [*c[:2], c[3], c[2], c[4]],
        "duplicate 1": [c[0], c[1], c[1], *c[2:]],
        "drop middle": [c[0], c[2], c[3], c[4]],
        "append garbage": [*c, b"x" * 16],
        "final twice": [*c, c[4]],
    }
    for what, chunks in variants.items():
        with pytest.raises(DecryptionError):
            decode_object(any_cfg, head + b"".join(chunks))
        assert what


def test_header_changes_are_detected(any_cfg: Config) -> None:
    raw = os.urandom(100)
    data = encode_object(any_cfg, raw)
    _, header, body = split_object(data)
    for field, value in [
        ("name", "00000003.history"),
        ("raw_size", 99),
        ("created", "2000-01-01T00:00:00Z"),
        ("extra", "added"),
    ]:
        bad = dict(header)
        bad[field] = value
        with pytest.raises(DecryptionError):
            decode_object(any_cfg, reheader(bad, body))
    # encryption fields: the AAD covers them, unwrap covers the key material
    for field, value in [
        ("chunk_size", 32),
        ("nonce_prefix", "00" * 7),
        (
            "cipher",
            "chacha20-poly1305" if "aes" in header["encryption"]["cipher"] else "aes-256-gcm",
        ),
        ("wrapped_key", "00" * 48),
        ("kek_salt" if "kek_salt" in header["encryption"] else "ephemeral_public_key", None),
    ]:
        bad = json.loads(json.dumps(header))
        if value is None:  # flip one bit of the field
            old = bytes.fromhex(bad["encryption"][field])
            value = bytes([old[0] ^ 1]).hex() + old[1:].hex()
        bad["encryption"][field] = value
        with pytest.raises(DecryptionError):
            decode_object(any_cfg, reheader(bad, body))


def test_low_order_ephemeral_key_is_refused(pk_cfg: Config) -> None:
    data = encode_object(pk_cfg, b"x" * 100)
    _, header, body = split_object(data)
    header["encryption"]["ephemeral_public_key"] = "00" * 32
    with pytest.raises(DecryptionError, match="invalid ephemeral key"):
        decode_object(pk_cfg, reheader(header, body))


def test_round_trip_through_the_public_classes_only(
    any_cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the fast binding paths (other cryptography versions), same format."""
    raw = os.urandom(1000)
    data = encode_object(any_cfg, raw)
    from types import SimpleNamespace

    monkeypatch.setattr(crypto, "_rust_openssl", SimpleNamespace())
    assert decode_object(any_cfg, data) == raw
    again = encode_object(any_cfg, raw)
    monkeypatch.undo()
    assert decode_object(any_cfg, again) == raw


def test_aead_classes_are_the_public_ones() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    assert crypto._aead_classes() == (AESGCM, ChaCha20Poly1305)


def test_body_spliced_from_another_object_fails(sym_cfg: Config) -> None:
    a = encode_object(sym_cfg, os.urandom(200))
    b = encode_object(sym_cfg, os.urandom(200))
    head_a, header_a, _ = split_object(a)
    _, header_b, body_b = split_object(b)
    with pytest.raises(DecryptionError):
        decode_object(sym_cfg, head_a + body_b)
    # the whole encryption header of b moved into a's header: AAD differs
    moved = dict(header_a)
    moved["encryption"] = header_b["encryption"]
    with pytest.raises(DecryptionError):
        decode_object(sym_cfg, reheader(moved, body_b))


def test_replacing_the_key_id_in_the_header(tmp_path: Any) -> None:
    k1 = new_symmetric(f"{tmp_path}/k1.key")
    os.mkdir(f"{tmp_path}/ring")
    k2 = new_symmetric(f"{tmp_path}/ring/k2.key")
    cfg = cfg_for(
        encryption="symmetric", encryption_key_file=k1, encryption_keyring=f"{tmp_path}/ring"
    )
    data = encode_object(cfg, os.urandom(100))
    _, header, body = split_object(data)
    # another configured key: the data key does not unwrap
    bad = json.loads(json.dumps(header))
    bad["encryption"]["key_id"] = key_id_of(k2)
    with pytest.raises(DecryptionError, match="does not unwrap"):
        decode_object(cfg, reheader(bad, body))
    # an unknown key id: reported as such, naming it
    bad["encryption"]["key_id"] = "0123456789abcdef"
    with pytest.raises(KeyNotConfigured, match="key id 0123456789abcdef"):
        decode_object(cfg, reheader(bad, body))


def test_wrong_key_with_same_id_fails_to_unwrap(sym_cfg: Config) -> None:
    data = encode_object(sym_cfg, os.urandom(100))
    fields = crypto.parse_header(split_object(data)[1]["encryption"], "x")
    impostor = crypto.Key(crypto.SYMMETRIC, secret=os.urandom(32), public=None, source="x")
    impostor.key_id = fields["key_id"]
    with pytest.raises(DecryptionError, match="does not unwrap"):
        crypto.unwrap_data_key(impostor, fields, "x")


def test_unknown_scheme_or_malformed_header(sym_cfg: Config) -> None:
    data = encode_object(sym_cfg, b"abc")
    _, header, body = split_object(data)
    for field, value, match in [
        ("scheme", "walship-stream-v9", "cannot read"),
        ("version", 2, "cannot read"),
        ("cipher", "rot13", "cannot read"),
        ("mode", "weird", "malformed"),
        ("chunk_size", 1 << 30, "malformed"),
        ("nonce_prefix", "zz", "malformed"),
        ("key_id", 5, "malformed"),
    ]:
        bad = json.loads(json.dumps(header))
        bad["encryption"][field] = value
        with pytest.raises(IntegrityError, match=match):
            decode_object(sym_cfg, reheader(bad, body))


# ------------------------------------------------- keys, keyrings, rotation


def test_missing_key_names_needed_and_configured_ids(tmp_path: Any) -> None:
    writer = cfg_for(encryption="symmetric", encryption_key_file=new_symmetric(f"{tmp_path}/a.key"))
    data = encode_object(writer, b"secret data")
    other = new_symmetric(f"{tmp_path}/b.key")
    reader = cfg_for(encryption_key_file=other)
    needed, have = key_id_of(writer.encryption_key_file or ""), key_id_of(other)
    with pytest.raises(KeyNotConfigured) as info:
        decode_object(reader, data)
    line = info.value.one_line()
    assert needed in line and have in line and "\n" not in line
    with pytest.raises(KeyNotConfigured, match=r"configured key ids: none"):
        decode_object(cfg_for(), data)


def test_public_key_writer_cannot_read(tmp_path: Any) -> None:
    priv, pub = new_pair(str(tmp_path), "pk")
    writer = cfg_for(encryption="public-key", encryption_key_file=pub)
    data = encode_object(writer, b"written on the database host")
    with pytest.raises(KeyNotConfigured, match="only its public key is configured"):
        decode_object(writer, data)
    reader = cfg_for(encryption_keyring=priv)
    assert decode_object(reader, data) == b"written on the database host"
    assert "x25519-private" not in Path(pub).read_text()


def test_rotation_old_objects_stay_readable(tmp_path: Any, mem: Any) -> None:
    keys = f"{tmp_path}/keys"
    os.mkdir(keys)
    k1 = new_symmetric(f"{keys}/2025.key")
    k2 = new_symmetric(f"{keys}/2026.key")
    before = cfg_for(encryption="symmetric", encryption_key_file=k1)
    after = cfg_for(encryption="symmetric", encryption_key_file=k2, encryption_keyring=keys)
    segs = {n: make_segment(n) for n in (1, 2)}
    for n, seg in segs.items():
        with open(f"{tmp_path}/s{n}", "wb") as fh:
            fh.write(seg)
    push.push(before, mem, f"{tmp_path}/s1", segment_name(1))
    push.push(after, mem, f"{tmp_path}/s2", segment_name(2))
    ids = {
        n: split_object(memory._STORES["crypto"][repository.key_for(segment_name(n))][0])[1][
            "encryption"
        ]["key_id"]
        for n in (1, 2)
    }
    assert ids == {1: key_id_of(k1), 2: key_id_of(k2)}
    for n, seg in segs.items():
        fetch.fetch(after, mem, segment_name(n), f"{tmp_path}/o{n}")
        assert Path(f"{tmp_path}/o{n}").read_bytes() == seg
    # without the old key in the keyring, the old segment names the key it needs
    only_new = cfg_for(encryption="symmetric", encryption_key_file=k2)
    with pytest.raises(KeyNotConfigured, match=key_id_of(k1)):
        fetch.fetch(only_new, mem, segment_name(1), f"{tmp_path}/x")
    assert not os.path.exists(f"{tmp_path}/x")
    # re-archiving the old segment after rotation is still a harmless duplicate
    assert push.push(after, mem, f"{tmp_path}/s1", segment_name(1)).already


def test_public_key_rotation_with_keyring_directory(tmp_path: Any, mem: Any) -> None:
    ring = f"{tmp_path}/ring"
    os.mkdir(ring)
    _, pub1 = new_pair(ring, "old")
    _, pub2 = new_pair(ring, "new")
    seg1, seg2 = make_segment(1), make_segment(2)
    for n, seg in ((1, seg1), (2, seg2)):
        with open(f"{tmp_path}/s{n}", "wb") as fh:
            fh.write(seg)
    w1 = cfg_for(encryption="public-key", encryption_key_file=pub1)
    w2 = cfg_for(encryption="public-key", encryption_key_file=pub2)
    push.push(w1, mem, f"{tmp_path}/s1", segment_name(1))
    push.push(w2, mem, f"{tmp_path}/s2", segment_name(2))
    restore_host = cfg_for(encryption_keyring=ring)  # *.key files only: the private keys
    assert crypto.keyring(restore_host).ids() == sorted([key_id_of(pub1), key_id_of(pub2)])
    for n, seg in ((1, seg1), (2, seg2)):
        fetch.fetch(restore_host, mem, segment_name(n), f"{tmp_path}/o{n}")
        assert Path(f"{tmp_path}/o{n}").read_bytes() == seg
    with pytest.raises(KeyNotConfigured):
        fetch.fetch(w2, mem, segment_name(2), f"{tmp_path}/x")


def test_mixed_plain_and_encrypted_repository(tmp_path: Any, mem: Any) -> None:
    key = new_symmetric(f"{tmp_path}/k.key")
    plain = cfg_for()
    encrypted = cfg_for(encryption="symmetric", encryption_key_file=key)
    turned_off = cfg_for(encryption="none", encryption_key_file=key)
    segs = {n: make_segment(n) for n in (1, 2, 3)}
    for n, seg in segs.items():
        with open(f"{tmp_path}/s{n}", "wb") as fh:
            fh.write(seg)
    push.push(plain, mem, f"{tmp_path}/s1", segment_name(1))
    push.push(encrypted, mem, f"{tmp_path}/s2", segment_name(2))
    push.push(turned_off, mem, f"{tmp_path}/s3", segment_name(3))
    stored = memory._STORES["crypto"]
    enc = {
        n: split_object(stored[repository.key_for(segment_name(n))][0])[1]["encryption"]
        for n in segs
    }
    assert enc[1] is None and enc[2] is not None and enc[3] is None
    for cfg in (encrypted, turned_off):
        for n, seg in segs.items():
            fetch.fetch(cfg, mem, segment_name(n), f"{tmp_path}/o")
            assert Path(f"{tmp_path}/o").read_bytes() == seg
            os.unlink(f"{tmp_path}/o")
    # a reader with no keys still restores the plain segments, and names the key otherwise
    fetch.fetch(plain, mem, segment_name(1), f"{tmp_path}/o1")
    fetch.fetch(plain, mem, segment_name(3), f"{tmp_path}/o3")
    with pytest.raises(KeyNotConfigured, match=key_id_of(key)):
        fetch.fetch(plain, mem, segment_name(2), f"{tmp_path}/o2")


def test_push_duplicate_rules_hold_for_encrypted_objects(tmp_path: Any, mem: Any) -> None:
    _, pub = new_pair(str(tmp_path), "pk")
    writer = cfg_for(encryption="public-key", encryption_key_file=pub)
    seg = make_segment(5)
    with open(f"{tmp_path}/s", "wb") as fh:
        fh.write(seg)
    name = segment_name(5)
    assert not push.push(writer, mem, f"{tmp_path}/s", name).already
    assert push.push(writer, mem, f"{tmp_path}/s", name).already  # no key needed to compare
    with open(f"{tmp_path}/s", "wb") as fh:
        fh.write(make_segment(5, payload=b"different"))
    with pytest.raises(ConflictError):
        push.push(writer, mem, f"{tmp_path}/s", name)


# --------------------------------------------------------------- key files


def test_key_file_format_and_errors_never_show_material(tmp_path: Any) -> None:
    secret = os.urandom(32)
    b64 = base64.b64encode(secret).decode()
    path = f"{tmp_path}/k.key"
    write_key(path, crypto.SYMMETRIC, secret)
    (key,) = crypto.read_key_file(path, "s")
    assert key.secret == secret and key.key_id == crypto.symmetric_key_id(secret)
    assert b64 not in repr(key) and key.key_id in repr(key)
    bad_files = {
        "short": f"walship-key-v1 symmetric {base64.b64encode(secret[:31]).decode()}\n",
        "type": f"walship-key-v1 rsa {b64}\n",
        "tag": f"walship-key-v0 symmetric {b64}\n",
        "raw": b64 + "\n",
        "fields": f"walship-key-v1 symmetric {b64} extra\n",
        "empty": "# nothing here\n",
        "garbage": f"walship-key-v1 symmetric {b64[:-2]}!!\n",
    }
    for label, text in bad_files.items():
        p = f"{tmp_path}/{label}.key"
        with open(p, "w") as fh:
            fh.write(text)
        os.chmod(p, 0o600)
        with pytest.raises(ConfigError) as info:
            crypto.read_key_file(p, "encryption_key_file")
        assert b64 not in info.value.one_line() and b64[:20] not in info.value.one_line(), label
        assert p in info.value.one_line()


def test_group_or_world_readable_secret_key_is_refused(tmp_path: Any) -> None:
    path = new_symmetric(f"{tmp_path}/k.key")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"mode 0644.*chmod 600"):
        crypto.read_key_file(path, "encryption_key_file")
    os.chmod(path, 0o640)
    if os.geteuid() == 0:  # root-owned 0640 is allowed, as PostgreSQL allows for its key
        crypto.read_key_file(path, "encryption_key_file")
    else:
        with pytest.raises(ConfigError, match="mode 0640"):
            crypto.read_key_file(path, "encryption_key_file")
    os.chmod(path, 0o660)  # group-writable: refused whoever owns it
    with pytest.raises(ConfigError, match="mode 0660"):
        crypto.read_key_file(path, "encryption_key_file")
    for fine in (0o400, 0o600, 0o700):
        os.chmod(path, fine)
        crypto.read_key_file(path, "encryption_key_file")
    # a public key file holds no secret: any mode is fine
    _, pub = new_pair(str(tmp_path), "pk")
    os.chmod(pub, 0o644)
    crypto.read_key_file(pub, "encryption_key_file")


def test_settings_errors(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="needs the setting 'encryption_key_file'"):
        crypto.make_encryptor(cfg_for(encryption="symmetric"))
    _, pub = new_pair(str(tmp_path), "pk")
    with pytest.raises(ConfigError, match="holds a X25519 public key"):
        crypto.make_encryptor(cfg_for(encryption="symmetric", encryption_key_file=pub))
    sym = new_symmetric(f"{tmp_path}/s.key")
    with pytest.raises(ConfigError, match="holds a symmetric key"):
        crypto.make_encryptor(cfg_for(encryption="public-key", encryption_key_file=sym))
    with pytest.raises(ConfigError, match="does not exist"):
        crypto.make_encryptor(
            cfg_for(encryption="symmetric", encryption_key_file=f"{tmp_path}/none")
        )
    with pytest.raises(ConfigError, match="encryption_keyring"):
        crypto.keyring(cfg_for(encryption_keyring=f"{tmp_path}/absent-dir"))
    two = f"{tmp_path}/two.key"
    with open(two, "w") as fh:
        fh.write(Path(sym).read_text() + Path(sym).read_text())
    os.chmod(two, 0o600)
    with pytest.raises(ConfigError, match="holds 2 keys"):
        crypto.make_encryptor(cfg_for(encryption="symmetric", encryption_key_file=two))


def test_settings_come_from_environment(tmp_path: Any) -> None:
    key = new_symmetric(f"{tmp_path}/k.key")
    cfg = load(
        env={
            "WALSHIP_CONFIG": "",
            "WALSHIP_REPO": "mem://crypto",
            "WALSHIP_ENCRYPTION": "symmetric",
            "WALSHIP_ENCRYPTION_KEY_FILE": key,
            "WALSHIP_ENCRYPTION_CIPHER": "chacha20-poly1305",
        }
    )
    enc = crypto.make_encryptor(cfg)
    assert enc.header()["cipher"] == "chacha20-poly1305"
    assert enc.header()["key_id"] == key_id_of(key)
    with pytest.raises(ConfigError):
        load(env={"WALSHIP_REPO": "x", "WALSHIP_ENCRYPTION": "aes"})


def test_keyring_file_may_hold_several_keys(tmp_path: Any) -> None:
    a, b = os.urandom(32), os.urandom(32)
    path = f"{tmp_path}/ring.key"
    with open(path, "w") as fh:
        fh.write(
            crypto.format_key_line(crypto.SYMMETRIC, a)
            + "\n# rotated 2026\n"
            + crypto.format_key_line(crypto.SYMMETRIC, b)
        )
    os.chmod(path, 0o600)
    ring = crypto.keyring(cfg_for(encryption_keyring=path))
    assert ring.ids() == sorted([crypto.symmetric_key_id(a), crypto.symmetric_key_id(b)])


@given(st.binary(max_size=200), st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_hmac_sha256_is_hmac(key: bytes, msg: bytes) -> None:
    import hmac

    assert crypto.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()
