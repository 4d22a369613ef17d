#!/bin/sh
# One-shot (service temporal-schema): create Temporal's two Postgres databases, persistence and
# visibility, and bring both schemas up to the version this admin-tools image ships.
# Every step is safe to repeat, so re-running it on a kept volume (or after upgrading the
# admin-tools and server images together) only applies the migrations that are missing.
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"  # temporal-sql-tool reads the password from here
DB_PORT=${DB_PORT:-5432}
DBNAME=${DBNAME:-temporal}
VISIBILITY_DBNAME=${VISIBILITY_DBNAME:-temporal_visibility}
SCHEMA_DIR=${SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

setup_database() {
  database=$1
  versioned=$2
  echo "temporal-schema: database $database"
  # `create` fails when the database already exists (a restart on a kept volume); a real
  # connection problem makes setup-schema fail right after, so nothing is hidden.
  sql_tool --db "$database" create || echo "temporal-schema: $database exists"
  sql_tool --db "$database" setup-schema -v 0.0
  sql_tool --db "$database" update-schema -d "$versioned"
}

setup_database "$DBNAME" "$SCHEMA_DIR/temporal/versioned"
setup_database "$VISIBILITY_DBNAME" "$SCHEMA_DIR/visibility/versioned"
echo "temporal-schema: done"
