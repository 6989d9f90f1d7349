#!/usr/bin/env bash
# `make run` after the pipeline: the Dagster UI, the API (with the web form and its docs) and the
# MLflow UI on loopback until Ctrl-C.
#
# Honest start-up: it fails loudly (a one-line reason on stderr, exit 1, everything it started
# stopped) when a port is already taken before it starts anything, when a service it started
# exits, or when one never answers within RUN_TIMEOUT seconds (default 180); it prints the banner
# only when every service answers, and checks that the API port is held by the process it started
# (not by something else answering there).
#
#   run_local.sh [HOST] [UI_PORT] [API_PORT] [MLFLOW_PORT]      (VENV: the virtualenv, default .venv)
set -euo pipefail
set -m  # own process groups, so each service and its children stop together
HOST="${1:-127.0.0.1}"; UI_PORT="${2:-3000}"; API_PORT="${3:-8000}"; MLFLOW_PORT="${4:-5000}"
VENV="${VENV:-.venv}"
TIMEOUT="${RUN_TIMEOUT:-180}"
: "${TRIAGE_HOME:?set TRIAGE_HOME (make run does)}"
keys_file="$TRIAGE_HOME/secrets/api-keys"
mlflow_db="$TRIAGE_HOME/mlflow/mlflow.db"

fail() { echo "make run: error: $*" >&2; exit 1; }
port_taken() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# 1. every port free, before anything starts
for spec in "API:$API_PORT" "Dagster UI:$UI_PORT" "MLflow UI:$MLFLOW_PORT"; do
  name="${spec%:*}"; port="${spec##*:}"
  if port_taken "$port"; then
    fail "port $port on $HOST (for the $name) is already in use by another process; stop it, or choose other ports: make run API_PORT=... UI_PORT=... MLFLOW_PORT=..."
  fi
done

if [[ -z "${TRIAGE_API_KEYS:-}" ]]; then
  if [[ ! -s "$keys_file" ]]; then
    mkdir -p "$(dirname "$keys_file")"
    (umask 077; "$VENV/bin/python" -c 'import secrets; print(",".join(f"{r}:{secrets.token_urlsafe(24)}" for r in ("clinician","auditor","admin")))' > "$keys_file")
  fi
  TRIAGE_API_KEYS="$(cat "$keys_file")"
  export TRIAGE_API_KEYS
  keys_where="$keys_file"
else
  keys_where="the TRIAGE_API_KEYS environment variable"
fi
clinician_token="$(tr ',' '\n' <<<"$TRIAGE_API_KEYS" | sed -n 's/^clinician://p' | head -1)"

pids=(); names=(); urls=(); logs=(); ports=()
stop() { for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT
trap "exit 0" INT TERM

start() {  # name, port, ready URL, log, command...
  names+=("$1"); ports+=("$2"); urls+=("$3"); logs+=("$4")
  local log="$4"; shift 4
  "$@" >"$log" 2>&1 &
  pids+=($!)
}

# 2. start the services
mkdir -p "$TRIAGE_HOME/mlflow"
start "Dagster UI" "$UI_PORT" "http://$HOST:$UI_PORT/server_info" "$TRIAGE_HOME/dagster-ui.log" \
  "$VENV/bin/dagster" dev -w workspace.yaml -h "$HOST" -p "$UI_PORT"
start "API" "$API_PORT" "http://$HOST:$API_PORT/ready" "$TRIAGE_HOME/api.log" \
  "$VENV/bin/triage" serve --host "$HOST" --port "$API_PORT" --workers "${API_WORKERS:-2}"
start "MLflow UI" "$MLFLOW_PORT" "http://$HOST:$MLFLOW_PORT/health" "$TRIAGE_HOME/mlflow-ui.log" \
  "$VENV/bin/mlflow" ui --backend-store-uri "sqlite:///$mlflow_db" --host "$HOST" --port "$MLFLOW_PORT"

# the process group holding a listening port (empty when unknown)
listener_group() {
  command -v ss >/dev/null || return 0
  local pid
  pid="$(ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)"
  if [[ -n "$pid" ]]; then ps -o pgid= -p "$pid" | tr -d ' '; fi
}

# 3. wait until each answers, while checking that each is still running
echo "make run: waiting for the Dagster UI, the API and the MLflow UI (up to ${TIMEOUT}s)..."
up=()
for ((second = 0; second <= TIMEOUT; second++)); do
  missing=()
  for i in "${!names[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "--- last lines of ${logs[$i]}:" >&2; tail -n 15 "${logs[$i]}" >&2 || true
      fail "the ${names[$i]} exited during start-up (log: ${logs[$i]})"
    fi
    if [[ -z "${up[$i]:-}" ]]; then
      if curl -fsS -o /dev/null --max-time 2 "${urls[$i]}" 2>/dev/null; then up[$i]=1; else missing+=("${names[$i]}"); fi
    fi
  done
  ((${#missing[@]} == 0)) && break
  sleep 1
done
if ((${#missing[@]})); then
  hint=""
  [[ " ${missing[*]} " == *" API "* ]] && hint=" (the API answers /ready only with a model: see ${logs[1]})"
  fail "never came up within ${TIMEOUT}s: ${missing[*]}$hint"
fi
# the API's answers come from the process started here (its workers are in its process group)
group="$(listener_group "$API_PORT")"
if [[ -n "$group" && "$group" != "${pids[1]}" ]]; then
  fail "port $API_PORT is answered by process group $group, not by the API started here (${pids[1]})"
fi

cat <<INFO

  Web form      http://$HOST:$API_PORT/              (paste the clinician token below; English / español)
  API docs      http://$HOST:$API_PORT/schema        (Redoc; Swagger UI with Authorize: /schema/swagger)
  Dagster UI    http://$HOST:$UI_PORT                (asset graph, runs, checks)
  MLflow UI     http://$HOST:$MLFLOW_PORT                (runs, metrics, registered models; store: $mlflow_db)
  API tokens    $keys_where
  Logs          $TRIAGE_HOME/api.log, dagster-ui.log, mlflow-ui.log

  Try a prediction (febrile patient with cough):

  curl -s -X POST 'http://$HOST:$API_PORT/v1/predict?top_k=5' \\
    -H 'Authorization: Bearer $clinician_token' -H 'Content-Type: application/json' \\
    -d '{"age": 34, "sex": "female", "heart_rate": 104, "body_temperature": 39.2, "systolic_bp": 118, "diastolic_bp": 76, "symptoms": ["HP:0001945", "HP:0012735", "HP:0003326"]}'

  Ctrl-C stops all three.
INFO
wait
