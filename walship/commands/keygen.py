"""``walship keygen PATH``: write a new encryption key file (docs/encryption.md).

``--mode symmetric`` (default) writes one secret key file. ``--mode public-key``
writes an X25519 private key to PATH and its public key to PATH.pub (or
``--public PATH``). Files are created new (never overwritten) with mode 0600.
Only the key id and the paths are printed, never key material; the key is
never taken from or put on the command line.

``walship keygen --show FILE`` prints the type and key id of each key in an
existing key file.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import UsageError, WalshipError

if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        metavar="PATH",
        help="key file to create (with --show: key file to describe)",
    )
    parser.add_argument(
        "--mode",
        choices=("symmetric", "public-key"),
        default="symmetric",
        help="symmetric: one secret key; public-key: an X25519 key pair (default: symmetric)",
    )
    parser.add_argument(
        "--public",
        metavar="PUBPATH",
        default=None,
        help="where to write the public key in public-key mode (default: PATH.pub)",
    )
    parser.add_argument(
        "--show",
        action="store_true",
        help="describe the keys in an existing key file (type and key id) instead",
    )


def _write_new(path: str, text: str) -> None:
    """Create ``path`` with mode 0600, failing if it exists; durable on return."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(
            f"{path} already exists; refusing to overwrite a key file",
            hint="choose a new path (old keys must stay readable for old objects)",
        ) from None
    except OSError as exc:
        raise WalshipError(f"cannot create key file {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="ascii", closefd=False) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise WalshipError(f"cannot write key file {path}: {exc.strerror}") from None
    os.close(fd)
    directory = os.path.dirname(os.path.abspath(path))
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _show(path: str) -> int:
    from ..codec import crypto

    for key in crypto.read_key_file(path, "keygen --show"):
        print(f"{key.key_id} {key.description} ({key.mode})")
    return 0


def run(args: argparse.Namespace, cfg: Config) -> int:
    from ..codec import crypto

    if args.show:
        return _show(args.path)
    path: str = args.path
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.mode == "symmetric":
        if args.public:
            raise UsageError("--public is only for --mode public-key")
        secret = os.urandom(crypto.KEY_SIZE)
        key_id = crypto.symmetric_key_id(secret)
        _write_new(
            path,
            f"# walship symmetric key, key id {key_id}, created {created}\n"
            "# SECRET: it reads and writes the repository. Keep it mode 0600 and keep an\n"
            "# offline backup: objects encrypted with it cannot be read without it.\n"
            + crypto.format_key_line(crypto.SYMMETRIC, secret),
        )
        print(f"key id {key_id}")
        print(f"wrote symmetric key {path}")
        return 0

    crypto.require_cryptography()
    public_path: str = args.public or path + ".pub"
    if os.path.abspath(public_path) == os.path.abspath(path):
        raise UsageError("the public key path must differ from the private key path")
    for p in (path, public_path):
        if os.path.lexists(p):
            raise UsageError(
                f"{p} already exists; refusing to overwrite a key file",
                hint="choose a new path (old keys must stay readable for old objects)",
            )
    private = os.urandom(crypto.KEY_SIZE)
    public = crypto.x25519_public_of(private)
    key_id = crypto.x25519_key_id(public)
    _write_new(
        path,
        f"# walship X25519 private key, key id {key_id}, created {created}\n"
        "# SECRET: it reads the repository. Keep it off the database host, mode 0600,\n"
        "# with an offline backup: objects encrypted to it cannot be read without it.\n"
        + crypto.format_key_line(crypto.X25519_PRIVATE, private),
    )
    _write_new(
        public_path,
        f"# walship X25519 public key, key id {key_id}, created {created}\n"
        "# For writing (encryption_key_file on the database host); it cannot read.\n"
        + crypto.format_key_line(crypto.X25519_PUBLIC, public),
    )
    print(f"key id {key_id}")
    print(f"wrote private key {path}")
    print(f"wrote public key {public_path}")
    return 0
