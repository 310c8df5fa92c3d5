"""The object envelope: a versioned, self-describing header before every body.

Layout of every stored object (format 1)::

    MAGIC            8 bytes  b"\\x89WALSHP\\n"  (also catches text-mode mangling)
    header_length    4 bytes  big-endian, <= 64 KiB
    header           header_length bytes of UTF-8 JSON (an object)
    body             compress(raw), then encrypted when header["encryption"] is set

Header fields (format 1): ``format`` (1), ``name`` (the archive file name the
object holds; fetch refuses an object under another name), ``kind``,
``compression`` (``zstd`` | ``none``), ``encryption`` (``null`` or the
scheme's own object, see docs/format.md), ``raw_size``, ``raw_sha256``, and
for WAL kinds ``system_identifier`` (decimal string), plus informational
``created`` and ``writer``. Readers ignore fields they do not know; a reader
refuses a ``format`` it does not know with a message to upgrade walship.

When the body is encrypted the exact header bytes are the AEAD associated
data, so any header change is detected.

The raw digest and size are also stored as backend metadata
(:data:`META_SHA256`, :data:`META_SIZE`) so a HEAD answers "same content?".
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from typing import Any, Protocol

from ..errors import IntegrityError, KeyNotConfigured
from . import compress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _queue import SimpleQueue
    from collections.abc import Iterable, Iterator

MAGIC = b"\x89WALSHP\n"
FORMAT = 1
MAX_HEADER = 1 << 16
CHUNK = 1 << 20

META_FORMAT = "walship-format"
META_SHA256 = "walship-raw-sha256"
META_SIZE = "walship-raw-size"


class Encryptor(Protocol):
    """Encrypts one object body. Created per object by walship.codec.crypto."""

    def header(self) -> dict[str, Any]:
        """The JSON object stored as ``header["encryption"]``."""
        ...

    def start(self, aad: bytes) -> bytes:
        """Bind to the serialized header (associated data); returns leading bytes."""
        ...

    def update(self, data: bytes) -> bytes: ...

    def finalize(self) -> bytes: ...


class Decryptor(Protocol):
    def start(self, aad: bytes) -> None: ...

    def update(self, data: bytes) -> bytes: ...

    def finalize(self) -> bytes:
        """Return the remaining plaintext; raise DecryptionError if truncated."""
        ...


#: (encryption header, object name) -> Decryptor
DecryptorFactory = Callable[[dict[str, Any], str], Decryptor]


def serialize_header(header: dict[str, Any]) -> bytes:
    body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if len(body) > MAX_HEADER:
        raise ValueError("object header too large")
    return MAGIC + struct.pack(">I", len(body)) + body


def metadata_for(header: dict[str, Any]) -> dict[str, str]:
    return {
        META_FORMAT: str(FORMAT),
        META_SHA256: str(header["raw_sha256"]),
        META_SIZE: str(header["raw_size"]),
    }


def encode(
    header: dict[str, Any],
    raw_chunks: Iterable[bytes],
    *,
    level: int = 1,
    threads: int = 0,
    encryptor: Encryptor | None = None,
    compressed: Iterable[bytes] | None = None,
) -> Iterator[bytes]:
    """Yield the stored bytes of an object: header, then the encoded body.

    ``header`` must already hold ``name``, ``kind``, ``raw_size``,
    ``raw_sha256`` and ``compression``; ``format`` and ``encryption`` are set
    here. ``compressed``, when given, is the body already compressed as
    ``header["compression"]`` says (``raw_chunks`` is then not read).
    """
    header = dict(header)
    header["format"] = FORMAT
    header["encryption"] = encryptor.header() if encryptor is not None else None
    head = serialize_header(header)
    yield head
    if compressed is not None:
        body: Iterable[bytes] = compressed
    else:
        body = compress.compress_stream(header["compression"], raw_chunks, level, threads)
    if encryptor is None:
        yield from body
        return
    first = encryptor.start(head)
    if first:
        yield first
    for chunk in body:
        out = encryptor.update(chunk)
        if out:
            yield out
    last = encryptor.finalize()
    if last:
        yield last


class Background:
    """``fn(*args)`` in a helper thread; :meth:`wait` joins it and re-raises its error.

    Built on ``_thread``: importing ``threading`` would cost every push more
    than the helpers save. Used to hash (push, fetch) and to start write-back
    (fetch) while the calling thread compresses, decompresses or writes.
    """

    def __init__(self, fn: Callable[..., object], *args: object) -> None:
        import _thread

        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._error: BaseException | None = None
        self._fn = fn
        self._args = args
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        try:
            self._fn(*self._args)
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.release()

    @property
    def running(self) -> bool:
        return self._done.locked()

    def wait(self) -> None:
        with self._done:
            pass
        if self._error is not None:
            raise self._error


class Hasher:
    """Feeds chunks to ``digest.update`` in one helper thread, one chunk ahead.

    :meth:`update` hands a chunk over and returns at once, after the previous
    chunk is done (so at most one chunk is held); the caller compresses,
    decompresses or writes meanwhile (hashlib releases the GIL). One thread
    for the whole stream: starting a thread per chunk cost ~0.1 ms each.
    :meth:`close` waits for the last chunk; always call it (it also ends the
    thread).
    """

    def __init__(self, digest: Any) -> None:
        import _thread

        self.digest = digest
        self._item: bytes | memoryview | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._ready = _thread.allocate_lock()  # held while there is nothing to do
        self._ready.acquire()
        self._idle = _thread.allocate_lock()  # held while a chunk is being hashed
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        while True:
            self._ready.acquire()
            item, self._item = self._item, None
            if item is None:  # close()
                self._idle.release()
                return
            try:
                if self._error is None:
                    self.digest.update(item)
            except BaseException as exc:
                self._error = exc
            finally:
                self._idle.release()

    def update(self, data: bytes | memoryview) -> None:
        if self._closed:
            raise ValueError("Hasher is closed")
        self._idle.acquire()  # the previous chunk is done
        if self._error is not None:
            self._idle.release()
            raise self._error
        self._item = data
        self._ready.release()

    def close(self) -> None:
        """Wait for the last chunk and stop the thread; re-raise its error."""
        if not self._closed:
            self._closed = True
            self._idle.acquire()
            self._item = None
            self._ready.release()  # the thread sees None, releases _idle and ends
            self._idle.acquire()
            self._idle.release()
        if self._error is not None:
            raise self._error


class Ahead:
    """Runs an iterator in a helper thread, up to ``depth`` items ahead.

    Fetch decrypts (and reads) the next chunk here while the calling thread
    decompresses, hashes and writes the previous one: AES-GCM holds the GIL,
    zstd and the writes do not, so on two cores the decryption mostly
    disappears from a fetch's time. Errors of the iterator are raised by
    ``next()`` in order; :meth:`close` stops the helper early.
    """

    def __init__(self, it: Iterator[bytes], depth: int = 2) -> None:
        import _queue
        import _thread

        self._it = it
        self._items: _queue.SimpleQueue[tuple[bytes | None, BaseException | None]] = (
            _queue.SimpleQueue()
        )
        self._slots: _queue.SimpleQueue[None] = _queue.SimpleQueue()
        for _ in range(depth):
            self._slots.put(None)
        self._stop = False
        self._finished = False
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            for item in self._it:
                self._slots.get()
                if self._stop:
                    return
                self._items.put((item, None))
        except BaseException as exc:
            error = exc
        self._items.put((None, error))

    def __iter__(self) -> Ahead:
        return self

    def __next__(self) -> bytes:
        if self._finished:
            raise StopIteration
        item, error = self._items.get()
        if item is None:
            self._finished = True
            if error is not None:
                raise error
            raise StopIteration
        self._slots.put(None)
        return item

    def close(self) -> None:
        self._stop = True
        self._finished = True
        self._slots.put(None)  # wakes the helper if it waits for room


class _Buffered:
    """Reads exact byte counts from an iterator of chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._buf = b""

    def read_exact(self, n: int, what: str) -> bytes:
        while len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                raise IntegrityError(f"{what}: object is truncated") from None
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def rest(self) -> Iterator[bytes]:
        if self._buf:
            yield self._buf
            self._buf = b""
        yield from self._it


def read_header(chunks: Iterator[bytes], where: str) -> tuple[dict[str, Any], bytes, _Buffered]:
    buf = _Buffered(chunks)
    magic = buf.read_exact(len(MAGIC), where)
    if magic != MAGIC:
        raise IntegrityError(f"{where}: not a walship object (bad magic)")
    (length,) = struct.unpack(">I", buf.read_exact(4, where))
    if length > MAX_HEADER:
        raise IntegrityError(f"{where}: implausible header length {length}")
    body = buf.read_exact(length, where)
    try:
        header = json.loads(body)
    except ValueError:
        raise IntegrityError(f"{where}: corrupt object header") from None
    if not isinstance(header, dict):
        raise IntegrityError(f"{where}: corrupt object header")
    fmt = header.get("format")
    if fmt != FORMAT:
        raise IntegrityError(
            f"{where}: object format {fmt!r} is not supported by this walship",
            hint="upgrade walship to read it",
        )
    for field in ("name", "compression", "raw_size", "raw_sha256"):
        if field not in header:
            raise IntegrityError(f"{where}: object header lacks {field!r}")
    return header, magic + struct.pack(">I", length) + body, buf


def decode(
    chunks: Iterator[bytes],
    where: str,
    *,
    decryptor_factory: DecryptorFactory | None = None,
    check_digest: bool = True,
) -> tuple[dict[str, Any], Iterator[bytes]]:
    """Parse the header and return it with an iterator of verified raw chunks.

    The iterator raises :class:`IntegrityError` at its end if the size or
    SHA-256 of what it yielded differs from the header: consumers must not
    commit output before the iterator is exhausted. ``check_digest=False``
    leaves out the SHA-256 (the size is still checked, and decryption still
    authenticates): only for a caller that verifies every byte it uses
    against digests of its own (backup-fetch checks each file's digest).
    """
    header, head_bytes, buf = read_header(chunks, where)
    body: Iterator[bytes] = buf.rest()
    ahead: Ahead | None = None
    enc = header.get("encryption")
    if enc is not None:
        if decryptor_factory is None:
            key_id = enc.get("key_id", "?") if isinstance(enc, dict) else "?"
            raise KeyNotConfigured(
                f"{where} is encrypted (key id {key_id}) but no decryption key is configured",
                hint="configure the keyring (see docs/encryption.md)",
            )
        decryptor = decryptor_factory(enc, where)
        decryptor.start(head_bytes)
        body = ahead = Ahead(_decrypt(decryptor, body))
    raw = compress.decompress_stream(str(header["compression"]), body, where)
    return header, _verify(header, raw, where, ahead, check_digest)


def _decrypt(decryptor: Decryptor, body: Iterator[bytes]) -> Iterator[bytes]:
    for chunk in body:
        out = decryptor.update(chunk)
        if out:
            yield out
    last = decryptor.finalize()
    if last:
        yield last


def _verify(
    header: dict[str, Any],
    raw: Iterator[bytes],
    where: str,
    ahead: Ahead | None = None,
    check_digest: bool = True,
) -> Iterator[bytes]:
    digest = hashlib.sha256()
    size = 0
    hasher = Hasher(digest) if check_digest else None  # hashes while the next is decoded
    try:
        for chunk in raw:
            size += len(chunk)
            if size > int(header["raw_size"]):
                raise IntegrityError(f"{where}: object decodes to more bytes than its header says")
            if hasher is not None:
                hasher.update(chunk)
            yield chunk
    finally:
        if ahead is not None:
            ahead.close()  # a consumer that stops early must not leave the helper waiting
        if hasher is not None:
            hasher.close()
    if size != int(header["raw_size"]):
        raise IntegrityError(
            f"{where}: object is truncated (decoded {size} of {header['raw_size']} bytes)"
        )
    if check_digest and digest.hexdigest() != header["raw_sha256"]:
        raise IntegrityError(
            f"{where}: content digest mismatch (object is corrupt)",
            hint=f"expected sha256 {header['raw_sha256']}, got {digest.hexdigest()}",
        )


def file_digest(path: str, chunk: int = CHUNK) -> tuple[int, str, bytes]:
    """Size, SHA-256 hex and the first 8 KiB of a file, in one pass."""
    digest = hashlib.sha256()
    size = 0
    first = b""
    with open(path, "rb") as fh:
        while True:
            data = fh.read(chunk)
            if not data:
                break
            if not first:
                first = data[:8192]
            digest.update(data)
            size += len(data)
    return size, digest.hexdigest(), first


#: compressed bytes :func:`file_digest_compressed` keeps in memory (push reads a file once)
SPOOL_LIMIT = 16 << 20


def file_digest_compressed(
    path: str,
    compression: str,
    level: int,
    threads: int,
    *,
    limit: int = SPOOL_LIMIT,
    chunk: int = CHUNK,
) -> tuple[int, str, bytes, list[bytes] | None]:
    """Like :func:`file_digest`, plus the compressed body when it fits in ``limit``.

    One read of the file: each chunk is hashed in a helper thread while this
    thread compresses it (hashlib and zstd release the GIL). The compressed
    body is returned only if all of it fits in ``limit`` bytes (memory stays
    bounded); otherwise it is None and the caller streams the file again, as
    it always does with ``compression = "none"``. In a process that called
    :func:`keep_read_buffers`, a file of more than one chunk and at most
    ``limit`` bytes is read whole and compressed in one call instead (its
    body, at most zstd's bound for ``limit`` bytes, is then always returned).
    """
    if compression == "none":
        return (*file_digest(path, chunk), None)
    if threads == 0 and _buffers.kept:
        whole = _digest_compressed_whole(path, compression, level, limit)
        if whole is not None:
            return whole
    digest = hashlib.sha256()
    state = {"size": 0}
    heads: list[bytes] = []

    def raw() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            while True:
                data = fh.read(chunk)
                if not data:
                    return
                if not heads:
                    heads.append(data[:8192])
                state["size"] += len(data)
                hasher.update(data)
                yield data  # compressed by the consumer meanwhile

    hasher = Hasher(digest)
    try:
        source = raw()
        body: list[bytes] = []
        held = 0
        compressed = compress.compress_stream(compression, source, level, threads)
        try:
            for piece in compressed:
                held += len(piece)
                if held > limit:
                    break
                body.append(piece)
        finally:
            compressed.close()
        for _ in source:  # too large to keep: finish the digest only
            pass
    finally:
        hasher.close()
    first = heads[0] if heads else b""
    return state["size"], digest.hexdigest(), first, (body if held <= limit else None)


class _Buffers:
    """Read buffers of :func:`_digest_compressed_whole`, at most one per core.

    Reused: faulting in 16 MiB of fresh pages costs more (~8 ms) than reading
    into them. A push holds one only while it reads and compresses (CPU work:
    more at once than cores gains nothing), not while it uploads, so the
    memory they take is bounded by the cores, not by ``push_concurrency``.
    """

    def __init__(self) -> None:
        import _thread

        #: set by a long-lived process (:func:`keep_read_buffers`): a one-shot push
        #: would fault in a fresh 16 MiB buffer for one file, which costs about what
        #: the one-call compression saves, and streams its file instead
        self.kept = False
        self._free: SimpleQueue[bytearray | None] | None = None
        self._making = _thread.allocate_lock()

    def take(self, size: int) -> bytearray:
        with self._making:  # made on first use: for pushes only
            if self._free is None:
                # queue.SimpleQueue itself, from its C module: the `queue` module
                # imports `threading`, which a push does not otherwise load
                from _queue import SimpleQueue

                self._free = SimpleQueue()
                for _ in range(os.cpu_count() or 1):
                    self._free.put(None)  # a slot; its buffer is made on first use
        buf = self._free.get()
        return buf if buf is not None and len(buf) == size else bytearray(size)

    def give_back(self, buf: bytearray) -> None:
        assert self._free is not None
        self._free.put(buf)


_buffers = _Buffers()


def keep_read_buffers() -> None:
    """This process pushes many files (the background process): read each WAL
    segment whole into a kept buffer and compress it in one call."""
    _buffers.kept = True


def _digest_compressed_whole(
    path: str, compression: str, level: int, limit: int
) -> tuple[int, str, bytes, list[bytes]] | None:
    """:func:`file_digest_compressed` for a file of at most ``limit`` bytes (a WAL
    segment; more than one chunk): read whole into a reused buffer, hashed in a
    helper thread while compressed in one call. zstd compresses contiguous input 10-20 % faster
    than the same bytes streamed in 1 MiB chunks (no copy into its window, no
    external-dictionary matching; docs/benchmarks.md). None when the file is
    (or grew) larger: the caller streams it.
    """
    with open(path, "rb", buffering=0) as fh:
        if not CHUNK < os.fstat(fh.fileno()).st_size <= limit:
            return None  # (a history or backup file streams: one chunk, no buffer)
        buf = _buffers.take(limit)
        try:
            view = memoryview(buf)
            size = 0
            while size < limit:
                n = fh.readinto(view[size:])
                if not n:
                    break
                size += n
            if size == limit and fh.read(1):
                return None  # grew past the limit meanwhile
            data = view[:size]
            digest = hashlib.sha256()
            hasher = Hasher(digest)
            try:
                hasher.update(data)
                body = compress.compress_whole(compression, data, level)
            finally:
                hasher.close()
            first = bytes(data[:8192])
            del data
            view.release()
        finally:
            _buffers.give_back(buf)
    return size, digest.hexdigest(), first, [body]


def file_chunks(path: str, expected_size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """Read a file in chunks; fail if it changed size since it was digested."""
    size = 0
    with open(path, "rb") as fh:
        while True:
            data = fh.read(chunk)
            if not data:
                break
            size += len(data)
            yield data
    if size != expected_size:
        raise IntegrityError(
            f"{path} changed while being archived ({expected_size} -> {size} bytes)"
        )
