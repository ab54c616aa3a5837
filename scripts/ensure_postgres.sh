#!/usr/bin/env bash
# A PostgreSQL server for the tests, from Debian's packages; prints its DSN.
#
# Usage: scripts/ensure_postgres.sh [start|restart|crash|stop] [NAME]
#   start    install PostgreSQL with apt-get if it is missing, create the cluster NAME
#            (default "test") if it does not exist, start it if it is not running
#   restart  stop it (fast) and start it again
#   crash    stop it the way a power cut would (immediate: no checkpoint), start it again
#   stop     stop it
# Idempotent. Each cluster has its own data directory under $CONTEXT_DISTILL_PG_ROOT
# (default /tmp/context-distill-pg) and its own port, listens on 127.0.0.1 only, and
# runs as the `postgres` OS user when called as root (PostgreSQL refuses to run as root).
# The DSN (role and database context_distill, allowed to create databases) is the last
# line of the output and is also written to ROOT/NAME.dsn. Everything else goes to stderr.
set -euo pipefail
action="${1:-start}"
name="${2:-test}"
case "$name" in *[!A-Za-z0-9_-]*|"") echo "bad cluster name: $name" >&2; exit 2 ;; esac
root="${CONTEXT_DISTILL_PG_ROOT:-/tmp/context-distill-pg}"
dir="$root/$name"
role="context_distill"
password="context_distill"

log() { echo "ensure_postgres: $*" >&2; }

find_bindir() {
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$found" ] && [ -x "$found/initdb" ]; then
    echo "$found"
  elif command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  fi
}

bindir="$(find_bindir)"
if [ -z "$bindir" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
    exit 1
  fi
  log "installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  # The package may have created and started a default cluster; ours is separate.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r version cluster _rest; do
      pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
    done
  fi
  bindir="$(find_bindir)"
  [ -n "$bindir" ] || { log "PostgreSQL installed but initdb not found"; exit 1; }
fi

as_owner() {  # run a command as the cluster's owner
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

mkdir -p "$root"
chmod 755 "$root"
exec 9>"$root/$name.lock"
flock 9

port_free() {  # nothing answers on 127.0.0.1:$1
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

if [ ! -f "$dir/ready" ]; then
  rm -rf "$dir"
  mkdir -p "$dir/run"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$dir"
  port=54329
  [ "$name" = test ] || port=54339
  while ! port_free "$port"; do port=$((port + 1)); done
  log "creating cluster $name in $dir (port $port)"
  as_owner "$bindir/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >&2
  as_owner tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/run'
unix_socket_permissions = 0700
max_connections = 300
EOF
  echo "$port" | as_owner tee "$dir/port" >/dev/null
fi
port="$(cat "$dir/port")"

pg_ctl() { as_owner "$bindir/pg_ctl" -D "$dir/data" "$@"; }
running() { pg_ctl status >/dev/null 2>&1; }
start() {
  running || pg_ctl start -w -t 120 -l "$dir/server.log" >&2 9>&-  # the server must not hold the lock
}

case "$action" in
  start) start ;;
  restart) if running; then pg_ctl stop -w -m fast >&2; fi; start ;;
  crash) if running; then pg_ctl stop -w -m immediate >&2; fi; start ;;
  stop) if running; then pg_ctl stop -w -m fast >&2; fi; exit 0 ;;
  *) echo "usage: $0 [start|restart|crash|stop] [NAME]" >&2; exit 2 ;;
esac

if [ ! -f "$dir/ready" ]; then
  as_owner "$bindir/psql" -h "$dir/run" -p "$port" -U postgres -d postgres -qAt \
    -v ON_ERROR_STOP=1 >&2 <<EOF
CREATE ROLE $role LOGIN CREATEDB PASSWORD '$password';
CREATE DATABASE $role OWNER $role;
EOF
  as_owner touch "$dir/ready"
fi
dsn="postgresql://$role:$password@127.0.0.1:$port/$role"
echo "$dsn" > "$root/$name.dsn"
echo "$dsn"
