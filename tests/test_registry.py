"""The backend registry: lazy imports, unknown schemes, third-party entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_segment, segment_name

from walship.config import Config
from walship.errors import ConfigError
from walship.storage import registry
from walship.storage.local import LocalBackend
from walship.storage.memory import MemoryBackend


def test_plain_path_and_file_url_are_local(tmp_path: Path) -> None:
    cfg = Config()
    for url in (str(tmp_path), f"file://{tmp_path}"):
        backend = registry.open_backend(url, cfg)
        assert isinstance(backend, LocalBackend)
        assert backend.root == str(tmp_path)


def test_unknown_scheme_is_one_clear_line() -> None:
    with pytest.raises(ConfigError) as info:
        registry.open_backend("ftp://host/x", Config())
    line = info.value.one_line()
    assert "unknown scheme 'ftp'" in line
    assert "s3://" in line


def test_entry_point_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "walship_fakeplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: walship-fakeplugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[walship.backends]\nfake = walship_fakeplugin:factory\n"
    )
    (tmp_path / "walship_fakeplugin.py").write_text(
        "from walship.storage.memory import MemoryBackend\n"
        "def factory(url, config):\n"
        "    return MemoryBackend('plugin-' + url.partition('://')[2])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    backend = registry.open_backend("fake://abc", Config())
    assert isinstance(backend, MemoryBackend)
    assert backend.url == "mem://plugin-abc"


def test_push_to_local_imports_no_sdk(tmp_path: Path) -> None:
    """The hot path must not pay for cloud SDKs, retries or crypto it does not use."""
    src = tmp_path / segment_name(3)
    src.write_bytes(make_segment(3))
    script = (
        "import sys, json\n"
        "from walship.cli import main\n"
        f"code = main(['--repo', {str(tmp_path / 'repo')!r}, '-q', 'push', {str(src)!r}, "
        f"{segment_name(3)!r}])\n"
        "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["code"] == 0
    heavy = {"boto3", "botocore", "google", "azure", "tenacity", "cryptography", "dataclasses"}
    assert heavy.isdisjoint(m.split(".")[0] for m in result["modules"]), sorted(
        heavy & {m.split(".")[0] for m in result["modules"]}
    )
