"""Runs the backend contract suite (tests/contract.py) against every backend."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from contract import BackendContract

from walship.errors import ContainerNotFound, NotFound
from walship.storage import memory
from walship.storage.base import Backend
from walship.storage.local import LocalBackend


class TestMemoryContract(BackendContract):
    @pytest.fixture
    def backend(self, request: pytest.FixtureRequest) -> Iterator[Backend]:
        name = f"contract-{request.node.name}"
        memory.reset(name)
        yield memory.MemoryBackend(name)
        memory.reset(name)


class TestLocalContract(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: object) -> Iterator[Backend]:
        os.makedirs(f"{tmp_path}/repo")
        yield LocalBackend(f"{tmp_path}/repo")


def test_local_missing_root_is_not_not_found(tmp_path: object) -> None:
    backend = LocalBackend(f"{tmp_path}/absent")
    with pytest.raises(ContainerNotFound) as info:
        backend.open("wal/x")
    assert not isinstance(info.value, NotFound)
    with pytest.raises(ContainerNotFound):
        backend.head("wal/x")


def test_local_crash_leftover_tmp_is_invisible(tmp_path: object) -> None:
    backend = LocalBackend(f"{tmp_path}/repo")
    backend.put("wal/a/x", [b"1"])
    # a crash between temp write and link leaves only a temp file
    leftover = os.path.join(f"{tmp_path}/repo", "wal", "a", ".walship-tmp-y-1-abcd")
    with open(leftover, "wb") as fh:
        fh.write(b"half")
    assert [i.key for i in backend.list("wal/")] == ["wal/a/x"]
    assert backend.head("wal/a/y") is None


def test_local_permission_denied_is_clear(tmp_path: object) -> None:
    if os.geteuid() == 0:
        # root ignores permissions; use a read-only directory via a file in the way
        backend = LocalBackend(f"{tmp_path}/repo")
        os.makedirs(f"{tmp_path}/repo")
        with open(f"{tmp_path}/repo/wal", "w") as fh:
            fh.write("not a directory")
        from walship.errors import StorageError

        with pytest.raises(StorageError) as info:
            backend.put("wal/a/x", [b"1"])
        assert "cannot write" in str(info.value)


# --- real storage servers (tests/servers): the same contract over the network ---
def _remote(env: dict[str, str]) -> Backend:
    from servers.plugin import config_from_env

    from walship.storage.registry import open_backend

    cfg = config_from_env(env)
    return open_backend(env["WALSHIP_REPO"], cfg)  # type: ignore[arg-type]


class TestS3MotoContract(BackendContract):
    @pytest.fixture
    def backend(self, s3_repo_env: dict[str, str]) -> Iterator[Backend]:
        b = _remote(s3_repo_env)
        yield b
        b.close()


class TestS3SeaweedfsContract(BackendContract):
    @pytest.fixture
    def backend(self, seaweedfs_repo_env: dict[str, str]) -> Iterator[Backend]:
        b = _remote(seaweedfs_repo_env)
        yield b
        b.close()


class TestGcsContract(BackendContract):
    @pytest.fixture
    def backend(self, gcs_repo_env: dict[str, str]) -> Iterator[Backend]:
        b = _remote(gcs_repo_env)
        yield b
        b.close()


class TestAzureContract(BackendContract):
    @pytest.fixture
    def backend(self, azure_repo_env: dict[str, str]) -> Iterator[Backend]:
        b = _remote(azure_repo_env)
        yield b
        b.close()
