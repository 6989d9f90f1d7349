#!/usr/bin/env bash
# Creates the Dagster and MLflow databases on a fresh PostgreSQL data directory.
#
# Mounted into the postgres service at /docker-entrypoint-initdb.d/ (docker-compose.yml): the image
# runs it once, as the superuser, when the data directory is empty. Each database, its owner and
# the owner's password are read from the connection URL the services themselves use, so the env
# file states them once:
#   DAGSTER_PG_URL              postgresql+psycopg2://dagster:PASSWORD@postgres:5432/dagster
#   TRIAGE_MLFLOW_TRACKING_URI  postgresql+psycopg2://mlflow:PASSWORD@postgres:5432/mlflow
# A password with characters that are special in URLs (@ : / % ...) must be percent-encoded there;
# it is decoded here. Values reach psql as variables (:"name" and :'literal'), never spliced into
# SQL text.
set -euo pipefail

url_decode() {  # %XX escapes only (userinfo and path of a URL; "+" stays "+")
  local value="${1//\\/\\\\}"
  printf '%b' "${value//%/\\x}"
}

create_database() {
  local variable="$1" url="${!1:-}"
  local pattern='^postgres(ql)?(\+[A-Za-z0-9_]+)?://([^:@/]+):([^@/]+)@[^/]+/([^/?]+)'
  if [[ -z "$url" ]]; then
    echo "postgres-init: $variable is not set" >&2
    return 1
  fi
  if [[ ! "$url" =~ $pattern ]]; then
    echo "postgres-init: $variable is not postgresql://USER:PASSWORD@HOST[:PORT]/DATABASE" >&2
    return 1
  fi
  local user password database
  user="$(url_decode "${BASH_REMATCH[3]}")"
  password="$(url_decode "${BASH_REMATCH[4]}")"
  database="$(url_decode "${BASH_REMATCH[5]}")"
  echo "postgres-init: role and database \"$database\" owned by \"$user\" (from $variable)"
  psql --no-psqlrc --set ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" \
    --dbname postgres --set role="$user" --set password="$password" --set db="$database" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
}

create_database DAGSTER_PG_URL
create_database TRIAGE_MLFLOW_TRACKING_URI
