#!/usr/bin/env bash
# Install the database servers the test and benchmark suites start on their own (tests/dbservers.py):
# MariaDB (mariadbd), PostgreSQL 15 (initdb, postgres), percona-toolkit (pt-online-schema-change) and the
# sqlite3 shell (a documentation page is run in it).
# Installs only what is missing; quick no-op when everything is present. Never needs the distro's services:
# they are kept from starting during the install, and stopped and disabled if systemd started them anyway.
set -euo pipefail

PATH="$PATH:/usr/sbin:/usr/local/sbin:/sbin"
PG_BIN=/usr/lib/postgresql/15/bin

missing=()
command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
{ [ -x "$PG_BIN/postgres" ] && [ -x "$PG_BIN/initdb" ]; } || missing+=(postgresql-15)
command -v pt-online-schema-change >/dev/null 2>&1 || missing+=(percona-toolkit)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)  # doc/concepts.rst runs a session in it

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-db-servers: missing ${missing[*]}; install them as root with apt-get (tests needing them will skip)" >&2
    exit 0
fi

# Keep maintainer scripts from starting services (invoke-rc.d honours policy-rc.d); remove ours afterwards.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-db-servers: installing ${missing[*]}" >&2
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null

# If systemd started the freshly installed services regardless, stop and disable them: we never use them.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    for pkg in "${missing[@]}"; do
        case "$pkg" in
            mariadb-server) services=(mariadb.service) ;;
            postgresql-15) services=(postgresql.service postgresql@15-main.service) ;;
            *) services=() ;;
        esac
        for svc in "${services[@]}"; do
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
        done
    done
fi
echo "install-db-servers: done" >&2
