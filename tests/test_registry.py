"""The backend registry: lazy imports, unknown schemes, third-party entry points."""

from __future__ import annotations

import ast
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


def _run_modules(argv: list[str]) -> dict[str, object]:
    # ``new``: what walship itself imported (an editable install's finder
    # imports pathlib, re... at start-up, before walship runs)
    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from walship.cli import main\n"
        f"code = main({argv!r})\n"
        "print(repr({'code': code, 'modules': sorted(sys.modules),"
        " 'new': sorted(set(sys.modules) - before)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, object] = ast.literal_eval(out.strip().splitlines()[-1])
    return result


#: never imported by a local push or fetch: SDKs, retries and crypto it does not use,
#: and platform (its import alone costs milliseconds). typing and json are allowed on the
#: cold push/fetch path since issue 12 (docs/benchmarks.md, "Stand-ins"); the look-ahead
#: fast path keeps them out (tests/test_lookahead.py)
HEAVY = {
    "boto3",
    "botocore",
    "google",
    "azure",
    "tenacity",
    "cryptography",
    "dataclasses",
    "platform",
    "zstandard",  # its C backend is loaded without running zstandard/__init__
}


#: stdlib modules a push or fetch must not import itself
STARTUP_COSTLY = {"threading", "subprocess"}


def test_push_and_fetch_to_local_import_nothing_heavy(tmp_path: Path) -> None:
    """The hot path must not pay for cloud SDKs, retries or crypto it does not use."""
    src = tmp_path / segment_name(3)
    src.write_bytes(make_segment(3))
    repo = str(tmp_path / "repo")
    first = tmp_path / segment_name(2)
    first.write_bytes(make_segment(2))
    # the first push records the repository identity (once, with json)
    assert _run_modules(["--repo", repo, "-q", "push", str(first), segment_name(2)])["code"] == 0
    pushed = _run_modules(["--repo", repo, "-q", "push", str(src), segment_name(3)])
    fetched = _run_modules(["--repo", repo, "-q", "fetch", segment_name(3), str(tmp_path / "x")])
    assert (tmp_path / "x").read_bytes() == src.read_bytes()
    for result in (pushed, fetched):
        assert result["code"] == 0
        modules = result["modules"]
        assert isinstance(modules, list)
        assert "zstandard.backend_c" in modules
        loaded = {m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY - {"zstandard"}}
        assert not loaded, sorted(loaded)
        new = result["new"]
        assert isinstance(new, list)
        assert "walship.archive.fetch" in new or "walship.archive.push" in new
        assert not STARTUP_COSTLY & set(new), sorted(STARTUP_COSTLY & set(new))
