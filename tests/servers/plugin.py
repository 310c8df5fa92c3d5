"""pytest fixtures for the local storage servers (loaded from tests/conftest.py).

Session fixtures start one server each, lazily (only when a test asks):

    moto_s3, seaweedfs_s3, fake_gcs, azurite      -> launch.Running

Per-test fixtures give a fresh bucket/container as environment variables,
ready for a ``walship`` subprocess, or as a Config for in-process use:

    s3_repo_env, seaweedfs_repo_env, gcs_repo_env, azure_repo_env -> dict[str, str]

Every dict holds ``WALSHIP_REPO`` plus the backend's settings and credentials
(``WALSHIP_*``; for S3 also ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``),
and short retry settings. Pass them in the environment of the walship command
(e.g. PostgreSQL's archive_command), or write the ``WALSHIP_*`` ones into a
TOML config file with :func:`write_config` (credentials for S3 stay in env).
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from . import launch
from .launch import Running

TEST_RETRY = {"WALSHIP_RETRY_DEADLINE": "3", "WALSHIP_RETRY_ATTEMPT_TIMEOUT": "2"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[Running]:
    running = launch.start_moto()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def seaweedfs_s3() -> Iterator[Running]:
    running = launch.start_seaweedfs()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[Running]:
    running = launch.start_fake_gcs()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Running]:
    running = launch.start_azurite()
    yield running
    running.stop()


# --- creating buckets (test-side, with the SDKs directly) ---------------------
def s3_env(endpoint: str, bucket: str, prefix: str = "repo") -> dict[str, str]:
    return {
        "WALSHIP_REPO": f"s3://{bucket}/{prefix}".rstrip("/"),
        "WALSHIP_S3_ENDPOINT_URL": endpoint,
        "WALSHIP_S3_FORCE_PATH_STYLE": "true",
        "WALSHIP_S3_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": launch.S3_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": launch.S3_SECRET,
        **TEST_RETRY,
    }


def create_s3_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=launch.S3_KEY_ID,
        aws_secret_access_key=launch.S3_SECRET,
    )
    client.create_bucket(Bucket=bucket)
    client.close()


def gcs_env(endpoint: str, bucket: str, prefix: str = "repo") -> dict[str, str]:
    return {
        "WALSHIP_REPO": f"gs://{bucket}/{prefix}".rstrip("/"),
        "WALSHIP_GCS_ENDPOINT_URL": endpoint,
        "WALSHIP_GCS_ANONYMOUS": "true",
        "WALSHIP_GCS_PROJECT": "walship-test",
        **TEST_RETRY,
    }


def create_gcs_bucket(endpoint: str, bucket: str) -> None:
    req = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=walship-test",
        data=json.dumps({"name": bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200, resp.status


def azure_env(endpoint: str, container: str, prefix: str = "repo") -> dict[str, str]:
    return {
        "WALSHIP_REPO": f"az://{container}/{prefix}".rstrip("/"),
        "WALSHIP_AZURE_CONNECTION_STRING": launch.azurite_connection_string(endpoint),
        **TEST_RETRY,
    }


def create_azure_container(endpoint: str, container: str) -> None:
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(launch.azurite_connection_string(endpoint))
    client.create_container(container)
    client.close()


def config_from_env(env: dict[str, str], **overrides: object) -> object:
    """A walship Config from such a dict (non-WALSHIP_ entries go to os.environ)."""
    from walship import config

    for k, v in env.items():
        if not k.startswith("WALSHIP_"):
            os.environ[k] = v
    walship_env = {k: v for k, v in env.items() if k.startswith("WALSHIP_")}
    return config.load(config_path=os.devnull, env=walship_env, overrides=overrides)


def write_config(env: dict[str, str], path: str) -> str:
    """Write the WALSHIP_* settings of ``env`` as a TOML config file; returns path."""
    lines = []
    for k, v in env.items():
        if not k.startswith("WALSHIP_"):
            continue
        name = k[len("WALSHIP_") :].lower()
        if v in ("true", "false"):
            lines.append(f"{name} = {v}")
        else:
            try:
                float(v)
                lines.append(f"{name} = {v}")
            except ValueError:
                lines.append(f"{name} = {json.dumps(v)}")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


@pytest.fixture
def s3_repo_env(moto_s3: Running) -> dict[str, str]:
    """A fresh bucket on the moto S3 server, as walship environment variables."""
    bucket = unique("walship")
    create_s3_bucket(moto_s3.endpoint, bucket)
    return s3_env(moto_s3.endpoint, bucket)


@pytest.fixture
def seaweedfs_repo_env(seaweedfs_s3: Running) -> dict[str, str]:
    """A fresh bucket on SeaweedFS's S3 gateway, as walship environment variables."""
    bucket = unique("walship")
    create_s3_bucket(seaweedfs_s3.endpoint, bucket)
    return s3_env(seaweedfs_s3.endpoint, bucket)


@pytest.fixture
def gcs_repo_env(fake_gcs: Running) -> dict[str, str]:
    """A fresh bucket on fake-gcs-server (precondition-enforcing), as environment."""
    bucket = unique("walship")
    create_gcs_bucket(fake_gcs.endpoint, bucket)
    return gcs_env(fake_gcs.endpoint, bucket)


@pytest.fixture
def azure_repo_env(azurite: Running) -> dict[str, str]:
    """A fresh container on Azurite, as walship environment variables."""
    container = unique("walship")
    create_azure_container(azurite.endpoint, container)
    return azure_env(azurite.endpoint, container)
