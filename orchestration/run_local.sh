#!/usr/bin/env bash
# `make run` after the pipeline: Dagster UI + API on loopback until Ctrl-C.
set -euo pipefail
set -m  # own process groups, so each service and its children stop together
HOST="${1:-127.0.0.1}"; UI_PORT="${2:-3000}"; API_PORT="${3:-8000}"
VENV=".venv"
keys_file="$TRIAGE_HOME/secrets/api-keys"

if [[ -z "${TRIAGE_API_KEYS:-}" ]]; then
  if [[ ! -s "$keys_file" ]]; then
    mkdir -p "$(dirname "$keys_file")"
    (umask 077; "$VENV/bin/python" -c 'import secrets; print(",".join(f"{r}:{secrets.token_urlsafe(24)}" for r in ("clinician","auditor","admin")))' > "$keys_file")
  fi
  TRIAGE_API_KEYS="$(cat "$keys_file")"
  export TRIAGE_API_KEYS
fi
clinician_token="$(tr ',' '\n' <<<"$TRIAGE_API_KEYS" | sed -n 's/^clinician://p' | head -1)"

pids=()
stop() { for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop EXIT
trap "exit 0" INT TERM

"$VENV/bin/dagster" dev -w workspace.yaml -h "$HOST" -p "$UI_PORT" >"$TRIAGE_HOME/dagster-ui.log" 2>&1 &
pids+=($!)
"$VENV/bin/triage" serve --host "$HOST" --port "$API_PORT" --workers "${API_WORKERS:-2}" >"$TRIAGE_HOME/api.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 120); do
  if curl -fsS "http://$HOST:$API_PORT/ready" >/dev/null 2>&1 && curl -fsS "http://$HOST:$UI_PORT/server_info" >/dev/null 2>&1; then break; fi
  sleep 1
done

cat <<INFO

  Dagster UI    http://$HOST:$UI_PORT        (asset graph, runs, checks; log: $TRIAGE_HOME/dagster-ui.log)
  API docs      http://$HOST:$API_PORT/schema  (OpenAPI: /schema/openapi.json; log: $TRIAGE_HOME/api.log)
  API tokens    $keys_file

  Try a prediction (febrile patient with cough):

  curl -s -X POST 'http://$HOST:$API_PORT/v1/predict?top_k=5' \\
    -H 'Authorization: Bearer $clinician_token' -H 'Content-Type: application/json' \\
    -d '{"age": 34, "sex": "female", "heart_rate": 104, "body_temperature": 39.2, "systolic_bp": 118, "diastolic_bp": 76, "symptoms": ["HP:0001945", "HP:0012735", "HP:0003326"]}'

  Ctrl-C stops both services.
INFO
wait
