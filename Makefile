# Two commands do all the set-up on a fresh machine:
#   make demo   install into .venv (if needed) and run the whole pipeline on config.yaml
#   make test   install into .venv (if needed) and run the test suite
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
GPUS ?= 1
BIN := $(VENV)/bin
# The CPU install path pins torch to the wheel on this machine's disk (never the CUDA build);
# GPU users install with plain `pip install -e .` and get the torch range from pyproject.toml.
CONSTRAINTS ?= constraints-cpu.txt
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo resume test lint format dry-run clean-results

$(BIN)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/snakemake --cores $(CORES) --resources gpu=$(GPUS)
	@echo
	@$(BIN)/python -m attribution findings --report-command "$(BIN)/snakemake --report results/report.html"

# Bring back a run that was killed (kill -9, a dropped login session, a node failure): removes
# Snakemake's stale lock only when no Snakemake process of this directory is alive, then reruns
# (incomplete outputs are redone; generation shards and fine-tuning checkpoints are kept).
# Arguments of the run, e.g. `make resume ARGS="--configfile presets/olmo2-7b.yaml"`.
ARGS ?=
resume: install
	$(BIN)/python -m attribution.resume --cores $(CORES) --resources gpu=$(GPUS) $(ARGS)

# Extra pytest arguments, e.g. `make test PYTEST_ARGS=--slurm` (needs tests/slurm/up.sh first).
PYTEST_ARGS ?=
test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

dry-run: install
	$(BIN)/snakemake -n --cores $(CORES) --resources gpu=$(GPUS)

# results/README.md is tracked (results/ is part of the layout): everything else goes.
clean-results:
	rm -rf data/raw data/prompts data/references models logs benchmarks_out .snakemake
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
