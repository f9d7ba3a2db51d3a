#!/usr/bin/env bash
# Run once by the postgres image when it creates the cluster (docker-entrypoint-initdb.d).
# Creates Grafana's login, which may read every table and view the services create later (the
# migrations run as $POSTGRES_USER when the sink and webhook start) and change nothing.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" -v password="${GRAFANA_DB_PASSWORD:-grafana}" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'password';
GRANT CONNECT ON DATABASE :"db" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
-- Tables and views created later by the owner (the migrations) are readable, nothing more.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
-- Grafana panels run arbitrary SQL: cap them so a heavy query cannot hold the database.
ALTER ROLE grafana_reader SET statement_timeout = '30s';
SQL
