"""``walship status``: what an operator and a monitoring system need, as one document.

The document (``SCHEMA`` = 1, docs/operations.md "Status schema") has four parts:

* ``server``: from the running server (pg_stat_archiver, pg_is_in_recovery),
  ``null`` when no server answers (status works from a repository alone);
* ``backlog``: the ``.ready`` files waiting in ``pg_wal/archive_status`` and
  the oldest one's age (walship/archive/lookahead.py, as ``walship
  archive-status``), ``null`` when the data directory is not known or readable;
* ``repository``: per timeline the archived ranges and gaps, the newest
  segment and when it was archived, backups (count, newest, oldest, sizes), the
  restorable window (the planner's answer for ``latest``, times from the
  segment index);
* ``last_check`` and ``last_drill``: the results stored in the repository
  (walship/ops/records.py).

:func:`summarize` (the repository part) and :func:`server_part` are pure;
:func:`collect` does the I/O.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from .. import __version__, log
from ..archive import lookahead
from ..errors import WalshipError
from ..manifest import Manifest
from ..pg import format_lsn, parse_lsn, segment_file_name, segno_of_lsn
from ..restore import planner
from ..restore.backups import Backup
from . import records

if TYPE_CHECKING:
    from ..config import Config
    from ..restore.inventory import Listing
    from ..restore.planner import Inventory
    from ..storage.base import Backend

SCHEMA = 1


def iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def us_to_s(us: int | None) -> float | None:
    return None if us is None else us / 1e6


def parse_iso(text: str | None) -> float | None:
    """``2026-12-02T00:30:00Z`` (manifest times) -> seconds since the epoch."""
    if not text:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# --- the repository part (pure) --------------------------------------------------------


def _range(inv: Inventory, tli: int, first: int, last: int) -> dict[str, Any]:
    return {
        "first": segment_file_name(tli, first, inv.seg_size),
        "last": segment_file_name(tli, last, inv.seg_size),
        "segments": last - first + 1,
    }


def _backup_doc(b: Backup, m: Manifest | None) -> dict[str, Any]:
    stop = us_to_s(b.stop_time)
    if stop is None and m is not None:
        stop = parse_iso(m.stop_time)
    return {
        "name": m.name if m is not None else b.name,
        "source": "walship" if m is not None else b.source,
        "label": b.label,
        "timeline": b.start_tli,
        "start_lsn": format_lsn(b.start_lsn),
        "stop_lsn": format_lsn(b.stop_lsn),
        "stop_time": iso(stop),
        "stop_timestamp": stop,
        "raw_size": None if m is None else m.raw_size,
        "stored_size": None if m is None else m.stored_size,
    }


def backups_part(inv: Inventory, manifests: list[Manifest], incomplete: int) -> dict[str, Any]:
    """Backups as the planner sees them (``.backup`` files and walship manifests), with
    sizes where a walship manifest describes them."""
    by_start = {(m.start_lsn, m.timeline): m for m in manifests}
    docs: dict[tuple[int, int], dict[str, Any]] = {}
    for b in inv.backups:
        docs[(b.start_lsn, b.start_tli)] = _backup_doc(b, by_start.get((b.start_lsn, b.start_tli)))
    for m in manifests:  # manifests the planner does not list (yet)
        if (m.start_lsn, m.timeline) not in docs:
            b = Backup(
                m.name,
                m.label,
                "walship",
                "",
                m.start_lsn,
                m.stop_lsn,
                m.checkpoint_lsn,
                m.timeline,
                m.stop_timeline,
                None,
                None,
            )
            docs[(m.start_lsn, m.timeline)] = _backup_doc(b, m)
    ordered = sorted(docs.values(), key=lambda d: (d["stop_timestamp"] or 0, d["stop_lsn"]))
    sizes_raw = [d["raw_size"] for d in ordered if d["raw_size"] is not None]
    sizes_stored = [d["stored_size"] for d in ordered if d["stored_size"] is not None]
    return {
        "count": len(ordered),
        "incomplete": incomplete,
        "newest": ordered[-1] if ordered else None,
        "oldest": ordered[0] if ordered else None,
        "raw_size_total": sum(sizes_raw),
        "stored_size_total": sum(sizes_stored),
        "list": ordered,
    }


def summarize(
    inv: Inventory,
    listing: Listing,
    manifests: list[Manifest],
    incomplete: int,
    *,
    now: float,
) -> dict[str, Any]:
    """The ``repository`` part of the status document, from one inventory."""
    infos = planner.overview(inv)
    newest_name: str | None = None
    newest_mtime: float | None = None
    seg_keys = {key for _, key in listing.segments}
    for info in listing.infos:
        if info.key in seg_keys and info.mtime is not None:
            if newest_mtime is None or info.mtime > newest_mtime:
                newest_mtime = info.mtime
    if listing.segments:
        newest_name = max((name for name, _ in listing.segments), key=lambda n: (int(n[:8], 16), n))
    timelines = []
    gap_count = 0
    for t in infos:
        if not t.ranges and t.tli not in inv.segments:
            if t.history == "none needed":
                continue
        gap_count += len(t.gaps)
        timelines.append(
            {
                "timeline": t.tli,
                "parent": t.parent,
                "switchpoint": None if t.switchpoint is None else format_lsn(t.switchpoint),
                "history": t.history,
                "ranges": [_range(inv, t.tli, a, b) for a, b in t.ranges],
                "gaps": [_range(inv, t.tli, a, b) for a, b in t.gaps],
                "removed_by_retention": [
                    {**_range(inv, t.tli, r.first, r.last), "when": r.when()} for r in t.removed
                ],
                "first_commit_time": iso(us_to_s(t.first_time)),
                "last_commit_time": iso(us_to_s(t.last_time)),
            }
        )
    backups = backups_part(inv, manifests, incomplete)
    latest_plan = planner.plan(inv, planner.Target("latest"))
    window: dict[str, Any] = {
        "restorable": latest_plan.reachable,
        "verdict": latest_plan.verdict,
        "reason": latest_plan.reason,
        "earliest_lsn": None,
        "earliest_time": None,
        "earliest_timestamp": None,
        "latest_lsn": None,
        "latest_time": None,
        "latest_timestamp": None,
        "indexed": inv.summaries is not None and bool(inv.summaries),
    }
    if latest_plan.reachable:
        if latest_plan.earliest is not None:
            lsn, t_us = latest_plan.earliest
            window["earliest_lsn"] = format_lsn(lsn)
            window["earliest_timestamp"] = us_to_s(t_us)
            window["earliest_time"] = iso(us_to_s(t_us))
        if latest_plan.latest is not None:
            lsn, t_us = latest_plan.latest
            window["latest_lsn"] = format_lsn(lsn)
            window["latest_timestamp"] = us_to_s(t_us)
            window["latest_time"] = iso(us_to_s(t_us))
    newest_backup = backups["newest"]
    gaps_since_backup = 0
    if newest_backup is not None:
        b_seg = segno_of_lsn(parse_lsn(newest_backup["start_lsn"]), inv.seg_size)
        for t in infos:
            gaps_since_backup += sum(1 for a, _b in t.gaps if a > b_seg)
    return {
        "url": inv.url,
        "system_identifier": None if inv.system_identifier is None else str(inv.system_identifier),
        "wal_segment_size": inv.seg_size,
        "segments": sum(len(s) for s in inv.segments.values()),
        "newest_segment": newest_name,
        "newest_segment_archived_at": iso(newest_mtime),
        "newest_segment_timestamp": newest_mtime,
        "gaps": gap_count,
        "gaps_since_newest_backup": gaps_since_backup,
        "timelines": timelines,
        "backups": backups,
        "window": window,
        "summarized_at": iso(now),
        "summarized_timestamp": now,
    }


# --- the server part ---------------------------------------------------------------------

ARCHIVER_SQL = (
    "SELECT pg_is_in_recovery(), archived_count, last_archived_wal, "
    "extract(epoch FROM last_archived_time)::float8, failed_count, last_failed_wal, "
    "extract(epoch FROM last_failed_time)::float8, extract(epoch FROM stats_reset)::float8, "
    "current_setting('server_version_num')::int FROM pg_stat_archiver"
)


def server_part(row: tuple[Any, ...]) -> dict[str, Any]:
    (recovery, archived, last_wal, last_t, failed, failed_wal, failed_t, reset, ver) = row[:9]
    sysid = row[9] if len(row) > 9 else None
    return {
        "reachable": True,
        "error": None,
        "in_recovery": bool(recovery),
        "system_identifier": sysid,
        "server_version_num": ver,
        "archiver": {
            "archived_count": archived,
            "last_archived_wal": last_wal,
            "last_archived_time": iso(last_t),
            "last_archived_timestamp": last_t,
            "failed_count": failed,
            "last_failed_wal": failed_wal,
            "last_failed_time": iso(failed_t),
            "last_failed_timestamp": failed_t,
            "stats_reset": iso(reset),
            # pg_stat_archiver: a failure newer than the last success means it is failing now
            "failing": failed_t is not None and (last_t is None or failed_t > last_t),
        },
    }


def unreachable(message: str) -> dict[str, Any]:
    return {"reachable": False, "error": message}


def query_server(cfg: Config) -> tuple[dict[str, Any], str | None]:
    """The server part and the data directory it reports (None when not allowed)."""
    from .. import pgsql

    try:
        conn = pgsql.connect(cfg, application="walship status")
    except WalshipError as exc:
        return unreachable(exc.one_line()), None
    try:
        with conn.cursor() as cur:
            cur.execute(ARCHIVER_SQL)
            row = tuple(cur.fetchone())
            # both need more than a plain role (pg_read_all_settings, pg_monitor): optional
            sysid = _optional(cur, "SELECT system_identifier::text FROM pg_control_system()")
            datadir = _optional(cur, "SELECT current_setting('data_directory')")
        return server_part((*row, sysid)), datadir
    except Exception as exc:  # psycopg errors: one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return unreachable(f"the server refused the status queries: {text}"), None
    finally:
        conn.close()


def _optional(cur: Any, sql: str) -> str | None:
    try:
        cur.execute(sql)
        got = cur.fetchone()
    except Exception:
        return None
    return None if got is None or got[0] is None else str(got[0])


def backlog_part(pgdata: str | None, *, now: float | None = None) -> dict[str, Any] | None:
    if not pgdata:
        return None
    status_dir = os.path.join(pgdata, "pg_wal", "archive_status")
    if not os.path.isdir(status_dir):
        return None
    try:
        b = lookahead.backlog(status_dir)
    except OSError:
        return None
    return {
        "pgdata": pgdata,
        "ready": b.ready,
        "oldest": b.oldest,
        "oldest_age_seconds": None if b.oldest_age is None else round(b.oldest_age, 1),
    }


# --- collecting ----------------------------------------------------------------------------


def repository_summary(
    cfg: Config, backend: Backend, *, now: float | None = None
) -> dict[str, Any]:
    """Inventory, catalog and the stored results: the ``repository`` part (I/O)."""
    from ..backup import catalog
    from ..restore.inventory import load_inventory

    now = time.time() if now is None else now
    inv, listing = load_inventory(cfg, backend)
    scan = catalog.scan(backend)
    manifests, errors = catalog.load(cfg, backend, scan.complete)
    for name, why in errors.items():
        log.warning("status.manifest", f"backup {name}: {why}")
    return summarize(inv, listing, manifests, len(scan.incomplete), now=now)


def stored_results(
    cfg: Config, backend: Backend
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    out: list[dict[str, Any] | None] = []
    for key in (records.CHECK_KEY, records.LAST_DRILL_KEY):
        try:
            out.append(records.read(cfg, backend, key))
        except WalshipError as exc:
            log.warning("status.record", f"{backend.url}/{key}: {exc.one_line()}")
            out.append(None)
    return out[0], out[1]


def pgdata_of(cfg: Config, given: str | None, reported: str | None) -> str | None:
    path = given or cfg.pgdata or reported
    return os.path.abspath(path) if path else None


def document(
    *,
    server: dict[str, Any] | None,
    backlog: dict[str, Any] | None,
    repository: dict[str, Any] | None,
    repository_error: str | None,
    last_check: dict[str, Any] | None,
    last_drill: dict[str, Any] | None,
    now: float,
) -> dict[str, Any]:
    return {
        "walship_status": SCHEMA,
        "version": __version__,
        "time": iso(now),
        "timestamp": now,
        "server": server,
        "backlog": backlog,
        "repository": repository,
        "repository_error": repository_error,
        "last_check": _brief(last_check),
        "last_drill": _brief(last_drill),
    }


def _brief(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored result without its long parts (the full one stays in the repository)."""
    if doc is None:
        return None
    return {k: v for k, v in doc.items() if k not in ("checks", "steps", "log_tail")}


def collect(cfg: Config, *, pgdata: str | None = None, server: bool = True) -> dict[str, Any]:
    """The whole status document (never raises for an unreachable server or repository)."""
    from ..storage.registry import open_backend

    now = time.time()
    srv: dict[str, Any] | None = None
    reported: str | None = None
    if server:
        srv, reported = query_server(cfg)
    backlog = backlog_part(pgdata_of(cfg, pgdata, reported), now=now)
    repo_doc: dict[str, Any] | None = None
    repo_error: str | None = None
    last_check = last_drill = None
    try:
        backend = open_backend(cfg.require("repo"), cfg)
        try:
            repo_doc = repository_summary(cfg, backend, now=now)
            last_check, last_drill = stored_results(cfg, backend)
        finally:
            backend.close()
    except WalshipError as exc:
        repo_error = exc.one_line()
    return document(
        server=srv,
        backlog=backlog,
        repository=repo_doc,
        repository_error=repo_error,
        last_check=last_check,
        last_drill=last_drill,
        now=now,
    )


# --- text ------------------------------------------------------------------------------------


def _age(seconds: float | None, now: float) -> str:
    if seconds is None:
        return "-"
    age = max(0.0, now - seconds)
    if age < 120:
        return f"{age:.0f}s ago"
    if age < 7200:
        return f"{age / 60:.0f}m ago"
    if age < 172800:
        return f"{age / 3600:.1f}h ago"
    return f"{age / 86400:.1f}d ago"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def text(doc: dict[str, Any]) -> str:
    now = float(doc["timestamp"])
    lines: list[str] = []
    srv = doc.get("server")
    if srv is None:
        lines.append("server:     not asked (--no-server)")
    elif not srv.get("reachable"):
        lines.append(f"server:     unreachable: {srv.get('error')}")
    else:
        a = srv["archiver"]
        role = "standby (in recovery)" if srv.get("in_recovery") else "primary"
        lines.append(f"server:     {role}, system {srv.get('system_identifier') or '?'}")
        lines.append(
            f"archiver:   last archived {a['last_archived_wal'] or '-'} "
            f"({_age(a['last_archived_timestamp'], now)}), {a['archived_count']} archived, "
            f"{a['failed_count']} failed"
            + (
                f", last failure {a['last_failed_wal']} ({_age(a['last_failed_timestamp'], now)})"
                if a["last_failed_wal"]
                else ""
            )
            + (
                "  ** FAILING: the last failure is newer than the last success **"
                if a["failing"]
                else ""
            )
        )
    b = doc.get("backlog")
    if b is None:
        lines.append("backlog:    unknown (pass --pgdata DIR or set pgdata)")
    else:
        oldest = "" if not b["ready"] else f", oldest {b['oldest']} ({b['oldest_age_seconds']}s)"
        lines.append(f"backlog:    {b['ready']} .ready file(s) waiting{oldest}")
    repo = doc.get("repository")
    if repo is None:
        lines.append(f"repository: unreadable: {doc.get('repository_error')}")
    else:
        lines.append(
            f"repository: {repo['url']}: {repo['segments']} segments, newest "
            f"{repo['newest_segment'] or '-'} "
            f"(archived {_age(repo['newest_segment_timestamp'], now)})"
        )
        for t in repo["timelines"]:
            ranges = ", ".join(f"{r['first']}..{r['last']}" for r in t["ranges"]) or "none"
            gaps = ", ".join(f"{g['first']}..{g['last']}" for g in t["gaps"])
            removed = ", ".join(
                f"{g['first']}..{g['last']}" for g in t.get("removed_by_retention", ())
            )
            lines.append(
                f"  timeline {t['timeline']}: {ranges}"
                + (f"  GAPS: {gaps}" if gaps else "")
                + (f"  (removed by retention: {removed})" if removed else "")
            )
        bk = repo["backups"]
        if bk["count"]:
            n, o = bk["newest"], bk["oldest"]
            sizes = (
                f", {_size(n['raw_size'])} raw, {_size(n['stored_size'])} stored"
                if n["raw_size"] is not None
                else ""
            )
            lines.append(
                f"backups:    {bk['count']}, newest {n['name']} ({_age(n['stop_timestamp'], now)}"
                f"{sizes}), oldest {o['name']} ({_age(o['stop_timestamp'], now)})"
                + (
                    f"; {_size(bk['stored_size_total'])} stored in all"
                    if bk["stored_size_total"]
                    else ""
                )
                + (f"; {bk['incomplete']} incomplete" if bk["incomplete"] else "")
            )
        else:
            lines.append("backups:    none")
        w = repo["window"]
        if w["restorable"]:
            lines.append(
                f"restorable: from {w['earliest_time'] or w['earliest_lsn']} to "
                f"{w['latest_time'] or '-'} (end of WAL {w['latest_lsn']})"
                + ("" if w["indexed"] else "; times need the segment index (walship index)")
            )
        else:
            lines.append(f"restorable: NO ({w['verdict']}): {w['reason']}")
    for label, key in (("last check", "last_check"), ("last drill", "last_drill")):
        r = doc.get(key)
        if r is None:
            lines.append(f"{label}: never")
        else:
            verdict = "passed" if r.get("ok") else f"FAILED: {r.get('reason') or ''}".rstrip(": ")
            lines.append(f"{label}: {verdict} ({_age(r.get('timestamp'), now)})")
    return "\n".join(lines) + "\n"
