# Every target sets itself up: a fresh clone needs only `make quickstart` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch first, pinned: a bare `torch` requirement could pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: setup quickstart adaptation-demo test test-fast lint format bench cluster cluster-stop clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

quickstart: setup
	$(BIN)/causeway train

# The paper's pipeline at tiny scale: report and plots in runs/adaptation-demo/.
adaptation-demo: setup
	$(BIN)/causeway demo adaptation --out runs/adaptation-demo

# The launcher tests need a real Slurm: started here when we are root (it apt-installs
# slurm-wlm + munge if missing) and stopped after; without it those tests skip saying why.
test: setup
	@if [ "$$(id -u)" = 0 ]; then bash slurm/local-cluster.sh start >/dev/null || \
	  echo "make test: the local Slurm did not start (see above); its tests will skip"; fi
	$(BIN)/python -m pytest -q -n 2 --durations=25; status=$$?; \
	  if [ "$$(id -u)" = 0 ]; then bash slurm/local-cluster.sh stop 2>/dev/null; fi; exit $$status

test-fast: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python benchmarks/model_step.py

# The real one-host Slurm the launcher tests use (root; apt-installs slurm-wlm + munge).
cluster:
	bash slurm/local-cluster.sh start

cluster-stop:
	bash slurm/local-cluster.sh stop

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
