"""``walship backup-fetch NAME|LATEST DIR``: restore a base backup, ready to start.

The backup is restored by :mod:`walship.backup.fetch`; this command chooses
it (``LATEST`` with a target: through the restore planner, the newest backup
that can serve the target), checks the plan (an unreachable target is refused
before anything is written, unless ``--force``), and writes the recovery
settings (restore_command = this walship's fetch with the same settings, the
target, ``recovery.signal`` or ``standby.signal``) so that starting the
server is the only step left (docs/backups.md, "Restoring a backup").

Exit codes: 0 restored; 2 usage (unknown backup, non-empty directory, bad
flag); 1 a failure while restoring (missing or corrupt part, digest
mismatch, wrong key, storage); an unreachable target the plan-restore codes
10-16 (docs/exit-codes.md).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import TYPE_CHECKING

from .. import log
from ..errors import RepositoryNotFound, UsageError, WalshipError
from ..manifest import NAME_RE
from ..pg import format_lsn
from ..storage.registry import open_backend

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..backup.fetch import Result
    from ..config import Config
    from ..manifest import Manifest
    from ..restore import planner
    from ..storage.base import Backend


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME|LATEST", help="backup name (backup-list) or LATEST")
    parser.add_argument("dir", metavar="DIR", help="empty or missing directory to restore into")
    parser.add_argument(
        "--tablespace-map",
        action="append",
        default=[],
        metavar="OID=DIR",
        help="restore tablespace OID (or NAME=DIR) into DIR instead of its original path; "
        "repeatable",
    )
    target = parser.add_argument_group("recovery target (at most one; default: all archived WAL)")
    one = target.add_mutually_exclusive_group()
    one.add_argument("--target-time", metavar="TIMESTAMPTZ", help="recovery_target_time")
    one.add_argument("--target-lsn", metavar="X/Y", help="recovery_target_lsn")
    one.add_argument("--target-xid", metavar="XID", help="recovery_target_xid")
    one.add_argument("--target-name", metavar="NAME", help="recovery_target_name")
    one.add_argument(
        "--target-immediate",
        action="store_true",
        help="recovery_target = 'immediate' (stop at consistency)",
    )
    target.add_argument(
        "--target-inclusive",
        choices=("on", "off"),
        default="on",
        help="recovery_target_inclusive for time, lsn and xid targets (default on)",
    )
    target.add_argument(
        "--target-timeline",
        default="latest",
        metavar="latest|current|N",
        help="recovery_target_timeline (default latest)",
    )
    target.add_argument(
        "--target-action",
        choices=("pause", "promote", "shutdown"),
        default="pause",
        help="recovery_target_action (default pause)",
    )
    parser.add_argument(
        "--standby", action="store_true", help="write standby.signal instead of recovery.signal"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="restore even when the plan says the target is unreachable",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="parts downloaded and written at once (default: the backup_workers setting; "
        "0 there: the number of cores)",
    )
    parser.add_argument(
        "--no-index",
        action="store_true",
        help="do not index unindexed segments to plan a time, xid or name target",
    )


def _target(args: argparse.Namespace) -> planner.Target:
    from . import plan_restore

    if args.target_inclusive == "off" and not (
        args.target_time or args.target_lsn or args.target_xid
    ):
        raise UsageError(
            "--target-inclusive off applies only to --target-time, --target-lsn and --target-xid",
            hint="PostgreSQL ignores recovery_target_inclusive otherwise; leave it out",
        )
    ns = argparse.Namespace(
        time=args.target_time,
        lsn=args.target_lsn,
        xid=args.target_xid,
        name=args.target_name,
        immediate=args.target_immediate,
        inclusive=args.target_inclusive,
    )
    try:
        return plan_restore.parse_target(ns)
    except UsageError as exc:  # worded for plan-restore's flags
        text = exc.message
        for flag in ("--time", "--lsn", "--xid", "--name"):
            text = text.replace(f"{flag} ", f"--target-{flag[2:]} ")
        raise UsageError(text, hint="see 'walship backup-fetch --help'") from None


def _plan(
    cfg: Config,
    backend: Backend,
    args: argparse.Namespace,
    target: planner.Target,
    name: str | None,
    restore_command: str,
) -> planner.Plan | None:
    """The plan among walship backups (only ``name`` if given); None: no repository
    (with --force; else its RepositoryNotFound)."""
    from ..restore import planner
    from ..restore.inventory import load_inventory
    from . import plan_restore

    timeline = plan_restore.parse_timeline(args.target_timeline)

    def once() -> planner.Plan:
        inv, _ = load_inventory(cfg, backend)
        inv.backups = [
            b for b in inv.backups if b.source == "walship" and (name is None or b.name == name)
        ]
        return planner.plan(
            inv,
            target,
            timeline=timeline,
            restore_command=restore_command,
            action=args.target_action,
        )

    try:
        plan = once()
    except RepositoryNotFound:
        if not args.force:
            raise  # names the location and the fix; no WAL: never consistent
        return None
    if (plan.verdict == planner.NEEDS_INDEX or plan.unindexed is not None) and not args.no_index:
        from ..index.build import update_index

        log.info("plan.index", "indexing archived segments for planning (walship index)")
        try:
            update_index(cfg, backend)
        except WalshipError as exc:
            log.warning("plan.index-failed", f"could not index: {exc.one_line()}")
        else:
            plan = once()
    return plan


def _forced_choice(cfg: Config, backend: Backend, target: planner.Target) -> Manifest:
    """LATEST without a plan (--force): the newest backup not already past the target."""
    from ..backup import catalog
    from ..restore.backups import iso_to_us

    manifests, _ = catalog.load(cfg, backend)
    if target.kind == "lsn":
        manifests = [m for m in manifests if m.stop_lsn <= int(target.value or 0)]
    elif target.kind == "time":
        manifests = [
            m for m in manifests if (iso_to_us(m.stop_time) or 0) <= int(target.value or 0)
        ]
    if not manifests:
        raise UsageError(
            f"no complete walship backup in {backend.url} ends before {target.describe()}",
            hint="`walship backup-list` shows the backups",
        )
    return manifests[-1]


def _settings(
    args: argparse.Namespace, target: planner.Target, plan: planner.Plan | None, command: str
) -> dict[str, str]:
    from ..pg import recovery

    if plan is not None and plan.reachable:
        return plan.settings
    from ..restore import planner

    v = target.value
    text = (
        planner.format_time(v)
        if target.kind == "time" and isinstance(v, int)
        else format_lsn(v)
        if target.kind == "lsn" and isinstance(v, int)
        else None
        if v is None
        else str(v)
    )
    return recovery.settings(
        target.kind,
        text,
        restore_command=command,
        timeline=str(args.target_timeline),
        inclusive=target.inclusive,
        action=args.target_action,
    )


def _progress() -> Callable[[int, int], None] | None:
    """A progress line on a terminal (stderr), nothing otherwise."""
    if not sys.stderr.isatty() or not log.enabled("info"):
        return None
    started = time.monotonic()
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-3)
        eta = (total - done) / rate if rate > 0 else 0.0
        pct = 100.0 * done / total if total else 100.0
        sys.stderr.write(
            f"\rbackup-fetch: {done / 1e6:,.0f} of {total / 1e6:,.0f} MB ({pct:.0f}%), "
            f"{rate / 1e6:.1f} MB/s, ETA {eta:.0f} s   "
        )
        sys.stderr.flush()

    return show


def run(args: argparse.Namespace, cfg: Config) -> int:
    from ..backup import catalog
    from ..backup import fetch as restore
    from ..pg import recovery
    from . import plan_restore

    latest = args.name.upper() == "LATEST"
    if not latest and not NAME_RE.match(args.name):
        raise UsageError(
            f"{args.name!r} is not a walship backup name (like 20261202T003000Z) or LATEST",
            hint="`walship backup-list` shows the names",
        )
    if args.workers < 0:
        raise UsageError("--workers must be 0 (the number of cores) or more")
    target = _target(args)
    mapping = restore.parse_tablespace_map(args.tablespace_map)
    root = os.path.abspath(args.dir)
    restore.check_target(root)  # before any request: the most common mistake
    if os.geteuid() == 0:
        log.warning(
            "backup-fetch.root",
            "running as root: the restored files will belong to root, and PostgreSQL "
            "refuses a data directory it does not own; run as the server's user "
            "(runuser -u postgres -- walship ...) or chown -R the directory afterwards",
        )
    command, omitted = plan_restore.restore_command_and_omitted(cfg, getattr(args, "repo", None))
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        manifest = None if latest else catalog.find(cfg, backend, args.name)
        plan = _plan(cfg, backend, args, target, None if latest else args.name, command)
        if plan is None:
            log.warning(
                "backup-fetch.forced", "no WAL archive to plan with; restoring anyway (--force)"
            )
        else:
            _in_own_words(plan)
            if plan.reachable or args.force:  # else the error below is the one message
                sys.stdout.write(f"plan: {plan.verdict}: {plan.reason}\n")
                if plan.caution:
                    sys.stdout.write(f"plan: caution: {plan.caution}\n")
                sys.stdout.flush()
            if not plan.reachable:
                if not args.force:
                    hint = plan.hint or "`walship plan-restore` explains; --force restores anyway"
                    log.error(
                        "backup-fetch.unreachable",
                        f"{target.describe()} is not reachable: {plan.reason}; nothing was "
                        f"written; {hint}",
                        verdict=plan.verdict,
                        exit=plan.exit_code,
                    )
                    return plan.exit_code
                log.warning(
                    "backup-fetch.forced",
                    f"{target.describe()} is not reachable ({plan.verdict}); restoring anyway "
                    "(--force)",
                )
        if manifest is None:
            if plan is not None and plan.reachable and plan.backup is not None:
                manifest = catalog.read_manifest(cfg, backend, plan.backup.name)
            elif target.kind in ("time", "lsn"):
                manifest = _forced_choice(cfg, backend, target)
            else:
                manifest = catalog.find(cfg, backend, "LATEST")
        settings = _settings(args, target, plan, command)
        if args.standby and args.target_timeline.strip().lower() == "latest":
            # a standby follows the primary onto the timelines it creates later: the plan's
            # explicit number (today's latest) would stop it at the next promotion
            settings["recovery_target_timeline"] = "'latest'"
        if omitted:
            log.warning(
                "backup-fetch.secrets",
                f"{', '.join(omitted)} not written into restore_command (secrets stay out of "
                "postgresql.auto.conf): put them into the config file or the server's "
                "environment",
            )

        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        comment = f"recovery settings written by walship backup-fetch ({manifest.name}, {when})"

        def finish(directory: str) -> None:
            block = recovery.auto_conf_block(settings, comment=comment)
            restore.append_text(os.path.join(directory, recovery.AUTO_CONF), "\n" + block)
            signal = os.path.join(directory, recovery.signal_file(args.standby))
            restore.append_text(signal, "")

        job = restore.Restore(
            cfg,
            backend,
            manifest,
            root,
            tablespaces=mapping,
            workers=args.workers or cfg.backup_workers,
            progress=_progress(),
        )
        result = job.run(finish=finish)
    finally:
        backend.close()
    if sys.stderr.isatty() and log.enabled("info"):
        sys.stderr.write("\n")
    _report(result, manifest, settings, args)
    return 0


def _in_own_words(plan: planner.Plan) -> None:
    """The planner's reason and hint in backup-fetch's terms.

    The planner speaks for plan-restore: its hints name plan-restore's options
    (``--latest``, ``--timeline N``), and with no backup at all it suggests
    pg_basebackup, whose backups backup-fetch cannot restore (it plans with
    walship's own backups only)."""
    if plan.reachable:
        return
    if plan.backup is None and plan.reason == "no base backup in the repository":
        plan.reason = "no walship base backup in the repository"
        plan.hint = (
            "take one with `walship backup-push` (backup-fetch restores walship's own "
            "backups; `walship backup-list` lists them)"
        )
        return
    if plan.hint:
        hint = plan.hint.replace("or --latest to replay", "or no --target-* option to replay")
        plan.hint = re.sub(r"--timeline\b", "--target-timeline", hint)


def _report(
    result: Result, manifest: Manifest, settings: dict[str, str], args: argparse.Namespace
) -> None:
    """The result, on stdout only (no INFO line repeating it on stderr)."""
    from ..backup.fetch import start_instructions

    out = sys.stdout
    out.write(
        f"restored backup {result.name} into {result.root} ({result.files} files, "
        f"{result.bytes / 2**20:,.1f} MiB, {result.seconds:.1f} s)\n"
    )
    for oid, where in sorted(result.tablespaces.items()):
        out.write(f"  tablespace {oid}: {where}\n")
    signal = "standby.signal" if args.standby else "recovery.signal"
    shown = {k: v for k, v in settings.items() if v != "''"}
    out.write(f"recovery settings in postgresql.auto.conf, and {signal}:\n")
    for k, v in shown.items():
        out.write(f"  {k} = {v}\n")
    for line in start_instructions(manifest, result.root):
        out.write(line + "\n")
