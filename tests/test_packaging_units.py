"""packaging/systemd and packaging/container: the units load in systemd, the
Containerfile builds walship only from walship's own files, pinned, as a non-root user."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from walship import cli

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "packaging" / "systemd"
CONTAINER = ROOT / "packaging" / "container" / "Containerfile"
INSTALLED = "/opt/walship/bin/walship"

#: the schedules the issue asks for: unit -> (command, OnCalendar)
SCHEDULES = {
    "walship-backup": ("backup-push", "*-*-* 01:00:00"),
    "walship-delete": ("delete --confirm", "*-*-* 05:00:00"),
    "walship-verify": ("verify", "hourly"),
}


def _ini(path: Path) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd itself loads every unit: no unknown key, bad value or missing file.
    ExecStart= names /opt/walship; the copy checked here points at this checkout's
    walship, which systemd requires to exist."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/setup.sh installs Debian's systemd"
    here = shutil.which("walship", path=str(Path(sys.executable).parent))
    assert here
    units = sorted(SYSTEMD.glob("*.service")) + sorted(SYSTEMD.glob("*.timer"))
    assert {u.stem for u in units} >= set(SCHEDULES)
    for unit in units:
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, here))
    proc = subprocess.run(
        [analyze, "verify", *(str(tmp_path / u.name) for u in units)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # unknown keys and bad values are only warnings for systemd: none allowed
    problems = [line for line in proc.stderr.splitlines() if str(tmp_path) in line]
    assert problems == [], proc.stderr


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_service_and_timer(name: str) -> None:
    command, calendar = SCHEDULES[name]
    service = _ini(SYSTEMD / f"{name}.service")["Service"]
    timer = _ini(SYSTEMD / f"{name}.timer")
    assert service["Type"] == ["oneshot"]
    assert service["User"] == ["postgres"]
    assert service["Environment"] == ["WALSHIP_CONFIG=/etc/walship/walship.toml"]
    argv = shlex.split(service["ExecStart"][0])
    assert argv[0] == INSTALLED and " ".join(argv[1:]) == command
    assert argv[1] in cli.COMMANDS
    # the hardening leaves the repository writable, and never a password on the line
    assert service["ProtectSystem"] == ["strict"]
    assert "-/var/lib/walship" in service["ReadWritePaths"]
    assert not re.search(r"password|secret|key=", service["ExecStart"][0], re.I)
    assert timer["Timer"]["OnCalendar"] == [calendar]
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_delete_runs_after_the_backup() -> None:
    unit = _ini(SYSTEMD / "walship-delete.service")["Unit"]
    assert "walship-backup.service" in " ".join(unit["After"])


# --- the Containerfile -----------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_containerfile() -> None:
    steps = _instructions(CONTAINER.read_text())
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) >= 2  # build, then a runtime image without the build tools
    for i in stages:
        image = steps[i][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"[\w./:-]+@sha256:[0-9a-f]{64}", image), f"unpinned base {image}"
    final = steps[stages[-1] :]
    # only walship's own files come from the build context
    allowed = {"pyproject.toml", "README.md", "LICENSE", "bin/", "walship/", "./", "./bin/"}
    for word, rest in steps:
        assert word != "ADD", "ADD fetches URLs and unpacks archives: use COPY"
        if word == "COPY" and "--from=" not in rest:
            *sources, _dest = rest.split()
            assert set(sources) <= allowed, sources
    assert ("COPY", "--from=build /opt/walship /opt/walship") in final
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    entry = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert entry == ['["/opt/walship/bin/walship"]']  # exec form: signals reach walship
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip install '.[all]'" in runs
