"""A repository that is not there is an error for every reading command (issue 10, item 2).

``walship verify`` against a mistyped path used to print OK and exit 0, and
``wal-show`` showed an empty timeline 1: a monitoring job stayed green for
ever. Every command but push (whose first run creates a local repository)
must fail with one line naming the location and the fix: no directory, no
bucket or container, or no ``repository.json`` in it. ``fetch`` must never
answer "absent" (exit 1, which ends recovery and promotes) for such a
repository: it is a real error under fetch_error_exit (docs/exit-codes.md).

Real ``walship`` processes throughout; the cloud cases run against moto,
fake-gcs-server and Azurite (tests/servers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cloudutil import run_walship
from helpers import make_segment, segment_name
from servers.launch import Running
from servers.plugin import (
    azure_env,
    create_azure_container,
    create_gcs_bucket,
    create_s3_bucket,
    gcs_env,
    s3_env,
    unique,
)

NAME = segment_name(3)

#: command -> (arguments, exit code for "no repository")
COMMANDS: dict[str, tuple[tuple[str, ...], int]] = {
    "verify": (("verify",), 1),
    "verify-deep-json": (("verify", "--deep", "--json"), 1),
    "wal-show": (("wal-show",), 1),
    "plan-restore": (("plan-restore", "--latest"), 16),
    "plan-restore-time": (("plan-restore", "--time", "2026-11-23 14:30:00+00"), 16),
    "fetch": (("fetch", NAME, "pg_wal/RECOVERYXLOG"), 255),
    "fetch-history": (("fetch", "00000002.history", "pg_wal/RECOVERYHISTORY"), 255),
    "index": (("index",), 1),
}


def check_refused(env: dict[str, str], cwd: Path, command: str, *fragments: str) -> tuple[str, str]:
    """Run ``command``: its exit code, one ERROR line naming ``fragments``, no traceback."""
    args, code = COMMANDS[command]
    (cwd / "pg_wal").mkdir(exist_ok=True)
    proc = run_walship(env, *args, cwd=str(cwd))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code, (command, proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, (command, proc.stderr)
    assert " ERROR " in lines[0], lines
    for fragment in (*fragments, "WALSHIP_REPO"):
        assert fragment in lines[0], (fragment, lines[0])
    assert not (cwd / "pg_wal" / "RECOVERYXLOG").exists()
    assert not (cwd / "pg_wal" / "RECOVERYHISTORY").exists()
    return proc.stdout, lines[0]


# --- local directory -----------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_directory_is_an_error(tmp_path: Path, command: str) -> None:
    repo = tmp_path / "no" / "such" / "dir"
    stdout, line = check_refused(
        {"WALSHIP_REPO": str(repo)}, tmp_path, command, f"repository {repo} does not exist"
    )
    assert "push a WAL file first" in line
    assert not repo.exists(), "a reading command must not create the repository"
    if command == "verify":
        assert "OK" not in stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_directory_without_repository_json_is_an_error(tmp_path: Path, command: str) -> None:
    repo = tmp_path / "repo"
    (repo / "wal" / "history").mkdir(parents=True)  # not a walship repository (yet)
    (repo / "unrelated.txt").write_text("x")
    check_refused(
        {"WALSHIP_REPO": str(repo)},
        tmp_path,
        command,
        f"repository {repo} has no repository.json",
        "the directory exists",
    )
    assert sorted(os.listdir(repo)) == ["unrelated.txt", "wal"]


def test_plan_restore_json_names_the_verdict(tmp_path: Path) -> None:
    repo = tmp_path / "absent"
    (tmp_path / "pg_wal").mkdir()
    proc = run_walship(
        {"WALSHIP_REPO": str(repo)}, "plan-restore", "--latest", "--json", cwd=str(tmp_path)
    )
    assert proc.returncode == 16, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["verdict"] == "no-repository" and doc["exit_code"] == 16
    assert doc["reachable"] is False and str(repo) in doc["reason"]


def test_fetch_policy_applies_but_stays_loud(tmp_path: Path) -> None:
    """fetch_error_exit = missing (a standby) gives 1, but as an error, never a quiet "absent"."""
    env = {"WALSHIP_REPO": str(tmp_path / "absent"), "WALSHIP_FETCH_ERROR_EXIT": "missing"}
    (tmp_path / "pg_wal").mkdir()
    proc = run_walship(env, "fetch", NAME, "pg_wal/RECOVERYXLOG", cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert " ERROR " in proc.stderr and "does not exist" in proc.stderr, proc.stderr


def test_first_push_still_creates_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "new"
    env = {"WALSHIP_REPO": str(repo)}
    (tmp_path / "pg_wal").mkdir()
    source = tmp_path / "pg_wal" / NAME
    source.write_bytes(make_segment(3))
    proc = run_walship(env, "push", str(source), NAME, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (repo / "repository.json").is_file()
    verify = run_walship(env, "verify", cwd=str(tmp_path))
    assert verify.returncode == 0, verify.stderr
    # and once it exists, an absent file is "absent" again (exit 1, quietly)
    proc = run_walship(env, "fetch", segment_name(4), "pg_wal/RECOVERYXLOG", cwd=str(tmp_path))
    assert proc.returncode == 1 and " ERROR " not in proc.stderr, proc.stderr


# --- S3, GCS, Azure ---------------------------------------------------------------

CLOUDS: dict[str, tuple[str, Callable[[str, str], dict[str, str]], Callable[[str, str], None]]] = {
    "s3": ("moto_s3", s3_env, create_s3_bucket),
    "gcs": ("fake_gcs", gcs_env, create_gcs_bucket),
    "azure": ("azurite", azure_env, create_azure_container),
}
NOUN = {"s3": "bucket", "gcs": "bucket", "azure": "container"}


@pytest.mark.cloud
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_missing_bucket_is_an_error(
    cloud: str, command: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fixture, make_env, _ = CLOUDS[cloud]
    server: Running = request.getfixturevalue(fixture)
    bucket = unique("absent")
    env = make_env(server.endpoint, bucket)
    _, line = check_refused(
        env,
        tmp_path,
        command,
        f"repository {env['WALSHIP_REPO']} does not exist",
        f"{NOUN[cloud]} '{bucket}' does not exist",
        f"create the {NOUN[cloud]}",
    )
    assert "repository.json" not in line  # "missing bucket" is not "no repository.json"


@pytest.mark.cloud
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_bucket_without_repository_json_is_an_error(
    cloud: str, command: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    fixture, make_env, create = CLOUDS[cloud]
    server: Running = request.getfixturevalue(fixture)
    bucket = unique("empty")
    create(server.endpoint, bucket)
    env = make_env(server.endpoint, bucket)
    _, line = check_refused(
        env,
        tmp_path,
        command,
        f"repository {env['WALSHIP_REPO']} has no repository.json",
        f"{NOUN[cloud]} '{bucket}' exists",
        "push a WAL file first",
    )
    assert "does not exist" not in line
