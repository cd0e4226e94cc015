#!/usr/bin/env bash
# Start the local PostgreSQL cluster and create the test role and database (idempotent).
set -euo pipefail
ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  pg_lsclusters -h | grep -q "^$ver main" || pg_createcluster "$ver" main >/dev/null
  pg_ctlcluster "$ver" main start
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -Atc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.5
done
su postgres -c "psql -Atc \"select 1 from pg_roles where rolname='root'\"" | grep -q 1 \
  || su postgres -c "createuser -s root"
psql -d postgres -Atc "select 1 from pg_database where datname='connguard_test'" | grep -q 1 \
  || createdb connguard_test
