#!/usr/bin/env bash
# Regenerate the offline query cache (.sqlx/) used by sqlx's compile-time checked queries, so
# builds (and CI) need no database. Run after changing a query or a migration:
#   scripts/sqlx-prepare.sh            # uses postgres://postgres@127.0.0.1:5432
#   scripts/sqlx-prepare.sh --check    # fails if the committed cache is stale
set -euo pipefail
cd "$(dirname "$0")/.."
server=${SQLX_PREPARE_SERVER:-postgres://postgres@127.0.0.1:5432}
db=tidegate_sqlx_prepare
psql "$server/postgres" -qAt -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
for f in migrations/*.sql; do
  psql "$server/$db" -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null
done
out=$PWD/.sqlx
[ "${1:-}" = "--check" ] && out=$(mktemp -d)
rm -rf "$out"/query-*.json
mkdir -p "$out"
# Touch the crates that use query macros so they are expanded again against the live schema.
touch crates/store/src/lib.rs
SQLX_OFFLINE=false DATABASE_URL="$server/$db" SQLX_OFFLINE_DIR="$out" \
  cargo check --workspace --all-targets --quiet
psql "$server/postgres" -qAt -c "DROP DATABASE IF EXISTS $db" >/dev/null
if [ "${1:-}" = "--check" ]; then
  diff -r "$out" .sqlx || { echo ".sqlx is stale: run scripts/sqlx-prepare.sh and commit .sqlx/"; exit 1; }
  rm -rf "$out"
  echo ".sqlx is up to date"
else
  echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
fi
