#!/usr/bin/env bash
# Services the tests start themselves but cannot install: PostgreSQL (Debian's package).
# tests/_services.py runs initdb and postgres from a temp folder as the 'postgres' user
# (PostgreSQL refuses root) on a free port of 127.0.0.1 and stops it afterwards; this
# script only makes sure the binaries are there. Idempotent; needs root to install.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    echo "services: PostgreSQL present: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tr '\n' ' ')"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "services: installing PostgreSQL (apt-get install postgresql)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
else
    echo "services: PostgreSQL is missing and cannot be installed here (needs root and apt-get);" \
        "tests/test_mlflow_postgres.py will fail under CI" >&2
fi
