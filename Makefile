# Two commands for a newcomer: `make run` (everything, then UI + API) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
VENV := .venv
UV := .uv/bin/uv

export TRIAGE_HOME ?= $(CURDIR)/.triage
export DAGSTER_HOME ?= $(TRIAGE_HOME)/dagster
# Two cores: one OpenMP thread per process (see README, "Performance notes").
export OMP_NUM_THREADS ?= 1
export OMP_WAIT_POLICY ?= PASSIVE
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

HOST ?= 127.0.0.1
API_PORT ?= 8000
UI_PORT ?= 3000
MLFLOW_PORT ?= 5000
# One API worker per core: a prediction is CPU-bound (README, "Where an API request's time goes").
API_WORKERS ?= 2
export API_WORKERS

.PHONY: install pipeline serve ui mlflow run test test-reliability lint bench-validate bench-model bench-real bench-api bench-inprocess bench-pipeline fit-ranker clean help

help:
	@echo "make run       install, run the pipeline, then start the Dagster UI, the API and the MLflow UI"
	@echo "               (the pipeline keeps the deployed model when nothing changed; RETRAIN=1 forces training)"
	@echo "make test      install, check imports and style (make lint), run the whole test suite"
	@echo "make lint      import-linter contracts, ruff check and ruff format --check"
	@echo "make test-reliability  faults, load and hostile input (kill -9, bad weeks, labels); not in make test"
	@echo "make install   create .venv from uv.lock"
	@echo "make pipeline  seed demo data if needed, validate, train and deploy (headless; RETRAIN=1 as above)"
	@echo "make serve     start the API on $(HOST):$(API_PORT)"
	@echo "make ui        start the Dagster UI on $(HOST):$(UI_PORT)"
	@echo "make mlflow    start the MLflow UI on $(HOST):$(MLFLOW_PORT) over the local SQLite store"
	@echo "make bench-real  the differential on real published cases (README, Real patients)"

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-extras --python "$(PYTHON)"
	@touch $@

install: $(VENV)/.installed

# the current deployment is kept when nothing that determines the model changed; RETRAIN=1 trains
pipeline: install
	$(VENV)/bin/triage pipeline $(if $(filter-out 0 no false,$(RETRAIN)),--retrain)

serve: install
	$(VENV)/bin/triage serve --host $(HOST) --port $(API_PORT) --workers $(API_WORKERS)

ui: install
	$(VENV)/bin/dagster dev -w workspace.yaml -h $(HOST) -p $(UI_PORT)

# the MLflow UI over the store the pipeline writes to by default (TRIAGE_HOME/mlflow/mlflow.db)
mlflow: install
	@mkdir -p "$(TRIAGE_HOME)/mlflow"
	$(VENV)/bin/mlflow ui --backend-store-uri "sqlite:///$(TRIAGE_HOME)/mlflow/mlflow.db" --host $(HOST) --port $(MLFLOW_PORT)

run: pipeline
	@bash orchestration/run_local.sh "$(HOST)" "$(UI_PORT)" "$(API_PORT)" "$(MLFLOW_PORT)"

# the import contracts and ruff first (seconds), then the suite; the reliability suite (minutes of
# real processes killed and restarted) runs on its own: make test-reliability
test: lint
	$(VENV)/bin/pytest -m "not reliability"

# fault, load and hostile-input checks (tests/reliability); -s shows each test's printed counts
test-reliability: install
	$(VENV)/bin/pytest -m reliability tests/reliability -s -rA

lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench-validate: install
	$(VENV)/bin/python tests/benchmarks/bench_validate.py

bench-model: install
	$(VENV)/bin/python tests/benchmarks/bench_model.py --seed 11 --cases 1000

# real published cases through the served runtime, baselines, ablations, targets (README)
bench-real: install
	$(VENV)/bin/python tests/benchmarks/bench_real.py $(BENCH_REAL_ARGS)

# refit the ranker's generic weights on the development cases (grouped CV figures printed)
fit-ranker: install
	$(VENV)/bin/python tests/benchmarks/fit_ranker.py --cv

# the API under wrk load, one worker (issue 13's targets), with the cost model of a request;
# BENCH_API_ARGS="--workers 2" for the shipped worker count, --compare adds granian
bench-api: install
	$(VENV)/bin/python tests/benchmarks/bench_api.py --home "$(TRIAGE_HOME)" $(BENCH_API_ARGS)

# the cost model in process: each stage of a prediction beside its limit, batch throughput
bench-inprocess: install
	$(VENV)/bin/python tests/benchmarks/bench_inprocess.py --home "$(TRIAGE_HOME)"

# the whole pipeline on N simulated patients, per asset (README, "Hospital scale");
# BENCH_PIPELINE_ARGS="--patients 10000" for one size, "--million" adds 1 M
bench-pipeline: install
	$(VENV)/bin/python tests/benchmarks/bench_pipeline.py $(BENCH_PIPELINE_ARGS)

clean:
	rm -rf $(TRIAGE_HOME)
