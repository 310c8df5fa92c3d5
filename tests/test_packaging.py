"""The sample files in packaging/ stay valid as settings change."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from walship import config

PACKAGING = Path(__file__).resolve().parent.parent / "packaging"


def test_walship_toml_sample_names_only_real_settings(tmp_path: Path) -> None:
    text = (PACKAGING / "walship.toml.sample").read_text()
    names = re.findall(r"^#?([a-z][a-z0-9_]*) = ", text, re.M)
    assert "repo" in names and "fetch_error_exit" in names
    # the settings the timers (packaging/systemd) run with are there to set
    for group in ("retention_", "backup_", "check_", "drill_"):
        wanted = {n for n in config.SETTINGS_BY_NAME if n.startswith(group)}
        assert wanted and wanted <= set(names), (group, sorted(wanted - set(names)))
    unknown = [n for n in names if n not in config.SETTINGS_BY_NAME]
    assert unknown == [], f"packaging/walship.toml.sample names unknown settings {unknown}"
    # uncommented, every line is a valid value for its setting
    enabled = tmp_path / "all.toml"
    enabled.write_text(re.sub(r"^#([a-z][a-z0-9_]* = )", r"\1", text, flags=re.M))
    tomllib.loads(enabled.read_text())
    cfg = config.load(config_path=str(enabled), env={})
    assert cfg.repo == "/var/lib/walship/main"
    assert cfg.fetch_error_exit == "abort"
    assert cfg.retention_retain == 7 and cfg.retention_window == "14d"


def test_postgresql_conf_sample_passes_p_and_f_in_order() -> None:
    text = (PACKAGING / "postgresql.conf.sample").read_text()
    archive = re.findall(r"^archive_command = '(.*)'$", text, re.M)
    restore = re.findall(r"^restore_command = '(.*)'$", text, re.M)
    assert archive and archive[0].endswith("walship push %p %f")
    assert restore and restore[0].endswith("walship fetch %f %p")
