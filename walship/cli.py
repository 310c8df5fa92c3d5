"""Command line: argument parsing and exit-code mapping, no logic of its own.

Commands live in their own modules (walship/commands/) and are imported only
when run, by name in :func:`load`, so ``walship push`` pays for nothing it does
not use. A command module provides ``configure(parser)`` and
``run(args, cfg) -> int``. :func:`main` returns the exit code and keeps no
state between calls; a failed fetch exits what fetch's own policy says
(walship/commands/fetch.py, ``error_exit``). Exit codes: docs/exit-codes.md.
"""

from __future__ import annotations

import os
import sys

from . import __version__, log
from .errors import NotFound, UsageError, WalshipError

TYPE_CHECKING = False  # typing is not imported at run time: see docs/benchmarks.md
if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from typing import Any, NoReturn, Protocol

    from .config import Config

    class Command(Protocol):
        """What a module of walship/commands provides."""

        def configure(self, parser: Any) -> None: ...  # an ArgumentParser, or the fast path's

        def run(self, args: argparse.Namespace, cfg: Config) -> int: ...


#: command -> one-line help. Add a line here and a branch in :func:`load` to add a command.
COMMANDS: dict[str, str] = {
    "push": "archive one WAL file (archive_command = 'walship push %%p %%f')",
    "fetch": "restore one WAL file (restore_command = 'walship fetch %%f %%p')",
    "keygen": "create an encryption key file (prints only its key id)",
    "plan-restore": "plan a point-in-time restore (no server)",
    "wal-show": "show timelines, archived ranges, gaps, backups",
    "verify": "check WAL continuity, histories and backups",
    "index": "index archived segments for restore planning",
    "backup-push": "take a base backup of the running server into the repository",
    "backup-list": "list complete base backups, oldest first",
    "backup-fetch": "restore a base backup into an empty directory, ready to recover",
    "delete": "apply the retention policy: dry run unless --confirm",
    "check": "check everything a restore depends on, on the database host",
    "status": "archiving, backups and the restorable window, for operators and monitoring",
    "metrics": "Prometheus metrics: a textfile for node_exporter, or served for a scrape",
    "drill": "restore the latest backup into a scratch server and measure RTO",
    "archive-status": "how far archiving is behind: waiting .ready files, the oldest one's age",
    "show-config": "print the effective settings (secrets hidden)",
    "config-docs": "print the settings reference table (Markdown)",
}


def load(command: str) -> Command:
    """The command's module, imported only now: ``walship push`` loads push alone."""
    module: Command
    match command:
        case "push":
            from .commands import push as module
        case "fetch":
            from .commands import fetch as module
        case "keygen":
            from .commands import keygen as module
        case "plan-restore":
            from .commands import plan_restore as module
        case "wal-show":
            from .commands import wal_show as module
        case "verify":
            from .commands import verify as module
        case "index":
            from .commands import index as module
        case "backup-push":
            from .commands import backup_push as module
        case "backup-list":
            from .commands import backup_list as module
        case "backup-fetch":
            from .commands import backup_fetch as module
        case "delete":
            from .commands import delete as module
        case "check":
            from .commands import check as module
        case "status":
            from .commands import status as module
        case "metrics":
            from .commands import metrics as module
        case "drill":
            from .commands import drill as module
        case "archive-status":
            from .commands import archive_status as module
        case "show-config":
            from .commands import show_config as module
        case "config-docs":
            from .commands import config_docs as module
        case _:
            raise KeyError(command)
    return module


def _parser_class() -> type[argparse.ArgumentParser]:
    """argparse is imported only when a command is not on the fast path."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(f"{self.prog}: {message}", hint=f"see '{self.prog} --help'")

    return _Parser


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="config file (default: $WALSHIP_CONFIG, then /etc/walship/walship.toml)",
    )
    parser.add_argument(
        "--repo", metavar="URL", default=default, help="repository URL (overrides the repo setting)"
    )
    parser.add_argument("--log-format", choices=("text", "json"), default=default)
    parser.add_argument(
        "-v", "--verbose", action="count", default=default, help="more log output (repeatable)"
    )
    parser.add_argument(
        "-q", "--quiet", action="count", default=default, help="less log output (repeatable)"
    )


def build_parser(command: str | None) -> argparse.ArgumentParser:
    import argparse

    parser_class = _parser_class()
    parser = parser_class(
        prog="walship",
        description="PostgreSQL WAL archiving and point-in-time recovery helper.",
        epilog="Exit codes and settings: see docs/exit-codes.md and docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"walship {__version__}")
    _common(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=parser_class)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _common(p, argparse.SUPPRESS)
        if name == command:
            load(name).configure(p)
    return parser


def _find_command(argv: Sequence[str]) -> str | None:
    takes_value = {"--config", "--repo", "--log-format"}
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in takes_value:
            skip = True
            continue
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


#: commands PostgreSQL runs once per WAL file: parsed without building argparse parsers
FAST_COMMANDS = ("push", "fetch")
_FAST_VALUE_OPTIONS = {"--config": "config", "--repo": "repo", "--log-format": "log_format"}
_FAST_COUNT_OPTIONS = {"-v": "verbose", "--verbose": "verbose", "-q": "quiet", "--quiet": "quiet"}


class _NotFast(Exception):
    pass


class _Recorder:
    """Stands in for the parser in a command's ``configure``; records plain arguments only."""

    def __init__(self) -> None:
        self.positionals: list[str] = []
        self.defaults: dict[str, object] = {}

    def add_argument(self, *names: str, **kw: object) -> None:
        if len(names) == 1 and not names[0].startswith("-") and set(kw) <= {"metavar", "help"}:
            self.positionals.append(names[0])
        elif (
            names
            and all(n.startswith("--") for n in names)
            and set(kw)
            <= {
                "action",
                "default",
                "dest",
                "help",
            }
        ):
            dest = kw.get("dest") or names[0][2:].replace("-", "_")
            action = kw.get("action")
            if action == "store_true":
                default = kw.get("default", False)
            elif action == "store_false":
                default = kw.get("default", True)
            elif action is None:
                default = kw.get("default")
            else:
                raise _NotFast
            if default != "==SUPPRESS==":
                self.defaults[str(dest)] = default
        else:
            raise _NotFast

    def __getattr__(self, name: str) -> Any:
        raise _NotFast  # any other parser API: let argparse do it


def _fast_args(argv: Sequence[str], command: str | None) -> Any:
    """Parse ``walship [--config X] [--repo X] [--log-format F] [-v] [-q] push|fetch A B``.

    The Namespace argparse would build for the same argv, or None for anything
    else (help, errors, ``--opt=value``, abbreviations, options after the
    command), which then goes to argparse: the result never differs. Building
    the full parser costs more than the rest of the command's start-up.
    """
    if command not in FAST_COMMANDS:
        return None
    values: dict[str, Any] = {"config": None, "repo": None, "log_format": None}
    values.update(verbose=None, quiet=None)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _FAST_VALUE_OPTIONS:
            if i + 1 == len(argv) or argv[i + 1].startswith("-"):
                return None
            dest = _FAST_VALUE_OPTIONS[arg]
            if dest == "log_format" and argv[i + 1] not in ("text", "json"):
                return None
            values[dest] = argv[i + 1]
            i += 2
        elif arg in _FAST_COUNT_OPTIONS:
            dest = _FAST_COUNT_OPTIONS[arg]
            values[dest] = (values[dest] or 0) + 1
            i += 1
        elif arg == command:
            break
        else:
            return None
    rest = argv[i + 1 :]
    recorder = _Recorder()
    try:
        load(command).configure(recorder)
    except _NotFast:
        return None
    if len(rest) != len(recorder.positionals) or any(a.startswith("-") for a in rest):
        return None
    values["command"] = command
    values.update(recorder.defaults)
    values.update(zip(recorder.positionals, rest, strict=True))
    return _Args(values)


class _Args:
    """What ``argparse.Namespace`` would be for the same argv (argparse and
    ``types`` are not imported on the fast path)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Namespace({self.__dict__!r})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the result is its exit code (docs/exit-codes.md)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _find_command(argv)
    cfg: Config | None = None  # for the failure's exit code: None until configuration loads
    try:
        args = _fast_args(argv, command)
        if args is None:
            parser = build_parser(command)
            args = parser.parse_args(argv)
            if args.command is None:
                parser.print_help(sys.stderr)
                return 2
        from . import config

        overrides: dict[str, object] = {"repo": args.repo, "log_format": args.log_format}
        cfg = config.load(config_path=args.config, overrides=overrides)
        shift = 10 * ((args.quiet or 0) - (args.verbose or 0))
        log.configure(level=cfg.log_level, fmt=cfg.log_format, shift=shift)
        return load(args.command).run(args, cfg)
    except NotFound as exc:
        log.error("error", exc.one_line())
        return _failure_exit(command, cfg, exc.exit_code)
    except WalshipError as exc:
        log.error("error", exc.one_line(), error=type(exc).__name__)
        return _failure_exit(command, cfg, exc.exit_code)
    except KeyboardInterrupt:
        log.error("interrupted", "interrupted")
        return _failure_exit(command, cfg, 130)
    except Exception as exc:  # a bug: still one line, never a traceback by default
        log.error(
            "internal-error",
            f"internal error: {type(exc).__name__}: {exc}",
            hint="please report this; run with -vv for a traceback",
        )
        if log.enabled("debug"):
            import traceback

            traceback.print_exc()
        return _failure_exit(command, cfg, 1)


def _failure_exit(command: str | None, cfg: Config | None, usual: int) -> int:
    """The exit code of a failed command: ``usual``, but fetch's own for fetch.

    A failed fetch exits 1 only where fetch_error_exit says so (an absent file
    is not a failure: fetch returns 1 for it itself); the policy lives with
    fetch (walship/commands/fetch.py), and it needs the configuration only if
    it loaded (``cfg`` is None when loading it failed).
    """
    if command != "fetch":
        return usual
    try:
        from .commands import fetch
    except Exception:  # fetch cannot even be imported: abort recovery, never look "absent"
        return 255
    return fetch.error_exit(cfg)


#: commands PostgreSQL runs once per WAL file: their process exits without teardown
ONE_SHOT = ("push", "fetch")


def entry() -> None:
    """The ``walship`` command (console script and ``python -m walship``).

    ``walship push`` and ``walship fetch`` end with ``os._exit`` once their
    output is flushed: interpreter teardown (freeing every module, running
    finalizers) costs ~2 ms per WAL file and does nothing for them, since
    every file they write is closed and fsynced before they return.
    """
    argv = sys.argv[1:]
    one_shot = _find_command(argv) in ONE_SHOT
    code = main(argv)
    if one_shot:
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:  # None: the descriptor was closed when we started
                    stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)
