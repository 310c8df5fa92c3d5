"""The walship agent: push and fetch without paying for start-up every time.

PostgreSQL starts one ``walship push`` per WAL file and one ``walship fetch``
per restored file. Beyond the work itself, such a process spends its time
loading Python code: walship, cryptography's OpenSSL extension (~6 ms), a
cloud SDK (~300 ms). The agent is a background process that has loaded them
once and forks a copy of itself for each request, so every request still runs
in a process of its own, with the caller's arguments, working directory,
umask, environment and stdin/stdout/stderr, exactly as if the caller had run
it; only the loading is skipped. Configuration and key files are read by each
request, as before.

How a ``walship push|fetch`` process uses it (:func:`run_via_agent`):

1. ``$WALSHIP_AGENT_DIR/walship-agent-<uid>/`` (default base ``/tmp``) must
   be a directory of this user with mode 0700, else no agent is used.
2. It connects to ``<name>.sock`` there, where ``name`` is a digest of what a
   fresh process would load: walship's version and location, the Python
   executable, the uid and the environment variables read at import time
   (``PYTHON*``, ``LD_*``, ``OPENSSL*``, ``CRYPTOGRAPHY*``, ``SSL_*``,
   ``LC_*``, ``LANG``, ``HOME``, ``AWS_DATA_PATH``). The agent must run as
   the same uid.
3. It sends its request, then (once the agent has answered) its stdin,
   stdout and stderr, over one Unix stream connection per request::

       client -> agent   4-byte big-endian length, then NUL-separated fields:
                         MAGIC, key, cwd, umask (octal), argc, args..., NAME=value...
       agent -> client   "READY\\n", or "NO <reason>\\n" (the client runs the command itself)
       client -> agent   one byte with file descriptors 0, 1, 2 (SCM_RIGHTS)
       worker -> client  "OK <pid>\\n"   the worker running the request
       worker -> client  "EXIT <code>\\n" when the command has finished

   Signals the client receives (INT, TERM, HUP, QUIT) are passed on to the
   worker, and the client then dies of the same signal, as a process doing
   the work itself would.
4. Whenever anything fails (no agent, a stale socket, an agent exiting or
   not answering within 5 s, whose socket it then removes, a worker that
   dies without ``EXIT``) the client runs the command itself: push and fetch
   are idempotent, so running a request twice is harmless.

Each request goes to a spare worker forked after the previous one; a worker
lets go of the caller's stdin/stdout/stderr before it sends ``EXIT``.

A client that ran a command itself starts an agent afterwards
(:func:`spawn`, unless ``agent = off``), which lives until it has been idle
for :data:`IDLE_SECONDS` or has run for :data:`MAX_AGE_SECONDS`, and exits as
soon as walship's files or the installed packages change (an upgrade). See
docs/push-fetch.md, "The agent".
"""

from __future__ import annotations

import _socket
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

MAGIC = "walship-agent/1"
#: the client gives up on an agent that has not answered within this time
HANDSHAKE_SECONDS = 5.0
#: an agent with no request for this long exits
IDLE_SECONDS = 30.0
#: an agent exits after this long even when busy (the next request starts a fresh one)
MAX_AGE_SECONDS = 600.0
#: after a failed start, no new agent is started for this long
FAILED_BACKOFF_SECONDS = 60.0

_KEY_PREFIXES = ("PYTHON", "LD_", "OPENSSL", "CRYPTOGRAPHY", "SSL_", "LC_")
_KEY_NAMES = ("LANG", "HOME", "AWS_DATA_PATH")
_FORWARDED_SIGNALS = (2, 15, 1, 3)  # SIGINT, SIGTERM, SIGHUP, SIGQUIT (Linux numbers)
_OFF = ("0", "false", "no", "off")


# ------------------------------------------------------------------ names


def base_directory() -> str:
    return os.environ.get("WALSHIP_AGENT_DIR") or "/tmp"


def directory() -> str:
    """This user's agent directory."""
    return os.path.join(base_directory(), f"walship-agent-{os.getuid()}")


def key() -> str:
    """What a fresh walship process of this caller would load (see the module doc)."""
    from . import __version__

    env = sorted(
        f"{k}={v}" for k, v in os.environ.items() if k.startswith(_KEY_PREFIXES) or k in _KEY_NAMES
    )
    package = os.path.dirname(os.path.abspath(__file__))
    return "\n".join([MAGIC, __version__, sys.executable, package, str(os.getuid()), *env])


def name_of(key_text: str) -> str:
    # _sha256: hashlib would load OpenSSL (~2 ms); this runs before every request
    import _sha256  # type: ignore[import-not-found]

    return str(_sha256.sha256(key_text.encode("utf-8", "surrogateescape")).hexdigest()[:16])


def private_reason(path: str, *, create: bool) -> str | None:
    """None when ``path`` is a directory of this user that nobody else can enter."""
    if not os.path.isabs(path):
        return f"{path} is not an absolute path (WALSHIP_AGENT_DIR must be one)"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return "absent"
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            return f"cannot create {path}: {exc.strerror}"
        try:
            st = os.lstat(path)
        except OSError as exc:
            return f"cannot use {path}: {exc.strerror}"
    except OSError as exc:
        return f"cannot use {path}: {exc.strerror}"
    if (st.st_mode & 0o170000) != 0o040000:
        return f"{path} is not a directory"
    if st.st_uid != os.getuid():
        return f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.getuid()})"
    if st.st_mode & 0o077:
        return f"{path} has mode {st.st_mode & 0o777:03o}; it must be 700"
    return None


#: longest socket path bind/connect take (sun_path is 108 bytes with its NUL)
_SUN_PATH_MAX = 107


def socket_address(where: str, file_name: str, dir_fd: int) -> str:
    """Address of ``where/file_name`` for bind/connect, even when that path is too
    long for a Unix socket address: then it is reached through the open
    directory (``/proc/self/fd/N/file_name``)."""
    path = os.path.join(where, file_name)
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    return f"/proc/self/fd/{dir_fd}/{file_name}"


def disabled_by_environment() -> bool:
    value = os.environ.get("WALSHIP_AGENT")
    return value is not None and value.strip().lower() in _OFF


# ------------------------------------------------------------------ client


class _Lines:
    """Lines from a socket (the worker may send "OK" and "EXIT" in one segment)."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> bytes:
        """The next line with its newline; b"" at end of stream."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(256)
            if not chunk or len(self.buffer) > 4096:
                return b""
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


def _request(key_text: str, argv: Sequence[str]) -> bytes:
    umask = os.umask(0o077)
    os.umask(umask)
    fields = [MAGIC, key_text, os.getcwd(), f"{umask:o}", str(len(argv)), *argv]
    fields.extend(f"{k}={v}" for k, v in os.environ.items())
    return b"\0".join(os.fsencode(f) for f in fields)


def run_via_agent(argv: Sequence[str]) -> int | None:
    """Run ``walship <argv>`` in this user's agent; its exit code, or None to run it here."""
    if disabled_by_environment() or not hasattr(_socket, "SO_PEERCRED"):
        return None
    for fd in (0, 1, 2):  # a closed one would be reused below and passed on in its place
        try:
            os.fstat(fd)
        except OSError:
            return None
    where = directory()
    if not os.path.isabs(where):
        return None
    try:
        dir_fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # absent (no agent yet), a symlink, not a directory
        return None
    sock = None
    try:
        st = os.fstat(dir_fd)  # the directory itself, not what a path may point to later
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        key_text = key()
        payload = _request(key_text, argv)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(HANDSHAKE_SECONDS)
        sock_name = name_of(key_text) + ".sock"
        sock_ino = os.stat(sock_name, dir_fd=dir_fd).st_ino
        sock.connect(socket_address(where, sock_name, dir_fd))
        cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        if int.from_bytes(cred[4:8], sys.byteorder) != os.getuid():
            return None
        sock.sendall(len(payload).to_bytes(4, "big") + payload)
        lines = _Lines(sock)
        try:
            line = lines.next()
        except TimeoutError:
            _retire(where, sock_name, sock_ino, dir_fd)
            return None
        if line != b"READY\n":  # "NO <reason>" (an upgrade, ...) or gone
            return None
        # Only now the descriptors: an agent that never reads them must not keep
        # them open (whoever waits for the end of the caller's output would wait too).
        fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
        sock.sendmsg([b"F"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        line = lines.next()
        if not line.startswith(b"OK "):
            return None
        worker = int(line[3:])
        sock.settimeout(None)
        return _wait(lines, worker)
    except (OSError, ValueError):  # also: cwd gone, NUL in an argument
        return None
    finally:
        if sock is not None:
            sock.close()
        os.close(dir_fd)


#: pids of workers that died without an exit code (the caller then runs the command itself)
lost: list[int] = []
#: what went wrong with the agent, for the caller to log before running the command itself
problems: list[str] = []


def _retire(where: str, sock_name: str, sock_ino: int, dir_fd: int) -> None:
    """An agent that accepts but does not answer (stopped, wedged) must not cost
    every later request the same wait: remove its socket (if still the one we
    reached). Requests then run themselves; the agent exits when it notices."""
    problems.append(
        f"the walship agent in {where} did not answer within {HANDSHAKE_SECONDS:.0f} s; "
        "removed its socket and running the command here"
    )
    try:
        if os.stat(sock_name, dir_fd=dir_fd).st_ino == sock_ino:
            os.unlink(sock_name, dir_fd=dir_fd)
    except OSError:
        pass


def _wait(lines: _Lines, worker: int) -> int | None:
    """Wait for the worker's exit code, passing signals on to it."""
    import _signal  # type: ignore[import-not-found]  # signal.py would import enum

    received: list[int] = []

    def worker_holds_connection() -> bool:
        # Only the worker holds the other end (not the agent, not its forks,
        # not programs it runs): open, with nothing unread, the worker is alive.
        try:
            lines.sock.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # its end of stream, or EXIT waiting to be read: it has finished

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        from .proc import signal_proven  # only when a signal comes: not on every request

        signal_proven(worker, signum, worker_holds_connection)

    for signum in _FORWARDED_SIGNALS:
        _signal.signal(signum, forward)
    line = lines.next()
    if line.startswith(b"EXIT "):
        return int(line[5:])
    if received:  # the worker died of the signal we passed on: so do we
        signum = received[-1]
        _signal.signal(signum, _signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum
    for signum in _FORWARDED_SIGNALS:
        _signal.signal(signum, _signal.default_int_handler if signum == 2 else _signal.SIG_DFL)
    lost.append(worker)
    return None  # the worker died without answering: run the command here


# ------------------------------------------------------------------ starting


def spawn() -> None:
    """Start an agent for this caller in the background, unless one runs or is starting.

    Called by a push or fetch that ran itself. Costs the caller one
    ``posix_spawn``; the agent loads everything in its own time.
    """
    from . import log

    if disabled_by_environment() or not hasattr(os, "posix_spawn"):
        return
    where = directory()
    reason = private_reason(where, create=True)
    if reason is not None:
        log.warning(
            "agent.unsafe-dir",
            f"not using the walship agent: {reason}",
            hint="remove that path, or set WALSHIP_AGENT_DIR to a directory of your own, "
            "or set agent = off",
        )
        return
    if _relative_python_path():
        log.debug(
            "agent.spawn",
            "not starting the walship agent: PYTHONPATH has an entry that is not an "
            "absolute path (it would name a different directory for each caller)",
        )
        return
    name = name_of(key())
    failed = os.path.join(where, name + ".failed")
    try:
        import time

        if time.time() - os.stat(failed).st_mtime < FAILED_BACKOFF_SECONDS:
            return
    except OSError:
        pass
    import fcntl

    try:
        fd = os.open(os.path.join(where, name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return  # an agent runs, or is starting
        os.ftruncate(fd, 0)  # no stale pid while the lock is held (see running())
        os.set_inheritable(fd, True)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # -P: no '' (the working directory) in front of sys.path; and, before
        # anything is imported, only absolute entries (see walship/proc.py):
        # workers run in their callers' directories and import lazily.
        code = (
            "import sys; sys.path[:] = [p for p in sys.path if p.startswith('/')]; "
            f"sys.path.insert(0, {package_parent!r}); "
            "from walship.agent import serve_main; serve_main()"
        )
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.posix_spawn(
                sys.executable,
                [sys.executable, "-P", "-c", code, str(fd), name, ",".join(_storage_modules())],
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, null, n) for n in (0, 1, 2)],
                setsid=True,
                setsigmask=(),  # nothing blocked that the caller's parent may have blocked
            )
        finally:
            os.close(null)
    except OSError as exc:
        log.debug("agent.spawn", f"cannot start the walship agent: {exc}")
    finally:
        os.close(fd)  # the agent keeps the lock: same open file description


def _relative_python_path() -> bool:
    """Whether PYTHONPATH names a directory relative to the working directory
    (an empty entry is the working directory itself)."""
    value = os.environ.get("PYTHONPATH")
    return value is not None and not all(os.path.isabs(p) for p in value.split(os.pathsep))


def _storage_modules() -> list[str]:
    """The storage and codec modules this process loaded (the agent preloads them)."""
    return sorted(m for m in sys.modules if m.startswith(("walship.storage.", "walship.codec.")))


# ------------------------------------------------------------------ the agent


class _Agent:
    def __init__(self, where: str, name: str, lock_fd: int) -> None:
        self.where = where
        self.name = name
        self.lock_fd = lock_fd
        self.sock_path = os.path.join(where, name + ".sock")
        self.log_path = os.path.join(where, name + ".log")
        self.listener: object = None
        self.inode = -1
        self.code_paths: list[str] = []
        self.snapshot: dict[str, tuple[int, int]] = {}
        self.requests = 0
        self.key_text = ""
        self.spare: _Spare | None = None
        #: modules the starter used (its backend, cryptography): loaded up front
        self.preload: list[str] = []

    def log(self, text: str) -> None:
        import time

        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} [{os.getpid()}] {text}\n"
        try:
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError:
            pass


def _code_paths() -> list[str]:
    """walship's loaded module files, its package directory and every import directory."""
    paths = {os.path.dirname(os.path.abspath(__file__))}
    for mod_name, module in list(sys.modules.items()):
        if mod_name == "walship" or mod_name.startswith("walship."):
            path = getattr(module, "__file__", None)
            if path:
                paths.add(path)
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(paths)


def _code_snapshot(paths: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(mtime, inode) of each of ``paths`` (see :func:`_code_paths`).

    pip replaces files (new inodes) and adds or removes entries in
    site-packages (a new directory mtime), so an upgrade of walship or of a
    library shows here. About 0.1 ms: checked before every request.
    """
    snap: dict[str, tuple[int, int]] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        snap[path] = (st.st_mtime_ns, st.st_ino)
    return snap


def _warm_up(preload: Sequence[str] = ()) -> None:
    """Import what push and fetch use; the starter's storage modules, and
    ``cryptography`` only if the starter or this environment's configuration
    encrypts (a plain repository's agent never loads it)."""
    import importlib

    from .storage import registry

    for module in preload:
        if module.startswith("walship.storage."):
            registry.warm_module(module)
    for module in (
        *(m for m in preload if m.startswith("walship.")),
        "walship.cli",
        "walship.config",
        "walship.commands.push",
        "walship.commands.fetch",
        "walship.archive.push",
        "walship.archive.fetch",
        "walship.archive.prefetch",
        "walship.storage.registry",
        "walship.storage.local",
        "walship.codec.envelope",
        "walship.codec.compress",
    ):
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    encrypts = "walship.codec.crypto" in preload
    try:  # the backend of the repository configured in this environment
        from . import config

        cfg = config.load(config_path=None, overrides={})
        encrypts = encrypts or cfg.encryption != "none"
        if cfg.repo:
            registry.warm(cfg.repo)
    except Exception:  # a warm-up only; requests report real errors
        pass
    if encrypts:
        _warm_crypto()
    # glibc serves big allocations with fresh mmap()s (page faults on every
    # 1 MiB chunk: ~1 ms per MiB on a VM) until a freed mmap()ed block raises
    # its threshold; free one of 8 MiB here so that workers start with the
    # threshold a long-running process would have (measured: -2 ms per
    # encrypted fetch of 4 MiB stored). A no-op elsewhere.
    block = bytearray(8 << 20)
    del block


def _warm_crypto() -> None:
    """Load ``cryptography`` and let OpenSSL look up its ciphers once."""
    try:
        from .codec import crypto

        if crypto.HAVE_CRYPTOGRAPHY:
            for cipher in ("aes-256-gcm", "chacha20-poly1305"):
                # a throwaway key: nothing random is kept in the agent's memory
                crypto._aead(cipher, bytes(32)).encrypt(bytes(12), b"", None)
            crypto._x25519()
    except Exception:  # likewise
        pass


def serve_main() -> None:
    """Entry point of the agent process (started by :func:`spawn`)."""
    from .proc import safe_sys_path

    safe_sys_path()  # also done before the first import (see spawn); a second guard
    lock_fd, name = int(sys.argv[1]), sys.argv[2]
    preload = sys.argv[3].split(",") if len(sys.argv) > 3 else []
    # Whatever the starter inherited (PostgreSQL's files and sockets) is not ours to keep.
    os.closerange(3, lock_fd)
    os.closerange(lock_fd + 1, 1 << 16)
    os.chdir("/")
    agent = _Agent(directory(), name, lock_fd)
    agent.preload = preload
    code = 0
    try:
        if name_of(key()) != name:
            raise RuntimeError("the agent's environment differs from its starter's")
        _serve(agent)
    except BaseException as exc:  # the agent's last word goes to its log
        if not isinstance(exc, SystemExit):
            code = 1
            agent.log(f"agent failed: {type(exc).__name__}: {exc}")
            try:
                fd = os.open(
                    os.path.join(agent.where, name + ".failed"), os.O_CREAT | os.O_WRONLY, 0o600
                )
                os.close(fd)
                os.utime(os.path.join(agent.where, name + ".failed"))
            except OSError:
                pass
    finally:
        _withdraw(agent)
    os._exit(code)


def _withdraw(agent: _Agent) -> None:
    """Remove the socket (if it is still ours) so that clients stop coming."""
    try:
        if os.stat(agent.sock_path).st_ino == agent.inode:
            os.unlink(agent.sock_path)
    except OSError:
        pass
    listener = agent.listener
    if listener is not None:
        listener.close()  # type: ignore[attr-defined]
    _drop_spare(agent)


def _serve(agent: _Agent) -> None:
    import signal
    import socket
    import time

    if private_reason(agent.where, create=False) is not None:
        raise RuntimeError(f"{agent.where} is not a private directory")
    os.ftruncate(agent.lock_fd, 0)
    os.pwrite(agent.lock_fd, f"{os.getpid()}\n".encode(), 0)
    with open(agent.log_path, "w"):
        pass  # each agent's log starts empty
    started = time.monotonic()
    agent.key_text = key()
    _warm_up(agent.preload)
    agent.code_paths = _code_paths()
    agent.snapshot = _code_snapshot(agent.code_paths)
    import gc

    gc.collect()
    gc.freeze()  # workers' collections then leave the agent's objects (and pages) alone

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    agent.listener = listener
    temp = f"{agent.sock_path}.{os.getpid()}"
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    dir_fd = os.open(agent.where, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        listener.bind(socket_address(agent.where, os.path.basename(temp), dir_fd))
    finally:
        os.close(dir_fd)
    listener.listen(64)
    os.rename(temp, agent.sock_path)  # replaces a dead agent's socket; ready only now
    agent.inode = os.stat(agent.sock_path).st_ino
    agent.log(f"agent ready in {time.monotonic() - started:.3f} s")
    agent.spare = _fork_spare(agent)
    listener.settimeout(1.0)
    last = time.monotonic()
    while True:
        now = time.monotonic()
        if now - last > IDLE_SECONDS:
            agent.log(f"idle for {IDLE_SECONDS:.0f} s after {agent.requests} requests: exiting")
            return
        if now - started > MAX_AGE_SECONDS:
            agent.log(f"{MAX_AGE_SECONDS:.0f} s old after {agent.requests} requests: exiting")
            return
        try:
            if os.stat(agent.sock_path).st_ino != agent.inode:
                agent.log("socket replaced or removed: exiting")
                return
        except OSError:
            agent.log("socket removed: exiting")
            return
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            _learn(agent)
            if agent.spare is None:
                agent.spare = _fork_spare(agent)
            continue
        last = time.monotonic()
        if not _handle(agent, conn):
            return


def _handle(agent: _Agent, conn: object) -> bool:
    """Hand one connection to a worker; False when the agent must exit.

    The worker is normally the spare forked after the previous request, so
    forking and a worker's set-up are not on the caller's clock.
    """
    import socket
    import struct

    assert isinstance(conn, socket.socket)
    fds: list[int] = []
    try:
        conn.settimeout(2.0)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            return True
        body, fds = _receive(conn, 0)
        fields = _fields(body)
        if body is None or fields is None:
            return True
        if os.fsdecode(fields[1]) != agent.key_text:
            conn.sendall(b"NO different key\n")
            return True
        if _code_snapshot(agent.code_paths) != agent.snapshot:
            conn.sendall(b"NO walship or its libraries changed\n")
            agent.log("walship or its libraries changed: exiting")
            return False
        conn.sendall(b"READY\n")
        fds = _receive_fds(conn, 3)
        if len(fds) != 3:
            return True
        agent.requests += 1
        if not _give_to_spare(agent, body, [conn.fileno(), *fds]):
            pid = os.fork()
            if pid == 0:
                held = _become_worker(agent)
                _run_request(agent, conn.detach(), fields, fds, held)
    except OSError as exc:
        agent.log(f"request dropped: {exc}")
        return True
    finally:
        for fd in fds:
            _close_quietly(fd)
        conn.close()
    return _after_request(agent)


def _after_request(agent: _Agent) -> bool:
    """Between requests: load what workers needed, fork the next spare."""
    _learn(agent)
    if agent.spare is None:
        agent.spare = _fork_spare(agent)
    return True


def _learn(agent: _Agent) -> None:
    """Import the walship modules workers reported loading themselves (a backend
    the agent's own configuration did not name), so later workers find them."""
    import importlib

    warm = _warm_path(agent)
    try:
        with open(warm) as fh:
            names = set(fh.read().split())
        os.unlink(warm)
    except OSError:
        return
    added = False
    from .storage import registry

    for module in sorted(names):
        if module.startswith("walship.") and module not in sys.modules:
            added = True
            if module.startswith("walship.storage."):
                registry.warm_module(module)  # also parses what its SDK parses per client
                continue
            if module == "walship.codec.crypto":
                _warm_crypto()
                continue
            try:
                importlib.import_module(module)
            except Exception:  # the worker that needs it reports the error
                pass
    if added:
        agent.log(f"loaded {', '.join(sorted(names))} for later requests")
        agent.code_paths = _code_paths()
        agent.snapshot = _code_snapshot(agent.code_paths)
        _drop_spare(agent)  # forked before the import: replace it


def _fork_spare(agent: _Agent) -> _Spare | None:
    import socket

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = os.fork()
    except OSError as exc:
        agent.log(f"cannot fork a worker: {exc}")
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        ours.close()
        _spare_main(agent, theirs)  # never returns
    theirs.close()
    return _Spare(pid, ours)


def _drop_spare(agent: _Agent) -> None:
    spare = agent.spare
    agent.spare = None
    if spare is not None:
        spare.channel.close()  # type: ignore[attr-defined]  # it sees the end and exits


def _give_to_spare(agent: _Agent, body: bytes, fds: list[int]) -> bool:
    """Send a request and its descriptors (connection, stdin, stdout, stderr) to the spare."""
    import socket

    spare = agent.spare
    agent.spare = None
    if spare is None:
        return False
    channel = spare.channel
    assert isinstance(channel, socket.socket)
    try:
        head = len(body).to_bytes(4, "big") + body
        packed = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        sent = channel.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, packed)])
        if sent < len(head):
            channel.sendall(head[sent:])
        return True
    except OSError:  # the spare died: fork a worker instead
        return False
    finally:
        channel.close()


class _Spare:
    __slots__ = ("channel", "pid")

    def __init__(self, pid: int, channel: object) -> None:
        self.pid = pid
        self.channel = channel


def _become_worker(agent: _Agent) -> list[int]:
    """What every worker does first in its forked copy of the agent.

    Returns the list of descriptors that forks of the worker (the read-ahead
    helper) must close: the caller's connection, once it is known.
    """
    import signal

    _close_quietly(agent.lock_fd)  # the lock stays with the agent, not with its workers
    listener = agent.listener
    if listener is not None:
        listener.close()  # type: ignore[attr-defined]
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    held: list[int] = []

    def close_held() -> None:
        for fd in held:
            _close_quietly(fd)

    os.register_at_fork(after_in_child=close_held)
    return held


def _spare_main(agent: _Agent, channel: object) -> None:
    """A spare worker: set up, then wait for the request the agent hands over."""
    import socket

    assert isinstance(channel, socket.socket)
    try:
        held = _become_worker(agent)
        agent.spare = None
        body, fds = _receive(channel, 4)
        channel.close()
        fields = _fields(body)
        if fields is None or len(fds) != 4:
            for fd in fds:
                _close_quietly(fd)
            os._exit(0)  # the agent closed the channel: no request
        _run_request(agent, fds[0], fields, fds[1:], held)
    except BaseException:
        pass
    os._exit(0)


def _receive(conn: object, count: int) -> tuple[bytes | None, list[int]]:
    """One length-prefixed message and the descriptors sent with it."""
    import socket

    assert isinstance(conn, socket.socket)
    data, ancdata, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(count * 4))
    fds = _passed_fds(ancdata)
    if len(data) < 4 or len(fds) != count:
        return None, fds
    size = int.from_bytes(data[:4], "big")
    body = bytearray(data[4:])
    while len(body) < size:
        chunk = conn.recv(min(1 << 20, size - len(body)))
        if not chunk:
            return None, fds
        body += chunk
    return bytes(body), fds


def _receive_fds(conn: object, count: int) -> list[int]:
    """The caller's stdin, stdout and stderr, sent after the agent said READY."""
    import socket

    assert isinstance(conn, socket.socket)
    _data, ancdata, _flags, _addr = conn.recvmsg(1, socket.CMSG_SPACE(count * 4))
    fds = _passed_fds(ancdata)
    if len(fds) != count:
        for fd in fds:
            _close_quietly(fd)
        return []
    return fds


def _passed_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The file descriptors in a message's SCM_RIGHTS control data."""
    import socket

    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(
                int.from_bytes(payload[i : i + 4], sys.byteorder, signed=True)
                for i in range(0, usable, 4)
            )
    return fds


def _fields(body: bytes | None) -> list[bytes] | None:
    if body is None:
        return None
    fields = body.split(b"\0")
    if len(fields) < 5 or fields[0] != MAGIC.encode():
        return None
    return fields


def _warm_path(agent: _Agent) -> str:
    return os.path.join(agent.where, agent.name + ".warm")


def _run_request(
    agent: _Agent, conn_fd: int, fields: list[bytes], fds: list[int], held: list[int]
) -> None:
    """Run one request in this worker, as a fresh ``walship`` would; never returns."""
    import time

    code = 255
    answered = False
    held.append(conn_fd)  # forks of this worker must not hold the caller's connection
    os.set_inheritable(conn_fd, False)  # nor programs it runs (the client's proof, see _wait)
    before = set(sys.modules)

    def say(text: str) -> None:
        os.write(conn_fd, text.encode())

    try:
        cwd, umask = os.fsdecode(fields[2]), int(fields[3], 8)
        argc = int(fields[4])
        args = [os.fsdecode(f) for f in fields[5 : 5 + argc]]
        env: dict[str, str] = {}
        for entry in fields[5 + argc :]:
            k, sep, v = os.fsdecode(entry).partition("=")
            if sep:
                env[k] = v
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        fds.clear()
        os.chdir(cwd)
        os.umask(umask)
        os.environ.clear()
        os.environ.update(env)
        time.tzset()
        sys.argv = ["walship", *args]
        say(f"OK {os.getpid()}\n")
        answered = True
        from . import cli

        cli.AGENT_PID = os.getppid()
        code = cli.main(args)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if cli.agent_setting() is False:  # agent = off in this request's configuration
            _ask_to_retire(agent)
    except BaseException as exc:  # never return into the agent's loop
        if not answered:
            try:
                say(f"NO {type(exc).__name__}\n")
            except OSError:
                pass
            os._exit(0)
    # Let go of the caller's stdin/stdout/stderr before answering (everything
    # is flushed): whoever reads them sees their end when the caller exits,
    # not when this process has finished tearing down.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass
    try:
        say(f"EXIT {code}\n")
    except OSError:
        pass
    _report_new_modules(before, _warm_path(agent))
    os._exit(code)


def _ask_to_retire(agent: _Agent) -> None:
    """Make this worker's agent exit: remove its socket, if it is still the one
    the agent made. No signal: the agent may have exited already, and this
    worker's parent is then PID 1 or a subreaper, not the agent. The agent
    checks its socket every second and exits when it is gone; callers that
    find no socket run their command themselves."""
    try:
        if os.stat(agent.sock_path).st_ino == agent.inode:
            os.unlink(agent.sock_path)
            agent.log("a request's configuration says agent = off: retiring the agent")
    except OSError:
        pass


def _report_new_modules(before: set[str], warm_path: str) -> None:
    """Tell the agent which walship modules this request had to import itself."""
    new = [m for m in sys.modules if m not in before and m.startswith("walship.")]
    if not new:
        return
    try:
        fd = os.open(warm_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, ("\n".join(new) + "\n").encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# ------------------------------------------------------------------ status


def running(where: str | None = None) -> list[tuple[int, str]]:
    """(pid, name) of the agents of this user that hold their lock."""
    where = where or directory()
    found: list[tuple[int, str]] = []
    try:
        names = sorted(os.listdir(where))
    except OSError:
        return found
    for entry in names:
        if entry.endswith(".lock"):
            pid = _lock_holder(where, entry)
            if pid is not None:
                found.append((pid, entry[: -len(".lock")]))
    return found


def _lock_holder(where: str, entry: str) -> int | None:
    """The pid of the agent holding lock file ``entry``, None if no agent holds it."""
    import fcntl

    try:
        fd = os.open(os.path.join(where, entry), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it
        except OSError:
            pass
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit() and _is_agent(int(text)):
            return int(text)
        return None
    finally:
        os.close(fd)


def _is_agent(pid: int) -> bool:
    """Whether ``pid`` runs the agent (its command line), where /proc tells."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"walship.agent" in fh.read()
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")  # no /proc: trust the lock
    except OSError:
        return False


def stop(where: str | None = None, timeout: float = 10.0) -> list[int]:
    """Ask the agents in ``where`` (default: this user's) to exit; wait until they have.

    Returns their pids. An agent exits between requests; workers already
    running finish their request.
    """
    import time

    from .proc import signal_proven

    where = where or directory()
    stopped = []
    for pid, name in running(where):

        def still_holds(lock: str = name + ".lock", pid: int = pid) -> bool:
            return _lock_holder(where, lock) == pid

        # still the agent holding that lock once its pid is pinned (not a reused pid)
        if signal_proven(pid, 15, still_holds):
            stopped.append(pid)
    deadline = time.monotonic() + timeout
    while stopped and time.monotonic() < deadline:
        if not {pid for pid, _ in running(where)} & set(stopped):
            break
        time.sleep(0.02)
    return stopped
