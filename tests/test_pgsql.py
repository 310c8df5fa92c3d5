"""walship/pgsql.py: connection errors as one plain line, against real libpq answers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.pgharness import Cluster, Workdir, free_port
from walship.config import Config
from walship.pgsql import ServerError, connect

NOISE = ("connection failed:", "connection is bad:", "FATAL:")


def refused(conninfo: str) -> str:
    with pytest.raises(ServerError) as info:
        connect(Config(conninfo=conninfo))
    return info.value.message


def test_refused_tcp_connection_is_one_plain_line() -> None:
    port = free_port()  # bound then closed: nothing listens there
    text = refused(f"host=127.0.0.1 port={port} connect_timeout=5")
    assert text.startswith("cannot connect to the PostgreSQL server: connection to server at"), text
    assert f"port {port} failed: Connection refused" in text, text
    assert not any(n in text for n in NOISE) and "\n" not in text, text


def test_missing_socket_is_one_plain_line(tmp_path: Path) -> None:
    text = refused(f"host={tmp_path} port=5")  # psycopg says "connection is bad: " here
    assert "connection to server on socket" in text and "No such file or directory" in text
    assert not any(n in text for n in NOISE), text


@pytest.mark.pg
@pytest.mark.slow
def test_wrong_password_is_one_plain_line_without_the_password(
    work: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = Cluster(15, work)
    cluster.initdb({"listen_addresses": "'127.0.0.1'", "password_encryption": "'scram-sha-256'"})
    with open(os.path.join(cluster.datadir, "pg_hba.conf"), "w") as fh:
        fh.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    cluster.start()
    try:
        cluster.psql("ALTER ROLE postgres PASSWORD 'right-one'")
        conninfo = f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres"
        monkeypatch.setenv("PGPASSWORD", "wrong-secret")  # libpq's own setting
        out = refused(conninfo)
        assert out == (
            f'cannot connect to the PostgreSQL server: connection to server at "127.0.0.1", '
            f'port {cluster.port} failed: password authentication failed for user "postgres"'
        ), out
        assert "wrong-secret" not in out
    finally:
        cluster.stop()
