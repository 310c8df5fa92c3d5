#!/usr/bin/env bash
# Install what `make demo` / `make test` need on a Debian 12 machine, then
# print the path of the Python virtual environment to use (the only stdout).
#
#   scripts/setup.sh demo   PostgreSQL 15 + a venv with walship[backup] (psycopg)
#   scripts/setup.sh test   also the test extras (and node/npm for the emulators)
#
# Idempotent: whatever is already there is kept. System packages need root
# (or sudo). PostgreSQL runs walship as the `postgres` user, so the venv must
# be readable by that user: it is `.venv` in the checkout when the postgres
# user can read the checkout, otherwise (e.g. a checkout under /root) a venv
# in /var/tmp with walship installed non-editable.
set -euo pipefail

mode=${1:-test}
case "$mode" in demo | test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
python=${WALSHIP_PYTHON:-/usr/bin/python3.11}
pg_bindir=/usr/lib/postgresql/15/bin

say() { echo "setup: $*" >&2; }

as_root=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo -n)
    fi
fi

apt_updated=0
apt_install() {
    if [ "$(id -u)" != 0 ] && [ ${#as_root[@]} = 0 ]; then
        say "missing: $*; install them as root: apt-get install $*"
        exit 1
    fi
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        apt_updated=1
    fi
    say "apt-get install $*"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2
}

# --- system packages -------------------------------------------------------
if [ ! -x "$python" ]; then
    apt_install python3.11
fi
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install python3.11-venv
fi
if [ ! -x "$pg_bindir/postgres" ] || [ ! -x "$pg_bindir/pgbench" ] ||
    [ ! -x "$pg_bindir/pg_basebackup" ]; then
    # the demo and the tests make their own scratch clusters: no "main" cluster
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        "${as_root[@]}" mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" |
            "${as_root[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    apt_install postgresql-15 postgresql-client-15
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    say "the postgres user is missing (it comes with the postgresql-15 package)"
    exit 1
fi
# node + npm for the cloud-storage emulators (the Makefile's EMULATORS hook)
if [ "$mode" = test ] && [ -f "$root/tests/servers/install.sh" ] &&
    ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi

# systemd-analyze for tests/test_packaging_units.py (loads packaging/systemd units)
if [ "$mode" = test ] && ! command -v systemd-analyze >/dev/null 2>&1; then
    apt_install systemd
fi

# --- the virtual environment ------------------------------------------------
venv="$root/.venv"
editable=1
if [ "$(id -u)" = 0 ] &&
    ! runuser -u postgres -- test -r "$root/walship/__init__.py" 2>/dev/null; then
    venv="/var/tmp/walship-venv-$(printf %s "$root" | sha256sum | cut -c1-12)"
    editable=0
    say "the postgres user cannot read $root: using $venv (walship installed non-editable)"
fi
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv from $python"
    "$python" -m venv "$venv"
fi

pip_log="$root/.cache/setup-pip.log"
mkdir -p "$root/.cache"
pip() {
    # quiet unless it fails: then the end of its output
    if ! "$venv/bin/python" -m pip --disable-pip-version-check --no-input "$@" >"$pip_log" 2>&1; then
        tail -n 40 "$pip_log" >&2
        say "pip $* failed (full output: $pip_log)"
        exit 1
    fi
}

# the demo runs walship backup-push, which needs the `backup` extra (psycopg)
extras="[backup]"
[ "$mode" = test ] && extras="[all,test]"
stamp="$venv/.walship-setup-$mode"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-64) $editable $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "pip install walship$extras into $venv"
    pip install --upgrade pip
    if [ "$editable" = 1 ]; then
        pip install -e "$root$extras"
    else
        pip install "$root$extras"
    fi
    echo "$want" >"$stamp"
elif [ "$editable" = 0 ]; then
    # keep the installed copy in step with the checkout
    pip install --no-deps --force-reinstall "$root"
fi
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- "$venv/bin/walship" --version >/dev/null 2>&1; then
    say "the postgres user cannot run $venv/bin/walship; make the venv readable to it"
    exit 1
fi

echo "$venv" >"$root/.cache/venv-path"
echo "$venv"
