#!/usr/bin/env bash
# services.sh — the servers the application tests (tests/apps) talk to:
# PostgreSQL and Redis, each installed from Debian's packages when missing,
# started on 127.0.0.1 on a free port with a data directory of its own under
# a fresh temporary directory, and stopped again.
#
#   eval "$(scripts/services.sh start)"    start both; prints the exports
#   scripts/services.sh stop DIR           stop what `start` started in DIR
#
# `start` prints shell lines that set
#   GOLOOP_TEST_PG_DSN      postgresql://goloop@127.0.0.1:PORT/goloop
#   GOLOOP_TEST_REDIS_URL   redis://127.0.0.1:PORT/0
#   GOLOOP_TEST_SERVICES    the directory holding their data, logs and pids
# (GOLOOP_* variables reach the Debian sid root too: scripts/sid-run.sh).  A
# server that cannot be installed or started is reported on stderr and its
# variable is left unset; the tests that need it then fail under CI=true and
# are skipped, with that reason, otherwise (tests/apps/conftest.py).
#
# PostgreSQL refuses to run as root, so it runs as the `postgres` user that
# Debian's package creates; its data directory is owned by that user.
set -u

log() { echo "services.sh: $*" >&2; }

free_port() {   # a TCP port nothing listens on now, on 127.0.0.1
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

APT_UPDATED=""
apt_install() {   # $@ Debian packages; true when installed
    [ "$(id -u)" = 0 ] || { log "not root: cannot apt-get install $*"; return 1; }
    if [ -z "$APT_UPDATED" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1
}

pg_bin() {   # the directory of PostgreSQL's server programs, or nothing
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && { echo "$d"; return; }
    done
}

start_postgres() {   # $1 the services directory
    local dir="$1/pg" bin port
    bin="$(pg_bin)"
    if [ -z "$bin" ]; then
        apt_install postgresql || { log "PostgreSQL is not installed and apt-get could not install it"; return 1; }
        bin="$(pg_bin)"
    fi
    id postgres >/dev/null 2>&1 || { log "no postgres user (Debian's postgresql package makes it)"; return 1; }
    port="$(free_port)"
    mkdir -p "$dir" && chown postgres: "$dir" && chmod 700 "$dir"
    if ! runuser -u postgres -- "$bin/initdb" -D "$dir/data" -U goloop -A trust --no-sync >"$1/pg-initdb.log" 2>&1; then
        log "initdb failed: see $1/pg-initdb.log"; return 1
    fi
    # fsync off: a test database, thrown away at the end.
    if ! runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
        -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        >"$1/pg-start.log" 2>&1; then
        log "PostgreSQL did not start: see $dir/server.log"; return 1
    fi
    runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$port" -U goloop goloop >>"$1/pg-start.log" 2>&1 ||
        { log "createdb failed: see $1/pg-start.log"; return 1; }
    echo "$bin" >"$1/pg.bin"
    echo "export GOLOOP_TEST_PG_DSN=postgresql://goloop@127.0.0.1:$port/goloop"
}

start_redis() {   # $1 the services directory
    local dir="$1/redis" port
    if ! command -v redis-server >/dev/null 2>&1; then
        apt_install redis-server || { log "Redis is not installed and apt-get could not install it"; return 1; }
    fi
    port="$(free_port)"
    mkdir -p "$dir"
    # Debian's package starts its own server under systemd where there is one;
    # this one is ours: loopback, no persistence, pid and log in $dir.
    if ! redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --save "" --appendonly no \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null 2>&1; then
        log "Redis did not start: see $dir/redis.log"; return 1
    fi
    for _ in $(seq 100); do
        redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "export GOLOOP_TEST_REDIS_URL=redis://127.0.0.1:$port/0"
}

stop_all() {   # $1 the services directory
    local dir="$1"
    [ -d "$dir" ] || return 0
    if [ -f "$dir/pg.bin" ]; then
        runuser -u postgres -- "$(cat "$dir/pg.bin")/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1
    fi
    if [ -f "$dir/redis/redis.pid" ]; then
        kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start)
        DIR="$(mktemp -d /tmp/goloop-services.XXXXXX)"
        chmod 755 "$DIR"
        echo "export GOLOOP_TEST_SERVICES=$DIR"
        start_postgres "$DIR"
        start_redis "$DIR"
        ;;
    stop)
        stop_all "${2:?usage: services.sh stop DIR}"
        ;;
    *)
        echo "usage: scripts/services.sh start | stop DIR" >&2
        exit 2
        ;;
esac
exit 0
