#!/usr/bin/env bash
# Makes sure a Postgres server (15+) with its PGXS build files is installed and
# running on ${PGHOST:-127.0.0.1}:${PGPORT:-5432}. Starts one if none is running:
# the machine's Debian cluster if it has one, else a private server in .pgdata.
set -euo pipefail
HOST=${PGHOST:-127.0.0.1}
PORT=${PGPORT:-5432}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Server, client and PGXS (Debian/Ubuntu: installed from the distribution's packages).
if ! command -v pg_config >/dev/null 2>&1 || [ ! -f "$(pg_config --pgxs 2>/dev/null)" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "ensure_postgres: installing Postgres and its PGXS files (apt-get)" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-server-dev-all make
    else
        echo "ensure_postgres: install Postgres 15+ with its server dev files (pg_config, PGXS)" >&2
        exit 1
    fi
fi

if pg_isready -q -h "$HOST" -p "$PORT"; then
    exit 0
fi

# 2. Start the machine's cluster, or a private one.
if command -v pg_lsclusters >/dev/null 2>&1 && [ -n "$(pg_lsclusters -h 2>/dev/null)" ]; then
    read -r version name _ < <(pg_lsclusters -h | head -n 1)
    echo "ensure_postgres: starting cluster $version/$name" >&2
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start
elif [ "$(id -u)" != 0 ]; then
    bindir=$(pg_config --bindir)
    if [ ! -d .pgdata ]; then
        "$bindir/initdb" -D .pgdata -A trust -U "${PGUSER:-$(whoami)}" >/dev/null
    fi
    echo "ensure_postgres: starting a private server in .pgdata on port $PORT" >&2
    "$bindir/pg_ctl" -D .pgdata -l .pgdata/server.log -w \
        -o "-p $PORT -k /tmp -c listen_addresses=$HOST" start >/dev/null
else
    echo "ensure_postgres: no cluster to start; as root, create one with pg_createcluster" >&2
    exit 1
fi

for _ in $(seq 1 60); do
    pg_isready -q -h "$HOST" -p "$PORT" && exit 0
    sleep 0.5
done
echo "ensure_postgres: Postgres did not come up on $HOST:$PORT" >&2
exit 1
