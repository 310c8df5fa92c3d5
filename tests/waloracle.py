"""pg_waldump as the oracle for walship.pg.records: run it and parse its output.

pg_waldump prints one line per record::

    rmgr: Transaction len (rec/tot):     34/    34, tx:        725, lsn: 0/01524E88,
    prev 0/01524E48, desc: COMMIT 2026-11-23 22:39:41.038312 UTC

Timestamps are printed in the local zone, so it runs with TZ=UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import NamedTuple

from pgharness import run

LINE = re.compile(
    r"rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s*(?P<rec>\d+)/\s*(?P<tot>\d+), "
    r"tx:\s*(?P<xid>\d+), lsn: (?P<lsn>[0-9A-F]+/[0-9A-F]+), "
    r"prev (?P<prev>[0-9A-F]+/[0-9A-F]+), desc: (?P<op>\S+)\s?(?P<desc>.*)"
)
TS = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?) UTC")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Rec(NamedTuple):
    rmgr: str
    op: str
    lsn: int
    prev: int
    xid: int
    tot: int
    desc: str


def lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def ts_us(text: str) -> int:
    """'2026-11-23 22:39:41.038312' (UTC) -> microseconds since the Unix epoch."""
    whole, _, frac = text.partition(".")
    t = dt.datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    seconds = (t - EPOCH) // dt.timedelta(seconds=1)
    return seconds * 1_000_000 + int((frac + "000000")[:6])


def waldump(bindir: str, directory: str, first: str, last: str | None = None) -> list[Rec]:
    """All records pg_waldump prints for segment files ``first``..``last`` in ``directory``."""
    cmd = [f"{bindir}/pg_waldump", "-p", directory, first]
    if last is not None and last != first:
        cmd.append(last)
    proc = run(cmd, env={"TZ": "UTC"}, check=False)
    out: list[Rec] = []
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        if m is None:
            continue
        out.append(
            Rec(
                m["rmgr"],
                m["op"],
                lsn(m["lsn"]),
                lsn(m["prev"]),
                int(m["xid"]),
                int(m["tot"]),
                m["desc"],
            )
        )
    if not out:
        raise AssertionError(f"pg_waldump printed no records: {proc.stderr}")
    return out


def expected_event(rec: Rec) -> tuple[object, ...] | None:
    """The (kind, lsn, xid, time, name) the reader must report for this record, if any."""
    desc = rec.desc
    if rec.rmgr == "Transaction":
        m = TS.search(desc)
        if rec.op in ("COMMIT", "ABORT"):
            assert m, desc
            return (rec.op.lower(), rec.lsn, rec.xid, ts_us(m[1]), None)
        if rec.op in ("COMMIT_PREPARED", "ABORT_PREPARED"):
            assert m, desc
            xid = int(desc.split(":", 1)[0])
            return (rec.op.lower(), rec.lsn, xid, ts_us(m[1]), None)
        if rec.op == "PREPARE":
            assert m, desc
            gm = re.match(r"gid (.*): \d{4}-", desc)
            assert gm, desc
            return ("prepare", rec.lsn, rec.xid, ts_us(m[1]), gm[1])
        return None
    if rec.rmgr == "XLOG":
        if rec.op == "RESTORE_POINT":
            return ("restore_point", rec.lsn, None, None, desc)
        if rec.op in ("CHECKPOINT_SHUTDOWN", "CHECKPOINT_ONLINE"):
            return (rec.op.lower(), rec.lsn, None, None, None)
        if rec.op == "SWITCH":
            return ("switch", rec.lsn, None, None, None)
        if rec.op == "END_OF_RECOVERY":
            m = TS.search(desc)
            assert m, desc
            return ("end_of_recovery", rec.lsn, None, ts_us(m[1]), None)
        if rec.op == "BACKUP_END":
            return ("backup_end", rec.lsn, None, None, None)
    return None


def checkpoint_fields(desc: str) -> dict[str, int]:
    """redo, tli, prev_tli and oldest running xid from a checkpoint desc."""
    m = re.search(r"redo ([0-9A-F]+/[0-9A-F]+); tli (\d+); prev tli (\d+);", desc)
    assert m, desc
    o = re.search(r"oldest running xid (\d+)", desc)
    assert o, desc
    return {
        "redo": lsn(m[1]),
        "tli": int(m[2]),
        "prev_tli": int(m[3]),
        "oldest_active_xid": int(o[1]),
    }


def eor_fields(desc: str) -> dict[str, int]:
    m = re.search(r"tli (\d+); prev tli (\d+)", desc)
    assert m, desc
    return {"tli": int(m[1]), "prev_tli": int(m[2])}
