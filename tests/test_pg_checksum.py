"""Data page checksums (walship/pg/checksum.py) against PostgreSQL's own.

The numpy path is checked against the plain-Python reference; both against
the checksums a real PostgreSQL cluster (``initdb --data-checksums``) wrote
and against ``pg_checksums --check`` on a page corrupted here.
"""

from __future__ import annotations

import os
import random
import re
import struct
import time
from collections.abc import Iterator

import pytest
from pgharness import Cluster, Workdir, run

from walship.pg.checksum import (
    failed_blocks,
    first_block,
    is_checksummed,
    page_checksum,
    page_checksums,
    parse_relation_file,
)

BLCKSZ = 8192
NO_SKIP = (1 << 64) - 1  # start LSN past every page: skip none for being new


def _page(rng: random.Random, lsn: int = 0x1_0000_0028, *, size: int = BLCKSZ) -> bytearray:
    """A plausible page: header with pd_lsn and pd_upper set, random contents."""
    page = bytearray(rng.randbytes(size))
    struct.pack_into(
        "<IIHHHHHHI", page, 0, lsn >> 32, lsn & 0xFFFFFFFF, 0, 0, 40, 4000, size, size | 4, 0
    )
    return page


def _seal(page: bytearray, blkno: int) -> bytearray:
    """Store the right checksum in the page, as PostgreSQL does when writing it."""
    struct.pack_into("<H", page, 8, page_checksum(page, blkno))
    return page


# --- the algorithm ----------------------------------------------------------


def test_numpy_equals_reference_on_random_pages() -> None:
    rng = random.Random(13)
    pages = [_page(rng) for _ in range(40)]
    pages.append(bytearray(BLCKSZ))  # all zeros
    pages.append(bytearray(b"\xff" * BLCKSZ))
    data = b"".join(pages)
    for first in (0, 1, 131072 * 3, (1 << 32) - 20):
        expected = [page_checksum(p, (first + i) & 0xFFFFFFFF) for i, p in enumerate(pages)]
        assert page_checksums(data, first) == expected
    # the stored checksum does not take part
    assert page_checksum(_seal(pages[0], 5), 5) == page_checksum(pages[0], 5)
    assert len(set(expected)) > 35  # different pages, different checksums


@pytest.mark.parametrize("size", [1024, 4096, 16384, 32768])
def test_other_block_sizes(size: int) -> None:
    rng = random.Random(size)
    pages = [_page(rng, size=size) for _ in range(5)]
    assert page_checksums(b"".join(pages), 7, size) == [
        page_checksum(p, 7 + i) for i, p in enumerate(pages)
    ]
    with pytest.raises(ValueError, match="block size"):
        page_checksums(b"x" * 3000, 0, 3000)


def test_failed_blocks_reports_absolute_block_numbers() -> None:
    rng = random.Random(1)
    first = 131072 * 2  # the third 1 GiB segment
    pages = [_seal(_page(rng), first + i) for i in range(9)]
    data = bytearray(b"".join(pages))
    assert failed_blocks(data, first, NO_SKIP) == []
    data[3 * BLCKSZ + 5000] ^= 0x01  # one bit in block 3's data
    data[7 * BLCKSZ + 8] ^= 0x10  # block 7's stored checksum
    assert failed_blocks(data, first, NO_SKIP) == [first + 3, first + 7]
    # a page moved to another place fails too (the block number is mixed in)
    assert failed_blocks(bytes(pages[1]), first, NO_SKIP) == [first]


def test_pages_changed_during_the_backup_are_skipped() -> None:
    rng = random.Random(2)
    lsn = 0x3_0000_1000
    old, new = _page(rng, lsn - 1), _page(rng, lsn)  # checksums never stored: both wrong
    data = bytes(old + new)
    assert failed_blocks(data, 0, lsn) == [0]  # pd_lsn >= start: changed during the backup
    assert failed_blocks(data, 0, lsn + 1) == [0, 1]
    assert failed_blocks(data, 0, lsn - 1) == []


def test_new_pages_pass_but_a_zero_header_with_data_does_not() -> None:
    rng = random.Random(3)
    good = _seal(_page(rng), 0)
    zero = bytes(BLCKSZ)
    half = bytearray(BLCKSZ)
    half[6000] = 1  # pd_upper 0 ("new") yet not all zeros: PageIsVerified rejects it
    assert failed_blocks(good + zero + zero, 0, NO_SKIP) == []
    assert failed_blocks(zero + half, 0, NO_SKIP) == [1]


def test_partial_pages_and_unaligned_buffers() -> None:
    rng = random.Random(4)
    pages = [_seal(_page(rng), i) for i in range(3)]
    data = b"".join(pages)
    assert failed_blocks(data[:-1], 0, NO_SKIP) == []  # the trailing partial page is ignored
    assert failed_blocks(b"", 0, NO_SKIP) == []
    shifted = memoryview(b"\0" + data + b"junk")[1 : 1 + len(data)]  # odd address
    assert failed_blocks(shifted, 0, NO_SKIP) == []
    assert failed_blocks(shifted, 1, NO_SKIP) == [1, 2, 3]
    assert page_checksums(shifted, 0) == [page_checksum(p, i) for i, p in enumerate(pages)]


def test_failed_blocks_throughput() -> None:
    """Rough timing (shown with -s); backup-push needs >= 200 MB/s on one core."""
    rng = random.Random(5)
    page = bytes(_seal(_page(rng), 0))
    data = page * (128 * 1024 * 1024 // BLCKSZ)  # 128 MiB; only block 0 is right
    t0 = time.perf_counter()
    bad = failed_blocks(data, 0, NO_SKIP)
    elapsed = time.perf_counter() - t0
    assert len(bad) == len(data) // BLCKSZ - 1
    print(f"\nfailed_blocks: {len(data) / elapsed / 1e6:.0f} MB/s ({len(data) >> 20} MiB)")


# --- which files ------------------------------------------------------------


@pytest.mark.parametrize(
    ("relpath", "expected"),
    [
        ("global/1262", True),
        ("global/1262_fsm", True),
        ("global/pg_control", False),
        ("global/pg_filenode.map", False),
        ("global/pg_internal.init", False),
        ("base/5/16384", True),
        ("./base/5/16384", True),
        ("base/5/16384.1", True),
        ("base/5/16384_vm.12", True),
        ("base/5/16384_init", True),
        ("base/5/16384_xyz", False),
        ("base/5/16384.", False),
        ("base/5/16384.01", False),
        ("base/5/016384", False),
        ("base/5/4294967296", False),  # past 32 bits
        ("base/5/t3_16384", False),  # temporary relation
        ("base/5/PG_VERSION", False),
        ("base/5/pg_filenode.map", False),
        ("base/5/pg_internal.init", False),
        ("base/pgsql_tmp/pgsql_tmp123.0", False),
        ("base/5/sub/16384", False),
        ("base/16384", False),
        ("pg_tblspc/16400/PG_15_202209061/5/16401", True),
        ("pg_tblspc/16400/PG_15_202209061/5/16401_fsm.2", True),
        ("pg_tblspc/16400/PG_15_202209061/5/PG_VERSION", False),
        ("pg_tblspc/16400/PG_15_202209061/pgsql_tmp/x", False),
        ("pg_tblspc/16400/other/5/16401", False),
        ("pg_wal/000000010000000000000001", False),
        ("pg_xact/0000", False),
        ("pg_multixact/offsets/0000", False),
        ("PG_VERSION", False),
        ("16384", False),
        ("postgresql.conf", False),
    ],
)
def test_is_checksummed(relpath: str, expected: bool) -> None:
    assert is_checksummed(relpath) is expected


def test_first_block() -> None:
    assert first_block("base/5/16384") == 0
    assert first_block("base/5/16384.1") == 131072
    assert first_block("base/5/16384_fsm.3") == 3 * 131072
    assert first_block("base/5/16384.2", block_size=16384) == 2 * 65536
    assert first_block("base/5/16384.2", segment_size=1 << 20) == 256
    assert parse_relation_file("16384_vm.7") == (16384, "_vm", 7)
    assert parse_relation_file("pg_control") is None


# --- against a real PostgreSQL ------------------------------------------------


def _checksummed_cluster(major: int, work: Workdir) -> Cluster:
    cluster = Cluster(major, work)
    run(
        [
            cluster.bin("initdb"),
            "-D",
            cluster.datadir,
            "-U",
            "postgres",
            "--auth=trust",
            "--data-checksums",
            "-N",
        ]
    )
    cluster.configure({"listen_addresses": "''", "fsync": "off", "timezone": "'UTC'"})
    return cluster


@pytest.fixture
def stopped_cluster(request: pytest.FixtureRequest, work: Workdir) -> Iterator[tuple[Cluster, int]]:
    """A checksummed cluster with pgbench tables, checkpointed and stopped;
    and pgbench_accounts' relfilenode."""
    cluster = _checksummed_cluster(request.param, work)
    try:
        cluster.start()
        cluster.pgbench("-i", "-s", "1", "-q")
        cluster.psql("CREATE TABLE t (x int) WITH (autovacuum_enabled = off)")
        cluster.psql("INSERT INTO t SELECT generate_series(1, 100000)")
        cluster.psql("VACUUM t")  # visibility map and free space map forks
        location = work.mkdir(f"tablespace-{request.param}")
        cluster.psql(f"CREATE TABLESPACE ts LOCATION '{location}'")
        cluster.psql("CREATE TABLE u TABLESPACE ts AS SELECT generate_series(1, 50000) AS x")
        node = int(cluster.psql("SELECT pg_relation_filenode('pgbench_accounts')"))
        cluster.psql("CHECKPOINT")
    finally:
        cluster.stop()
    yield cluster, node


def _relation_files(datadir: str) -> dict[str, str]:
    found = {}
    for root, _dirs, files in os.walk(datadir, followlinks=True):  # into pg_tblspc/<oid>
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, datadir)] = path
    return found


def _pg_checksums(cluster: Cluster, *args: str) -> tuple[int, str]:
    proc = run([cluster.bin("pg_checksums"), "--check", "-D", cluster.datadir, *args], check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.parametrize("stopped_cluster", [15, 18], indirect=True)
def test_every_page_of_a_real_cluster_verifies(stopped_cluster: tuple[Cluster, int]) -> None:
    cluster, _node = stopped_cluster
    files = _relation_files(cluster.datadir)
    checksummed = {rel for rel in files if is_checksummed(rel)}
    # the same files pg_checksums reads (it names each with -v)
    rc, out = _pg_checksums(cluster, "-v")
    assert rc == 0, out
    verified = {
        os.path.relpath(m, cluster.datadir)
        for m in re.findall(r'checksums verified in file "([^"]+)"', out)
    }
    assert checksummed == verified
    assert any(rel.endswith("_vm") for rel in checksummed)
    assert any(rel.startswith("global/") for rel in checksummed)
    assert any(rel.startswith("pg_tblspc/") for rel in checksummed)
    pages = 0
    for rel in sorted(checksummed):
        with open(files[rel], "rb") as fh:
            data = fh.read()
        pages += len(data) // BLCKSZ
        assert failed_blocks(data, first_block(rel), NO_SKIP) == [], rel
    blocks_scanned = int(re.search(r"Blocks scanned:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert pages == blocks_scanned


@pytest.mark.pg
@pytest.mark.slow
@pytest.mark.parametrize("stopped_cluster", [15], indirect=True)
def test_a_corrupted_page_is_reported_as_pg_checksums_does(
    stopped_cluster: tuple[Cluster, int],
) -> None:
    cluster, node = stopped_cluster
    files = _relation_files(cluster.datadir)
    rel = next(r for r in files if r.startswith("base/") and r.endswith(f"/{node}"))
    path = files[rel]
    with open(path, "rb") as fh:
        original = fh.read()
    assert len(original) // BLCKSZ > 100
    block = 77
    corrupt = bytearray(original)
    corrupt[block * BLCKSZ + 4321] ^= 0x40
    # two new (zero) pages at the end: allowed, by PostgreSQL and by us
    corrupt += bytes(2 * BLCKSZ)
    with open(path, "wb") as fh:
        fh.write(corrupt)

    assert failed_blocks(corrupt, first_block(rel), NO_SKIP) == [block]
    rc, out = _pg_checksums(cluster)
    assert rc != 0
    failures = re.findall(
        r'checksum verification failed in file "([^"]+)", block (\d+): '
        r"calculated checksum ([0-9A-F]+) but block contains ([0-9A-F]+)",
        out,
    )
    assert failures, out
    assert [(os.path.relpath(f, cluster.datadir), int(b)) for f, b, _c, _s in failures] == [
        (rel, block)
    ]
    page = corrupt[block * BLCKSZ : (block + 1) * BLCKSZ]
    assert page_checksum(page, block) == int(failures[0][2], 16)
    assert struct.unpack_from("<H", page, 8)[0] == int(failures[0][3], 16)

    # a backup that started at or before the page's LSN does not call it corrupt
    hi, lo = struct.unpack_from("<II", page, 0)
    lsn = hi << 32 | lo
    assert failed_blocks(corrupt, 0, lsn) == []
    assert failed_blocks(corrupt, 0, lsn + 1) == [block]
