"""retention/state.json: WAL walship delete removed on purpose is not a gap for verify,
and plan-restore explains targets inside it; every other gap is still an error."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
from retention_repo import DAY, HOUR, SEG, cfg, identity, keys, seg_key, segments, walship_backup

from walship.backup import retention
from walship.codec import objects
from walship.pg import format_lsn
from walship.restore import removed
from walship.storage.base import OVERWRITE
from walship.storage.local import LocalBackend
from walship.storage.memory import MemoryBackend

NOW = time.time()
US = 1_000_000


def _walship(repo: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}
    return subprocess.run(
        [sys.executable, "-m", "walship", "--config", os.devnull, "--repo", repo, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def windowed(tmp_path: Any) -> tuple[LocalBackend, str, list[str]]:
    """A local repository after a real `walship delete --window 30d --wal-window 1d
    --confirm`: segments 2, 3, 10, 11 and 20..40 stay; 1, 4..9, 12..19 went."""
    root = str(tmp_path / "repo")
    backend = LocalBackend(root)
    c = cfg(root)
    identity(backend)
    segments(c, backend, range(1, 41))
    names = [
        walship_backup(c, backend, s, NOW - age)
        for s, age in ((2, 10 * DAY), (10, 5 * DAY), (20, 2 * DAY), (30, HOUR))
    ]
    proc = _walship(root, "delete", "--window", "30d", "--wal-window", "1d", "--confirm")
    assert proc.returncode == 0, proc.stderr
    assert "recorded: 3 range(s) of WAL removed on purpose in retention/state.json" in proc.stdout
    present = sorted(int(k[-8:], 16) for k in keys(backend, "wal/") if len(k) == 45)
    assert present == [2, 3, 10, 11, *range(20, 41)]
    return backend, root, names


def test_verify_passes_after_a_wal_window_delete(windowed: Any) -> None:
    _backend, root, _names = windowed
    proc = _walship(root, "verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "removed by retention on" in proc.stdout
    assert "ERROR" not in proc.stdout
    doc = json.loads(_walship(root, "verify", "--json").stdout)
    assert doc["ok"] is True
    infos = [p for p in doc["problems"] if p["kind"] == "retention"]
    assert {p["severity"] for p in infos} == {"info"}
    # both stretches between the consistency-only backups are explained
    explained = {o for p in infos for o in p["objects"]}
    assert "000000010000000000000004" in explained and "000000010000000000000013" in explained


@pytest.mark.parametrize(
    ("segno", "what"),
    [
        (25, "gap: 000000010000000000000019 missing"),  # after the horizon
        (11, "is incomplete: 1 of its 2 WAL segment(s) are missing"),  # a kept backup's own
    ],
)
def test_a_segment_removed_by_hand_is_still_an_error(windowed: Any, segno: int, what: str) -> None:
    backend, root, _names = windowed
    backend.delete([seg_key(segno)])
    proc = _walship(root, "verify")
    assert proc.returncode == 20, proc.stdout
    assert "ERROR" in proc.stdout and what in proc.stdout


def test_plan_restore_explains_a_target_in_a_removed_range(windowed: Any) -> None:
    _backend, root, names = windowed
    # an LSN inside segment 6, removed between the first two (consistency-only) backups
    proc = _walship(root, "plan-restore", "--lsn", format_lsn(6 * SEG + 0x1000))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "removed by retention on" in out, out
    # the oldest point restorable to any later moment: the third backup's consistency point
    assert f"oldest restorable point on timeline 1 is {format_lsn(21 * SEG + 0x100)}" in out
    assert names[2] in out


def test_state_is_written_before_any_wal_is_deleted() -> None:
    """A delete killed at its first delete request: the record is there already."""
    name = f"st-{uuid.uuid4().hex[:8]}"
    backend = MemoryBackend(name)
    c = cfg(backend.url)
    identity(backend)
    segments(c, backend, range(1, 21))
    walship_backup(c, backend, 2, NOW - 3 * DAY)
    walship_backup(c, backend, 10, NOW - DAY)

    class Crash(Exception):
        pass

    class Dying:
        url = backend.url

        def delete(self, keys: Any) -> None:
            raise Crash

        def __getattr__(self, attr: str) -> Any:
            return getattr(backend, attr)

    p = retention.make_plan(c, backend, retention.Policy(retain=1), now=int(NOW * US))
    with pytest.raises(Crash):
        retention.execute(c, Dying(), p)  # type: ignore[arg-type]
    state = removed.load(c, backend)
    assert state is not None
    assert [(r.timeline, r.first, r.last) for r in state.removed] == [(1, 1, 9)]


def test_ranges_of_successive_runs_merge() -> None:
    s = removed.State()
    s.add([(1, 1, 9)], "2026-01-01T00:00:00Z", "retain 2")
    s.add([(1, 10, 19), (2, 40, 41)], "2026-01-02T00:00:00Z", "retain 2")
    s.add([(1, 30, 31)], "2026-01-03T00:00:00Z", "retain 2")
    assert [(r.timeline, r.first, r.last) for r in s.removed] == [
        (1, 1, 19),
        (1, 30, 31),
        (2, 40, 41),
    ]
    assert s.removed[0].when() == "2026-01-01 00:00:00 UTC .. 2026-01-02 00:00:00 UTC"
    again = removed.parse(s.to_json(SEG))
    assert again.find(1, 19) is not None and again.find(1, 20) is None
    assert again.find(2, 41) is not None and again.find(3, 41) is None


def test_an_unusable_state_is_a_verify_error(windowed: Any) -> None:
    backend, root, _names = windowed
    c = cfg(root)
    body = b"not json"  # in the object format: only the content is bad
    header = objects.new_header(
        "state.json", removed.KIND_STATE, len(body), hashlib.sha256(body).hexdigest(), c
    )
    objects.put_object(c, backend, removed.STATE_KEY, header, [body], mode=OVERWRITE)
    proc = _walship(root, "verify")
    assert proc.returncode == 20
    assert "retention/state.json is unusable" in proc.stdout


def test_wal_show_status_and_metrics_count_no_gap_after_a_wal_window_delete(
    windowed: Any, tmp_path: Any
) -> None:
    """The ranges removed on purpose are shown as such, not as gaps: the gaps metric
    (which the alert rules watch) stays 0 after a correct delete, and a segment
    removed by hand is still a gap everywhere."""
    backend, root, _names = windowed
    text = _walship(root, "wal-show")
    assert text.returncode == 0, text.stderr
    assert " gap " not in text.stdout
    assert (
        "removed    000000010000000000000004..000000010000000000000009 (6, by retention on"
        in text.stdout
    )
    doc = json.loads(_walship(root, "wal-show", "--json").stdout)
    (tl,) = doc["timelines"]
    assert tl["gaps"] == []
    assert [(r["first"][-2:], r["last"][-2:]) for r in tl["removed_by_retention"]] == [
        ("04", "09"),
        ("0C", "13"),
    ]
    status = json.loads(_walship(root, "status", "--json").stdout)["repository"]
    assert status["gaps"] == 0
    assert len(status["timelines"][0]["removed_by_retention"]) == 2
    prom = tmp_path / "walship.prom"
    conf = tmp_path / "walship.toml"
    conf.write_text(f'repo = "{root}"\nmetrics_cache = "{tmp_path / "summary.json"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALSHIP_")}
    argv = [sys.executable, "-m", "walship", "--config", str(conf), "metrics"]
    metrics = subprocess.run(
        [*argv, "--textfile", str(prom), "--refresh"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert metrics.returncode == 0, metrics.stderr
    assert "\nwalship_repository_gaps 0.0\n" in prom.read_text()

    backend.delete([seg_key(25)])
    doc = json.loads(_walship(root, "wal-show", "--json").stdout)
    (tl,) = doc["timelines"]
    assert [(g["first"][-2:], g["count"]) for g in tl["gaps"]] == [("19", 1)]
    assert len(tl["removed_by_retention"]) == 2
    status = json.loads(_walship(root, "status", "--json").stdout)["repository"]
    assert status["gaps"] == 1


def test_a_gap_partly_removed_by_retention_is_split() -> None:
    s = removed.State()
    s.add([(1, 4, 9), (1, 12, 19)], "2026-12-01T00:00:00Z", "wal-window 1d")
    covered, gaps = s.split(1, 3, 13)
    assert [(r.first, r.last) for r in covered] == [(4, 9), (12, 13)]
    assert gaps == [(3, 3), (10, 11)]
    assert s.split(1, 4, 9)[1] == []
    assert s.split(2, 4, 9) == ([], [(4, 9)])
    covered, gaps = s.split(1, 15, 25)
    assert [(r.first, r.last) for r in covered] == [(15, 19)]
    assert gaps == [(20, 25)]
