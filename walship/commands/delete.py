"""``walship delete``: apply the retention policy (docs/retention.md); a dry run by default."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from .. import log
from ..backup import retention
from ..errors import ConfigError
from ..pg import format_lsn
from ..restore.planner import format_time
from ..restore.removed import STATE_KEY
from ..storage.registry import open_backend

if TYPE_CHECKING:
    import argparse

    from ..config import Config


def configure(parser: argparse.ArgumentParser) -> None:
    policy = parser.add_argument_group(
        "policy (replaces retention_retain / retention_window of the configuration)"
    )
    policy.add_argument(
        "--retain", type=int, metavar="N", help="keep the newest N complete backups"
    )
    policy.add_argument(
        "--window",
        metavar="DURATION",
        help="keep what restores to any moment of the last DURATION (7d, 36h): the backups "
        "ending inside it and the newest one ending before it",
    )
    policy.add_argument(
        "--before", metavar="TIME|NAME", help="delete the backups that ended before TIME or NAME"
    )
    policy.add_argument(
        "--wal-window",
        metavar="DURATION",
        help="point-in-time recovery only inside this (shorter) window: older kept backups "
        "keep just the WAL that makes them consistent",
    )
    policy.add_argument(
        "--garbage",
        action="store_true",
        help="also delete leftovers of interrupted backups older than retention_garbage_age",
    )
    parser.add_argument("--confirm", action="store_true", help="really delete (default: a dry run)")
    parser.add_argument("--json", action="store_true", help="print the plan (and result) as JSON")


def policy_from(args: argparse.Namespace, cfg: Config) -> retention.Policy:
    """Flags, else the retention_* settings."""
    flags = args.retain is not None or args.window is not None or args.before is not None
    retain: int | None
    window_text: str | None
    if flags:
        retain, window_text, before, source = args.retain, args.window, args.before, "flags"
    else:
        retain = cfg.retention_retain or None
        window_text, before, source = cfg.retention_window, None, "settings"
    wal_text = args.wal_window if args.wal_window is not None else cfg.retention_wal_window
    window = _duration(window_text, "--window" if flags else "retention_window")
    wal_window = _duration(
        wal_text, "--wal-window" if args.wal_window is not None else "retention_wal_window"
    )
    age = _duration(cfg.retention_garbage_age, "retention_garbage_age")
    if age is None or age < retention.MIN_GARBAGE_AGE:
        raise ConfigError(
            f"retention_garbage_age {cfg.retention_garbage_age!r} is too short",
            hint="at least 1h, and above the longest backup-push: younger leftovers may "
            "be a backup in progress",
        )
    return retention.Policy(
        retain=retain,
        window=window,
        before=before,
        wal_window=wal_window,
        garbage=bool(args.garbage or cfg.retention_garbage),
        garbage_age=age,
        source=source,
    )


def _duration(text: str | None, what: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        return retention.parse_duration(text, what)
    except retention.PolicyError as exc:
        if what.startswith("--"):
            raise
        raise ConfigError(exc.message, hint=exc.hint) from None


def run(args: argparse.Namespace, cfg: Config) -> int:
    policy = policy_from(args, cfg)
    backend = open_backend(cfg.require("repo"), cfg)
    try:
        started = time.monotonic()
        # --confirm counts the index entries while deleting them (one listing, not two)
        plan = retention.make_plan(cfg, backend, policy, count_index=not args.confirm)
        progress: retention.Progress | None = None
        if plan.broken:
            _print(args, plan, None, time.monotonic() - started)
            raise retention.Refused(retention.refusal_text(plan.broken))
        if args.confirm:
            progress = retention.execute(cfg, backend, plan)
            plan.index_entries = progress.index_entries
        _print(args, plan, progress, time.monotonic() - started)
    finally:
        backend.close()
    if progress is not None:
        log.info(
            "delete.done",
            f"deleted {progress.objects} objects ({len(plan.selection.drop)} backups)",
            requests=progress.requests,
        )
    return 0


def _print(
    args: argparse.Namespace,
    plan: retention.Plan,
    progress: retention.Progress | None,
    seconds: float,
) -> None:
    if args.json:
        json.dump(plan_json(plan, progress, seconds), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(plan_text(plan, progress))
    sys.stdout.flush()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(us: int | None) -> str:
    return format_time(us) or "unknown time"


def _point(p: retention.Point | None) -> str:
    if p is None:
        return "not restorable"
    return f"{format_lsn(p.lsn)} ({_when(p.time)}, backup {p.backup})"


def plan_text(plan: retention.Plan, progress: retention.Progress | None) -> str:
    sel = plan.selection
    out: list[str] = []
    head = "deleted" if progress is not None else "dry run: nothing deleted (add --confirm)"
    out.append(f"walship delete: {head}")
    out.append(f"repository: {plan.repo.url}")
    out.append(f"policy: {plan.policy.describe()} (from {plan.policy.source})")
    out.append(
        f"backups: {len(sel.keep) + len(sel.drop)} complete, {len(sel.keep)} kept, "
        f"{len(sel.drop)} {'deleted' if progress else 'to delete'}"
    )
    for c in sorted([*sel.keep, *sel.drop], key=retention.age_order):
        action = "delete" if c in sel.drop else "keep  "
        b = c.backup
        out.append(
            f"  {action} {c.name}  [{c.kind}]  ended {_when(c.when)}  "
            f"{format_lsn(b.start_lsn)}..{format_lsn(b.stop_lsn)} timeline {b.stop_tli}  "
            f"{_size(c.stored_size)}: {sel.why.get(c.name, '')}"
        )
    for g in plan.garbage:
        out.append(
            f"  {'delete' if g.action == 'delete' else 'keep  '} leftovers {g.name}: {g.keys} "
            f"objects, {_size(g.size)}: {g.why}"
        )
    out.append(
        f"WAL: {plan.delete_segments} segments ({_size(plan.delete_segment_bytes)}) and "
        f"{len(plan.delete_partials)} .partial files to delete, {plan.keep_segments} segments "
        f"({_size(plan.keep_segment_bytes)}) kept; history files are never deleted"
    )
    out.append(f"index: {plan.index_entries} loose entries of deleted WAL")
    tlis = sorted(set(plan.before) | set(plan.after))
    if tlis:
        out.append("oldest restorable point per timeline (before -> after):")
        for tli in tlis:
            out.append(
                f"  timeline {tli}: {_point(plan.before.get(tli))} -> {_point(plan.after.get(tli))}"
            )
    for name in sorted(sel.consistency_only):
        c = next(k for k in sel.keep if k.name == name)
        out.append(
            f"  {name}: restorable to its consistency point {format_lsn(c.backup.stop_lsn)} only"
        )
    for check in plan.checks:
        mark = "ok" if check.verdict == "reachable" else check.verdict
        out.append(
            f"planner: timeline {check.timeline} from {check.backup} to "
            f"{'consistency' if check.target == 'immediate' else 'the end of the WAL'}: {mark}"
            + ("" if check.verdict == "reachable" else f" ({check.reason}; before: {check.before})")
        )
    out.extend(f"note: {n}" for n in plan.notes)
    total = f"{plan.object_count()} objects, {_size(plan.byte_count())}"
    if progress is not None:
        out.append(f"deleted: {progress.objects} objects in {progress.requests} delete calls")
        if progress.recorded:
            out.append(
                f"recorded: {progress.recorded} range(s) of WAL removed on purpose in "
                f"{STATE_KEY} (walship verify reports them as info, not as gaps)"
            )
    else:
        out.append(f"would delete: {total}")
    return "\n".join(out) + "\n"


def _point_json(p: retention.Point | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"backup": p.backup, "lsn": format_lsn(p.lsn), "time": format_time(p.time)}


def plan_json(
    plan: retention.Plan, progress: retention.Progress | None, seconds: float
) -> dict[str, Any]:
    sel = plan.selection
    backups = []
    for c in sorted([*sel.keep, *sel.drop], key=retention.age_order):
        b = c.backup
        backups.append(
            {
                "name": c.name,
                "source": c.kind,
                "action": "delete" if c in sel.drop else "keep",
                "why": sel.why.get(c.name, ""),
                "restorable": "consistency"
                if c.name in sel.consistency_only
                else ("pitr" if c in sel.keep else None),
                "start_lsn": format_lsn(b.start_lsn),
                "stop_lsn": format_lsn(b.stop_lsn),
                "timeline": b.stop_tli,
                "stop_time": format_time(c.when),
                "stored_size": c.stored_size,
                "backup_files": [k.rsplit("/", 1)[-1] for k in c.backup_files],
            }
        )
    tlis = sorted(set(plan.before) | set(plan.after))
    doc: dict[str, Any] = {
        "dry_run": progress is None,
        "repository": plan.repo.url,
        "policy": {
            "retain": plan.policy.retain,
            "window": None
            if plan.policy.window is None
            else retention.format_duration(plan.policy.window),
            "before": plan.policy.before,
            "wal_window": None
            if plan.policy.wal_window is None
            else retention.format_duration(plan.policy.wal_window),
            "garbage": plan.policy.garbage,
            "garbage_age": retention.format_duration(plan.policy.garbage_age),
            "source": plan.policy.source,
        },
        "backups": backups,
        "garbage": [
            {
                "name": g.name,
                "action": g.action,
                "why": g.why,
                "objects": g.keys,
                "size": g.size,
                "interrupted_delete": g.tombstone,
            }
            for g in plan.garbage
        ],
        "wal": {
            "delete_segments": plan.delete_segments,
            "delete_bytes": plan.delete_segment_bytes,
            "delete_partials": len(plan.delete_partials),
            "keep_segments": plan.keep_segments,
            "keep_bytes": plan.keep_segment_bytes,
        },
        "index_entries": plan.index_entries,
        "timelines": [
            {
                "timeline": tli,
                "before": _point_json(plan.before.get(tli)),
                "after": _point_json(plan.after.get(tli)),
            }
            for tli in tlis
        ],
        "checks": [
            {
                "timeline": c.timeline,
                "backup": c.backup,
                "target": c.target,
                "verdict": c.verdict,
                "reason": c.reason,
                "before": c.before,
            }
            for c in plan.checks
        ],
        "notes": plan.notes,
        "delete_objects": plan.object_count(),
        "delete_bytes": plan.byte_count(),
        "seconds": round(seconds, 3),
    }
    if progress is not None:
        doc["deleted"] = {
            "objects": progress.objects,
            "delete_calls": progress.requests,
            "backups": progress.backups,
            "leftovers": progress.garbage,
            "recorded_ranges": progress.recorded,
        }
    return doc
