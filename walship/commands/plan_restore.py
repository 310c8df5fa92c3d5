"""``walship plan-restore``: can I restore to this target, and how? (docs/planning.md)"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from .. import log
from ..config import Config
from ..errors import RepositoryNotFound, UsageError, WalshipError
from ..pg import parse_lsn
from ..restore import planner, report
from ..restore.inventory import load_inventory
from ..storage.registry import open_backend

if TYPE_CHECKING:
    import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target (exactly one)").add_mutually_exclusive_group(
        required=True
    )
    target.add_argument(
        "--time",
        metavar="TIMESTAMPTZ",
        help="recovery_target_time, with a zone: '2026-11-23 14:30:00+00' or ...T14:30:00Z",
    )
    target.add_argument("--lsn", metavar="X/Y", help="recovery_target_lsn, e.g. 0/5000260")
    target.add_argument("--xid", metavar="XID", help="recovery_target_xid")
    target.add_argument("--name", metavar="NAME", help="recovery_target_name (a restore point)")
    target.add_argument(
        "--immediate", action="store_true", help="recovery_target = 'immediate' (consistency)"
    )
    target.add_argument("--latest", action="store_true", help="no target: replay all archived WAL")
    parser.add_argument(
        "--inclusive",
        choices=("on", "off"),
        default="on",
        help="recovery_target_inclusive for --time, --lsn and --xid: stop just after the "
        "target (on, the default, as PostgreSQL) or just before it (off)",
    )
    parser.add_argument(
        "--timeline",
        default="latest",
        metavar="latest|current|N",
        help="recovery_target_timeline to plan for (default latest, as PostgreSQL)",
    )
    parser.add_argument(
        "--backup", metavar="NAME", help="only this backup (.backup file name or label)"
    )
    parser.add_argument(
        "--action",
        choices=("pause", "promote", "shutdown"),
        default="pause",
        help="recovery_target_action for the settings (default pause)",
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "--no-index",
        action="store_true",
        help="do not index unindexed segments first (time, xid and name targets then "
        "stop with exit 15 when the index is incomplete)",
    )


def parse_target(args: argparse.Namespace) -> planner.Target:
    inclusive = getattr(args, "inclusive", "on") != "off"
    if not inclusive and args.time is None and args.lsn is None and args.xid is None:
        raise UsageError(
            "--inclusive off applies only to --time, --lsn and --xid",
            hint="PostgreSQL ignores recovery_target_inclusive for restore points and "
            "'immediate'; leave --inclusive out",
        )
    try:
        if args.time is not None:
            return planner.Target("time", planner.parse_time(args.time), inclusive)
        if args.lsn is not None:
            return planner.Target("lsn", parse_lsn(args.lsn), inclusive)
        if args.xid is not None:
            xid = int(args.xid, 10)
            if not 3 <= xid < 1 << 64:
                raise ValueError(f"--xid {args.xid!r} is not a normal transaction id (>= 3)")
            return planner.Target("xid", xid, inclusive)
        if args.name is not None:
            if not args.name or len(args.name.encode()) > 63:
                raise ValueError("--name must be 1 to 63 bytes (PostgreSQL's restore point limit)")
            return planner.Target("name", args.name)
    except ValueError as exc:
        text = str(exc)
        if args.xid is not None and "invalid literal" in text:
            text = f"--xid {args.xid!r} is not a number"
        raise UsageError(text, hint="see 'walship plan-restore --help'") from None
    if args.immediate:
        return planner.Target("immediate")
    return planner.Target("latest")


def parse_timeline(text: str) -> str | int:
    try:
        return planner.parse_timeline(text)
    except ValueError:
        raise UsageError(
            f"--timeline {text!r} is not valid",
            hint="use latest, current or a timeline number such as 2",
        ) from None


def _executable() -> str:
    """This walship's absolute path: PostgreSQL's PATH rarely holds a venv."""
    import shutil
    import sys

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "walship" and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    return shutil.which("walship") or "walship"


#: settings holding a path, made absolute in a restore_command (it runs in the data directory)
PATH_SETTINGS = ("encryption_key_file", "encryption_keyring", "gcs_credentials_file", "pgdata")


def _absolute_repo(repo: str) -> str:
    return repo if "://" in repo else os.path.abspath(repo)


def restore_command_and_omitted(
    cfg: Config, repo_flag: str | None, env: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """``(restore_command, omitted secret variables)``: see :func:`invocation`."""
    prefix, omitted = invocation(cfg, repo_flag, env)
    # PostgreSQL replaces %f, %p, %r and %% in restore_command: a literal % is %%
    return prefix.replace("%", "%%") + " fetch %f %p", omitted


def invocation(
    cfg: Config, repo_flag: str | None, env: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    """This walship with the same settings, as a shell command prefix (the words
    before the command name): for restore_command and for the backup-fetch line.

    The config file (absolute path) and the non-secret ``WALSHIP_*`` variables
    of this environment are passed on (``VAR=value walship ... fetch %f %p``;
    PostgreSQL runs it through the shell); local paths are made absolute.
    Secret variables are never written into a command line (it ends up in
    postgresql.auto.conf and in ``ps``): their names are returned, for the
    caller to tell the user to put them into the config file or the server's
    environment.
    """
    import shlex

    from .. import config

    given = config.environment_settings() if env is None else env
    omitted: list[str] = []
    words: list[str] = []
    for name, text in given.items():
        row = config.SETTINGS_BY_NAME[name]
        if name == "config":
            continue  # passed as --config, absolute
        if row.secret:
            omitted.append(row.env)
            continue
        if name == "repo":
            text = _absolute_repo(text)
        elif name in PATH_SETTINGS:
            text = os.path.abspath(text)
        words.append(f"{row.env}={shlex.quote(text)}")
    words.append(shlex.quote(_executable()))
    if cfg.config:
        words += ["--config", shlex.quote(os.path.abspath(cfg.config))]
    if repo_flag:
        words += ["--repo", shlex.quote(_absolute_repo(repo_flag))]
    return " ".join(words), omitted


def restore_command(args: argparse.Namespace, cfg: Config) -> str:
    """The restore_command line to paste: same executable, config and repository."""
    command, omitted = restore_command_and_omitted(cfg, getattr(args, "repo", None))
    if omitted:
        log.warning(
            "restore-command.secrets",
            f"{', '.join(omitted)} not written into restore_command (secrets stay out of "
            "postgresql.auto.conf): put them into the config file or the server's environment",
        )
    return command


def _plan(
    args: argparse.Namespace,
    cfg: Config,
    inv: planner.Inventory,
    target: planner.Target,
    timeline: str | int,
) -> planner.Plan:
    return planner.plan(
        inv,
        target,
        timeline=timeline,
        backup=args.backup,
        restore_command=restore_command(args, cfg),
        action=args.action,
    )


def no_repository(args: argparse.Namespace, url: str, exc: RepositoryNotFound) -> int:
    """Exit 16: there is no repository to plan from (a typo in ``repo``, an absent bucket)."""
    code = planner.EXIT_CODES[planner.NO_REPOSITORY]
    if args.json:
        doc = {
            "verdict": planner.NO_REPOSITORY,
            "reachable": False,
            "exit_code": code,
            "reason": exc.message,
            "hint": exc.hint,
            "repository": url,
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    log.error("plan.no-repository", exc.one_line(), exit=code)
    return code


def run(args: argparse.Namespace, cfg: Config) -> int:
    target = parse_target(args)
    timeline = parse_timeline(args.timeline)
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        try:
            inv, _ = load_inventory(cfg, backend)
        except RepositoryNotFound as exc:
            return no_repository(args, backend.url, exc)
        plan = _plan(args, cfg, inv, target, timeline)
        needs_index = plan.verdict == planner.NEEDS_INDEX or plan.unindexed is not None
        if needs_index and not args.no_index:
            # index what is missing (as `walship index` would), then plan again: also when
            # the choice of backup had to rely on a START TIME for lack of an index
            from ..index.build import update_index

            log.info("plan.index", "indexing archived segments for planning (walship index)")
            try:
                update_index(cfg, backend)
            except WalshipError as exc:
                log.warning("plan.index-failed", f"could not index: {exc.one_line()}")
            else:
                inv, _ = load_inventory(cfg, backend)
                plan = _plan(args, cfg, inv, target, timeline)
    finally:
        backend.close()
    walship, _ = invocation(cfg, getattr(args, "repo", None))
    if args.json:
        json.dump(report.plan_json(plan, inv, walship=walship), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.plan_text(plan, inv, walship=walship))
    if not plan.reachable:
        log.warning(
            "plan.unreachable",
            f"{target.describe()} is not reachable: {plan.reason}",
            verdict=plan.verdict,
            exit=plan.exit_code,
        )
    return plan.exit_code
