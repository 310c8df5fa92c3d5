"""Text and JSON renderings of plans, archive overviews and verification results."""

from __future__ import annotations

from typing import Any

from ..pg import format_lsn
from ..pg.types import WalEvent
from .backups import Backup
from .planner import INF_LSN, Inventory, Plan, TimelineInfo, describe_event, format_time
from .verify import ERROR, INFO, Problem


def _lsn(lsn: int | None) -> str | None:
    if lsn is None:
        return None
    return "end" if lsn >= INF_LSN else format_lsn(lsn)


def backup_json(b: Backup | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {
        "name": b.name,
        "label": b.label,
        "source": b.source,
        "start_lsn": format_lsn(b.start_lsn),
        "checkpoint_lsn": format_lsn(b.checkpoint_lsn),
        "stop_lsn": format_lsn(b.stop_lsn),
        "start_timeline": b.start_tli,
        "stop_timeline": b.stop_tli,
        "start_time": format_time(b.start_time),
        "stop_time": format_time(b.stop_time),
    }


def event_json(ev: WalEvent | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    return {
        "kind": ev.kind,
        "lsn": format_lsn(ev.lsn),
        "end_lsn": format_lsn(ev.end_lsn),
        "xid": ev.xid,
        "time": format_time(ev.time),
        "name": ev.name,
    }


def plan_json(plan: Plan, inv: Inventory, *, walship: str = "walship") -> dict[str, Any]:
    """``walship``: the command prefix the plan was made with (executable, --config,
    --repo), the same as in its restore_command."""
    t = plan.target
    value: Any = t.value
    if t.kind == "time":
        value = format_time(t.value if isinstance(t.value, int) else None)
    elif t.kind == "lsn" and isinstance(t.value, int):
        value = format_lsn(t.value)
    stop = plan.stop
    return {
        "verdict": plan.verdict,
        "reachable": plan.reachable,
        "exit_code": plan.exit_code,
        "reason": plan.reason,
        "hint": plan.hint,
        "target": {"kind": t.kind, "value": value, "inclusive": t.inclusive},
        "timeline_request": plan.timeline_request,
        "target_timeline": plan.path.target_tli if plan.path else None,
        "timeline_path": [
            {"timeline": s.tli, "begin": format_lsn(s.begin), "end": _lsn(s.end)}
            for s in (plan.path.steps if plan.path else ())
        ],
        "backup": backup_json(plan.backup),
        "segments": [
            {
                "timeline": r.tli,
                "first": inv.seg_name(r.tli, r.first),
                "last": inv.seg_name(r.tli, r.last),
                "count": r.size(),
            }
            for r in plan.segments
        ],
        "segments_needed": plan.segment_count(),
        "missing_segment": plan.missing,
        "stop": None
        if stop is None
        else {
            "how": stop.how,
            "lsn": format_lsn(stop.lsn),
            "end_lsn": format_lsn(stop.end_lsn),
            "timeline": stop.tli,
            "event": event_json(stop.event),
        },
        "windows": [
            {
                "timeline": w.tli,
                "from_lsn": format_lsn(w.from_lsn),
                "to_lsn": _lsn(w.to_lsn),
                "first_commit_time": format_time(w.first_time),
                "last_commit_time": format_time(w.last_time),
            }
            for w in plan.windows
        ],
        "earliest": None
        if plan.earliest is None
        else {"lsn": format_lsn(plan.earliest[0]), "time": format_time(plan.earliest[1])},
        "latest": None
        if plan.latest is None
        else {"lsn": format_lsn(plan.latest[0]), "last_commit_time": format_time(plan.latest[1])},
        "settings": plan.settings,
        "backup_fetch": backup_fetch_line(plan, plan.backup, walship=walship)
        if plan.backup is not None and _fetchable(plan)
        else None,
        "notes": plan.notes,
        "caution": plan.caution,
        "unindexed_segment": plan.unindexed,
    }


def _target_setting(plan: Plan) -> str:
    t = plan.target
    if t.kind == "time" and isinstance(t.value, int):
        return f"recovery_target_time '{format_time(t.value)}'"
    if t.kind == "lsn" and isinstance(t.value, int):
        return f"recovery_target_lsn '{format_lsn(t.value)}'"
    if t.kind == "xid":
        return f"recovery_target_xid '{t.value}'"
    if t.kind == "name":
        return f"recovery_target_name '{t.value}'"
    if t.kind == "immediate":
        return "recovery_target 'immediate'"
    return "latest (no recovery target)"


def _fetchable(plan: Plan) -> bool:
    """A walship backup serves the plan: ``walship backup-fetch`` carries it out."""
    return plan.reachable and plan.backup is not None and plan.backup.source == "walship"


def backup_fetch_line(plan: Plan, b: Backup, *, walship: str = "walship") -> str:
    """The ``walship backup-fetch`` command that carries out a plan from a walship backup.

    ``walship`` is the (already shell-quoted) command prefix: the same executable,
    config file and repository as the plan's restore_command."""
    import shlex

    t = plan.target
    words = ["backup-fetch", b.name, "DIR"]
    if t.kind == "time" and isinstance(t.value, int):
        words += ["--target-time", format_time(t.value) or ""]
    elif t.kind == "lsn" and isinstance(t.value, int):
        words += ["--target-lsn", format_lsn(t.value)]
    elif t.kind in ("xid", "name"):
        words += [f"--target-{t.kind}", str(t.value)]
    elif t.kind == "immediate":
        words.append("--target-immediate")
    if t.kind in ("time", "lsn", "xid") and not t.inclusive:
        words += ["--target-inclusive", "off"]
    if plan.timeline_request != "latest":
        words += ["--target-timeline", plan.timeline_request]
    action = plan.settings.get("recovery_target_action", "'pause'").strip("'")
    if action != "pause":
        words += ["--target-action", action]
    return " ".join([walship, *(shlex.quote(w) for w in words)])


def plan_text(plan: Plan, inv: Inventory, *, walship: str = "walship") -> str:
    lines: list[str] = []
    head = f"restore to {_target_setting(plan)}: "
    if plan.reachable:
        head += "REACHABLE"
    else:
        head += f"NOT REACHABLE ({plan.verdict}, exit {plan.exit_code})"
    lines.append(head)
    if not plan.reachable:
        lines.append(f"  reason     {plan.reason}")
        if plan.hint:
            lines.append(f"  hint       {plan.hint}")
    b = plan.backup
    if b is not None:
        label = f', label "{b.label}"' if b.label else ""
        lines.append(f"  backup     {b.name} ({b.source}{label})")
        started = f" at {format_time(b.start_time)}" if b.start_time is not None else ""
        lines.append(
            f"             replay starts at {format_lsn(b.start_lsn)} on timeline "
            f"{b.start_tli}{started}"
        )
        stopped = f" ({format_time(b.stop_time)})" if b.stop_time is not None else ""
        lines.append(f"             consistent at {format_lsn(b.stop_lsn)}{stopped}")
    if plan.path is not None:
        lines.append(
            f"  timelines  {plan.path.describe()}  "
            f"(recovery_target_timeline = {plan.path.target_tli})"
        )
    if plan.segments:
        lines.append(f"  segments   {plan.segment_count()} needed, all archived")
        for r in plan.segments:
            first = inv.seg_name(r.tli, r.first)
            rng = first if r.first == r.last else f"{first}..{inv.seg_name(r.tli, r.last)}"
            lines.append(f"             timeline {r.tli}: {rng} ({r.size()})")
        if plan.path is not None and plan.path.target_tli > 1:
            lines.append(f"             and {plan.path.target_tli:08X}.history")
    if plan.missing:
        lines.append(f"  missing    {plan.missing}")
    stop = plan.stop
    if stop is not None:
        on = f" on timeline {stop.tli}" if stop.tli is not None else ""
        if stop.how == "consistency":
            text = f"stops when consistent, at {format_lsn(stop.lsn)}{on}"
        elif stop.how == "end":
            text = f"replays to the end of the archived WAL, {format_lsn(stop.lsn)}{on}"
        elif stop.event is None:
            text = f"stops {stop.how} the first record at or after {format_lsn(stop.lsn)}{on}"
        else:
            text = f"stops {stop.how} the {describe_event(stop.event)}{on}"
        lines.append(f"  target     {text}")
    if plan.caution:
        lines.append(f"  caution    {plan.caution}")
    for i, w in enumerate(plan.windows):
        span = ""
        if w.first_time is not None:
            span = f", commits {format_time(w.first_time)} .. {format_time(w.last_time)}"
        lines.append(
            f"  {'window' if i == 0 else '':<10} timeline {w.tli}: "
            f"{format_lsn(w.from_lsn)} .. {_lsn(w.to_lsn)}{span}"
        )
    if plan.earliest is not None:
        when = f" ({format_time(plan.earliest[1])})" if plan.earliest[1] is not None else ""
        lines.append(f"  earliest   consistent at {format_lsn(plan.earliest[0])}{when}")
    if plan.latest is not None:
        when = f", last commit {format_time(plan.latest[1])}" if plan.latest[1] is not None else ""
        lines.append(f"  latest     archive ends at {format_lsn(plan.latest[0])}{when}")
    for note in plan.notes:
        lines.append(f"  note       {note}")
    if b is not None and _fetchable(plan):
        # one instruction: backup-fetch restores and configures; the settings are shown
        # for the record, not to be added by hand
        lines.append(f"  restore    {backup_fetch_line(plan, b, walship=walship)}")
        lines.append(
            "             (DIR: an empty or missing directory; run it as the server's OS user; "
            "then start the server)"
        )
        if plan.settings:
            lines.append("")
            lines.append(
                "what backup-fetch will write (postgresql.auto.conf of the restored copy, "
                "and recovery.signal; nothing to add by hand):"
            )
            for key, value in plan.settings.items():
                lines.append(f"{key} = {value}")
    elif plan.settings:
        lines.append("")
        lines.append(
            "recovery settings (add to postgresql.auto.conf of the restored backup, then "
            "touch recovery.signal):"
        )
        for key, value in plan.settings.items():
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


# --- wal-show ----------------------------------------------------------------------


def _ranges(inv: Inventory, tli: int, runs: list[tuple[int, int]]) -> list[dict[str, Any]]:
    return [
        {
            "first": inv.seg_name(tli, a),
            "last": inv.seg_name(tli, b),
            "count": b - a + 1,
        }
        for a, b in runs
    ]


def overview_json(inv: Inventory, infos: list[TimelineInfo]) -> dict[str, Any]:
    return {
        "repository": inv.url,
        "system_identifier": None if inv.system_identifier is None else str(inv.system_identifier),
        "wal_segment_size": inv.seg_size,
        "indexed": inv.summaries is not None,
        "timelines": [
            {
                "timeline": t.tli,
                "parent": t.parent,
                "switchpoint": None if t.switchpoint is None else format_lsn(t.switchpoint),
                "reason": t.reason,
                "history": t.history,
                "children": t.children,
                "segments": sum(b - a + 1 for a, b in t.ranges),
                "ranges": _ranges(inv, t.tli, t.ranges),
                "gaps": _ranges(inv, t.tli, t.gaps),
                "removed_by_retention": [
                    {**_ranges(inv, t.tli, [(r.first, r.last)])[0], "when": r.when()}
                    for r in t.removed
                ],
                "partials": [inv.seg_name(t.tli, s) + ".partial" for s in t.partials],
                "first_commit_time": format_time(t.first_time),
                "last_commit_time": format_time(t.last_time),
                "restore_points": [
                    {"name": n, "lsn": format_lsn(lsn), "time": format_time(tm)}
                    for n, lsn, tm in t.restore_points
                ],
            }
            for t in infos
        ],
        "backups": [backup_json(b) for b in sorted(inv.backups, key=lambda b: b.start_lsn)],
        "unusable_backups": inv.backup_errors,
    }


def _span(inv: Inventory, tli: int, first: int, last: int) -> str:
    """``NAME`` or ``FIRST..LAST``: segments ``first``..``last`` of ``tli``."""
    name = inv.seg_name(tli, first)
    return name if first == last else f"{name}..{inv.seg_name(tli, last)}"


def overview_text(inv: Inventory, infos: list[TimelineInfo]) -> str:
    lines = [f"repository {inv.url}"]
    if inv.system_identifier is not None:
        lines.append(
            f"  system identifier {inv.system_identifier}, WAL segment size "
            f"{inv.seg_size // (1 << 20)} MiB"
        )
    if inv.summaries is None:
        lines.append("  no segment index: times and restore points unknown (run walship index)")
    for t in infos:
        if t.parent is None:
            origin = "" if t.tli == 1 else " (parent unknown)"
        else:
            origin = f", from timeline {t.parent} at {format_lsn(t.switchpoint or 0)}"
            if t.reason:
                origin += f" ({t.reason})"
        lines.append(f"timeline {t.tli}{origin}")
        if t.history not in ("ok", "none needed"):
            lines.append(f"  history    {t.tli:08X}.history {t.history}")
        if t.children:
            lines.append(f"  children   {', '.join(str(c) for c in t.children)}")
        if not t.ranges:
            lines.append("  segments   none")
        for i, (a, b) in enumerate(t.ranges):
            lines.append(
                f"  {'segments' if i == 0 else '':<10} {_span(inv, t.tli, a, b)} ({b - a + 1})"
            )
        for a, b in t.gaps:
            lines.append(f"  gap        {_span(inv, t.tli, a, b)} ({b - a + 1} missing)")
        for r in t.removed:
            span = _span(inv, t.tli, r.first, r.last)
            lines.append(
                f"  removed    {span} ({r.last - r.first + 1}, by retention on {r.when()})"
            )
        for s in t.partials:
            lines.append(f"  partial    {inv.seg_name(t.tli, s)}.partial")
        if t.first_time is not None:
            lines.append(f"  commits    {format_time(t.first_time)} .. {format_time(t.last_time)}")
        for name, lsn, tm in t.restore_points:
            when = f" ({format_time(tm)})" if tm is not None else ""
            lines.append(f'  restore pt "{name}" at {format_lsn(lsn)}{when}')
    lines.append(f"backups ({len(inv.backups)})")
    for bk in sorted(inv.backups, key=lambda x: x.start_lsn):
        label = f' "{bk.label}"' if bk.label else ""
        when = f", {format_time(bk.stop_time)}" if bk.stop_time is not None else ""
        kind = " (walship backup)" if bk.source == "walship" else ""
        lines.append(
            f"  {bk.name}{kind}{label}: timeline {bk.start_tli}, {format_lsn(bk.start_lsn)} .. "
            f"{format_lsn(bk.stop_lsn)}{when}"
        )
    for key, why in sorted(inv.backup_errors.items()):
        lines.append(f"  {key.rsplit('/', 1)[-1]}: unusable: {why}")
    return "\n".join(lines) + "\n"


# --- verify ------------------------------------------------------------------------


def verify_json(
    problems: list[Problem], inv: Inventory, *, deep: bool, objects: int, raw_bytes: int
) -> dict[str, Any]:
    return {
        "ok": not any(p.severity == ERROR for p in problems),
        "repository": inv.url,
        "deep": deep,
        "objects_read": objects,
        "raw_bytes_read": raw_bytes,
        "timelines": inv.timelines(),
        "segments": sum(len(s) for s in inv.segments.values()),
        "backups": len(inv.backups),
        "problems": [
            {"severity": p.severity, "kind": p.kind, "message": p.message, "objects": p.objects}
            for p in problems
        ],
    }


def verify_text(
    problems: list[Problem], inv: Inventory, *, deep: bool, objects: int, raw_bytes: int
) -> str:
    errors = [p for p in problems if p.severity == ERROR]
    warnings = [p for p in problems if p.severity != ERROR]
    segs = sum(len(s) for s in inv.segments.values())
    lines = [
        f"verified {inv.url}: {segs} segments on {len(inv.timelines())} timeline(s), "
        f"{len(inv.backups)} backup(s)"
        + (f", {objects} objects re-read ({raw_bytes} raw bytes)" if deep else "")
    ]
    for p in errors:
        lines.append(f"ERROR   {p.message}")
    for p in warnings:
        label = "info   " if p.severity == INFO else "warning"
        lines.append(f"{label} {p.message}")
    lines.append("OK" if not errors else f"FAILED: {len(errors)} problem(s)")
    return "\n".join(lines) + "\n"
