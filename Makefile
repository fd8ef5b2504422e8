# Two commands do everything: `make demo` and `make test`. Both create the virtualenv if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := runs/demo

.PHONY: install browser demo test lint benchmark clean

install: $(STAMP)

# constraints.txt: the exact tested versions of every package (pyproject.toml holds ranges).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,ray,postgres]"
	touch $(STAMP)

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/automl search --data builtin:digits --out $(DEMO_DIR) \
		--space search_spaces/tabular.yaml --trials 25 --time-budget 150 --seed 0
	$(BIN)/automl ensemble $(DEMO_DIR)
	$(BIN)/automl report $(DEMO_DIR)
	$(BIN)/automl predict $(DEMO_DIR) --data builtin:digits --out $(DEMO_DIR)/predictions.csv

# The report tests open report.html in Debian's Chromium (driven by playwright).
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
		$$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium >/dev/null; }

# PostgreSQL (Debian's) on loopback for the study-in-PostgreSQL tests. Two pytest workers, one
# test file each at a time: many tests wait on subprocesses, Ray or a browser, so two halve the
# wall time on 2 cores; the Ray tests share one file, so never two Ray clusters at once.
test: install browser
	$(BIN)/ruff check automl scripts tests
	$(BIN)/ruff format --check automl scripts tests
	$(BIN)/mypy
	AUTOML_TEST_POSTGRES_URL=$$(sh scripts/postgres_for_tests.sh) \
		$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15
	bash scripts/wheel_check.sh

lint: install
	$(BIN)/ruff check automl scripts tests
	$(BIN)/ruff format --check automl scripts tests
	$(BIN)/mypy

benchmark: install
	$(BIN)/python scripts/benchmark.py --budget 120 \
		../shared/data/credit_g.csv.gz:class ../shared/data/phoneme.csv.gz:Class

clean:
	rm -rf $(VENV) runs .pytest_cache
