"""Prometheus metrics: the status document as gauges (docs/operations.md "Metrics").

Cheap per scrape: the server part (pg_stat_archiver, one query) and the
``.ready`` backlog (one directory listing) are read each time; the repository
part (which lists ``wal/``) comes from a cached summary refreshed when older
than ``metrics_cache_max_age`` and exported with its age
(``walship_summary_age_seconds``).

:func:`families` is pure (a status document in, metric families out); it is
the one place that names the metrics, and :data:`METRICS` documents them (a
test checks both against docs/operations.md).
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from .. import __version__, log
from ..errors import ConfigError, WalshipError
from . import status

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..config import Config

#: name -> help. Every metric walship exports (all gauges).
METRICS: dict[str, str] = {
    "walship_up": "1 when walship produced these metrics (alert on absent(walship_up))",
    "walship_info": "walship version and repository, as labels (value 1)",
    "walship_metrics_timestamp_seconds": "when these metrics were computed (Unix time)",
    "walship_server_up": "1 when the PostgreSQL server answered the status query",
    "walship_server_in_recovery": "1 when the server is a standby or recovering",
    "walship_archive_archived_count": "pg_stat_archiver.archived_count",
    "walship_archive_failed_count": "pg_stat_archiver.failed_count",
    "walship_archive_last_archived_timestamp_seconds": "pg_stat_archiver.last_archived_time",
    "walship_archive_last_failed_timestamp_seconds": "pg_stat_archiver.last_failed_time "
    "(0: never failed)",
    "walship_archive_failing": "1 when the last archive failure is newer than the last success",
    "walship_archive_backlog_files": ".ready files waiting in pg_wal/archive_status",
    "walship_archive_backlog_oldest_age_seconds": "age of the oldest waiting .ready file "
    "(0: none waiting)",
    "walship_repository_up": "1 when the repository could be read at the last refresh (0: "
    "the values below are the last good summary's, see walship_summary_age_seconds)",
    "walship_summary_age_seconds": "age of the cached repository summary these values come from",
    "walship_repository_segments": "archived WAL segments",
    "walship_repository_newest_segment_timestamp_seconds": "when the newest segment was archived",
    "walship_repository_gaps": "gaps (runs of missing segments) in the archive, all timelines",
    "walship_repository_gaps_since_newest_backup": "gaps after the newest base backup's start",
    "walship_backups": "base backups (complete)",
    "walship_backups_incomplete": "incomplete backup prefixes (interrupted or in progress)",
    "walship_backup_newest_timestamp_seconds": "stop time of the newest base backup",
    "walship_backup_newest_age_seconds": "age of the newest base backup",
    "walship_backup_newest_raw_bytes": "raw size of the newest walship base backup",
    "walship_backup_newest_stored_bytes": "stored (compressed, encrypted) size of the newest one",
    "walship_backup_oldest_timestamp_seconds": "stop time of the oldest base backup",
    "walship_backups_stored_bytes": "stored size of all walship base backups",
    "walship_restorable": "1 when the planner can restore the latest state (--latest)",
    "walship_restorable_window_start_timestamp_seconds": "earliest restorable time "
    "(the oldest usable backup's consistency time)",
    "walship_restorable_window_end_timestamp_seconds": "latest restorable time (the last "
    "commit in the archive, from the segment index; 0 without an index)",
    "walship_check_success": "1 when the last walship check passed",
    "walship_check_timestamp_seconds": "when the last walship check ran",
    "walship_check_duration_seconds": "how long the last walship check took",
    "walship_drill_success": "1 when the last restore drill passed",
    "walship_drill_timestamp_seconds": "when the last restore drill ran",
    "walship_drill_duration_seconds": "how long the last drill took, end to end",
    "walship_drill_rto_seconds": "the last drill's recovery time (restore + replay)",
    "walship_drill_rpo_seconds": "the last drill's data age at its target",
}


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def values(doc: dict[str, Any]) -> dict[str, float]:
    """Metric name -> value, from a status document; absent values are left out."""
    out: dict[str, float] = {"walship_up": 1.0, "walship_info": 1.0}
    now = float(doc["timestamp"])
    out["walship_metrics_timestamp_seconds"] = now

    def put(name: str, value: Any) -> None:
        v = _num(value)
        if v is not None:
            out[name] = v

    srv = doc.get("server")
    if srv is not None:
        out["walship_server_up"] = 1.0 if srv.get("reachable") else 0.0
        if srv.get("reachable"):
            put("walship_server_in_recovery", srv.get("in_recovery"))
            arch = srv.get("archiver") or {}
            put("walship_archive_archived_count", arch.get("archived_count"))
            put("walship_archive_failed_count", arch.get("failed_count"))
            put(
                "walship_archive_last_archived_timestamp_seconds",
                arch.get("last_archived_timestamp"),
            )
            out["walship_archive_last_failed_timestamp_seconds"] = (
                _num(arch.get("last_failed_timestamp")) or 0.0
            )
            put("walship_archive_failing", arch.get("failing"))
    backlog = doc.get("backlog")
    if backlog is not None:
        put("walship_archive_backlog_files", backlog.get("ready"))
        out["walship_archive_backlog_oldest_age_seconds"] = (
            _num(backlog.get("oldest_age_seconds")) or 0.0
        )
    repo = doc.get("repository")
    out["walship_repository_up"] = 0.0 if repo is None or doc.get("repository_error") else 1.0
    if repo is not None:
        summarized = _num(repo.get("summarized_timestamp"))
        if summarized is not None:
            out["walship_summary_age_seconds"] = max(0.0, now - summarized)
        put("walship_repository_segments", repo.get("segments"))
        put(
            "walship_repository_newest_segment_timestamp_seconds",
            repo.get("newest_segment_timestamp"),
        )
        put("walship_repository_gaps", repo.get("gaps"))
        put("walship_repository_gaps_since_newest_backup", repo.get("gaps_since_newest_backup"))
        backups = repo.get("backups") or {}
        put("walship_backups", backups.get("count"))
        put("walship_backups_incomplete", backups.get("incomplete"))
        put("walship_backups_stored_bytes", backups.get("stored_size_total"))
        newest = backups.get("newest")
        if newest is not None:
            stop = _num(newest.get("stop_timestamp"))
            put("walship_backup_newest_timestamp_seconds", stop)
            if stop is not None:
                out["walship_backup_newest_age_seconds"] = max(0.0, now - stop)
            put("walship_backup_newest_raw_bytes", newest.get("raw_size"))
            put("walship_backup_newest_stored_bytes", newest.get("stored_size"))
        oldest = backups.get("oldest")
        if oldest is not None:
            put("walship_backup_oldest_timestamp_seconds", oldest.get("stop_timestamp"))
        window = repo.get("window") or {}
        put("walship_restorable", window.get("restorable"))
        put("walship_restorable_window_start_timestamp_seconds", window.get("earliest_timestamp"))
        out["walship_restorable_window_end_timestamp_seconds"] = (
            _num(window.get("latest_timestamp")) or 0.0
        )
    check = doc.get("last_check")
    if check is not None:
        put("walship_check_success", check.get("ok"))
        put("walship_check_timestamp_seconds", check.get("timestamp"))
        put("walship_check_duration_seconds", check.get("duration_seconds"))
    drill = doc.get("last_drill")
    if drill is not None:
        put("walship_drill_success", drill.get("ok"))
        put("walship_drill_timestamp_seconds", drill.get("timestamp"))
        put("walship_drill_duration_seconds", drill.get("duration_seconds"))
        put("walship_drill_rto_seconds", drill.get("rto_seconds"))
        put("walship_drill_rpo_seconds", drill.get("rpo_seconds"))
    return out


def families(doc: dict[str, Any]) -> Iterator[Any]:
    """prometheus_client metric families for a status document."""
    from prometheus_client.core import GaugeMetricFamily

    repo = doc.get("repository") or {}
    for name, value in values(doc).items():
        if name == "walship_info":
            fam = GaugeMetricFamily(name, METRICS[name], labels=["version", "repository"])
            fam.add_metric([str(doc.get("version", __version__)), str(repo.get("url", ""))], 1.0)
        else:
            fam = GaugeMetricFamily(name, METRICS[name], value=value)
        yield fam


# --- the cached repository summary --------------------------------------------------------


def cache_path(cfg: Config) -> str:
    if cfg.metrics_cache:
        return str(cfg.metrics_cache)
    from ..archive.lookahead import tag_of

    return os.path.join(os.path.expanduser("~"), ".cache", "walship", f"summary-{tag_of(cfg)}.json")


def _read_cache(path: str, repo: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("repo") != repo or doc.get("v") != 1:
        return None
    return doc


def _write_cache(path: str, doc: dict[str, Any]) -> None:
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("metrics.cache", f"cannot write the summary cache {path}: {exc.strerror}")


def repository_parts(cfg: Config, *, now: float, force: bool = False) -> dict[str, Any]:
    """``repository``, ``repository_error``, ``last_check``, ``last_drill``: cached."""
    from ..storage.registry import open_backend

    repo = str(cfg.require("repo"))
    path = cache_path(cfg)
    cached = None if force else _read_cache(path, repo)
    if cached is not None and now - float(cached.get("cached_at", 0)) <= cfg.metrics_cache_max_age:
        return cached
    doc: dict[str, Any] = {"v": 1, "repo": repo, "cached_at": now}
    try:
        backend = open_backend(repo, cfg)
        try:
            doc["repository"] = status.repository_summary(cfg, backend, now=now)
            doc["repository_error"] = None
            doc["last_check"], doc["last_drill"] = status.stored_results(cfg, backend)
        finally:
            backend.close()
    except WalshipError as exc:
        doc.update(
            repository=None, repository_error=exc.one_line(), last_check=None, last_drill=None
        )
        if cached is not None:  # keep serving the last good summary (its age shows it)
            cached["repository_error"] = exc.one_line()
            return cached
    _write_cache(path, doc)
    return doc


def status_document(cfg: Config, pgdata: str | None, *, force: bool = False) -> dict[str, Any]:
    now = time.time()
    srv, reported = status.query_server(cfg)
    backlog = status.backlog_part(status.pgdata_of(cfg, pgdata, reported), now=now)
    parts = repository_parts(cfg, now=now, force=force)
    return status.document(
        server=srv,
        backlog=backlog,
        repository=parts.get("repository"),
        repository_error=parts.get("repository_error"),
        last_check=parts.get("last_check"),
        last_drill=parts.get("last_drill"),
        now=now,
    )


class Collector:
    """A prometheus_client collector computing the document at each scrape."""

    def __init__(self, cfg: Config, pgdata: str | None) -> None:
        self.cfg = cfg
        self.pgdata = pgdata

    def collect(self) -> Iterator[Any]:
        try:
            doc = status_document(self.cfg, self.pgdata)
        except Exception as exc:  # a scrape must answer; walship_up says it failed
            from prometheus_client.core import GaugeMetricFamily

            log.error("metrics.failed", f"cannot compute the metrics: {exc}")
            yield GaugeMetricFamily("walship_up", METRICS["walship_up"], value=0.0)
            return
        yield from families(doc)


def registry(cfg: Config, pgdata: str | None) -> Any:
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        raise ConfigError(
            "walship metrics needs prometheus_client, which is not installed",
            hint="install walship[metrics] (pip install 'walship[metrics]')",
        ) from None
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(cfg, pgdata))
    return reg


def write_textfile(cfg: Config, pgdata: str | None, path: str) -> None:
    """Atomically (temp file + rename in the same directory) write the metrics."""
    reg = registry(cfg, pgdata)
    from prometheus_client import write_to_textfile

    try:
        write_to_textfile(path, reg)
    except OSError as exc:
        raise WalshipError(
            f"cannot write the metrics file {path}: {exc.strerror}",
            hint="check that the directory exists and is writable by this user",
        ) from None


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR`` as ``host:port``, ``:port`` or ``port`` (host default 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"--listen {text!r} is not an address", hint="use HOST:PORT, e.g. 127.0.0.1:9187"
        ) from None
    return host, number


def serve(cfg: Config, pgdata: str | None, listen: str, *, ready: Any = None) -> None:
    """Serve /metrics on ``listen`` until interrupted."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import make_wsgi_app

    host, port = parse_listen(listen)
    app = make_wsgi_app(registry(cfg, pgdata))

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug("metrics.request", format % args)

    try:
        server = make_server(host, port, app, handler_class=_Quiet)
    except OSError as exc:
        raise WalshipError(
            f"cannot listen on {host}:{port}: {exc.strerror}",
            hint="choose another --listen address",
        ) from None
    log.info("metrics.listen", f"serving metrics on http://{host}:{server.server_port}/metrics")
    if ready is not None:
        ready(server.server_port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
