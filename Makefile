# manage: the two commands of the README are `make sync` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: sync test fuzz servers bench docs clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,postgresql,doc]'
	touch $@

## sync: install into .venv and upgrade the default SQLite database
sync: $(STAMP)
	$(BIN)/manage db sync

## servers: install MariaDB and PostgreSQL for the tests (apt, as root)
servers:
	bash tools/install-db-servers.sh

## test: the whole suite against SQLite, MariaDB and PostgreSQL, in
## TEST_WORKERS processes (pytest-xdist; each starts its own servers)
TEST_WORKERS ?= 3
test: $(STAMP) servers
	$(BIN)/ruff check manage tests bench
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) tests

## fuzz: the property tests of column sync at length (HYPOTHESIS_PROFILE=fuzz:
## SYNC_FUZZ_EXAMPLES examples per engine and property, default 3000)
fuzz: $(STAMP) servers
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider \
		--hypothesis-show-statistics tests/test_sync_properties.py

## bench: the benchmark suite (not part of `make test`): MariaDB, PostgreSQL and
## pt-online-schema-change on BENCH_ROWS rows (default 1000000); writes
## bench/results.json and doc/benchmarks.md
bench: $(STAMP)
	bash tools/install-db-servers.sh
	$(BIN)/python -m bench.run

docs: $(STAMP)
	$(BIN)/sphinx-build -q -W -b html doc doc/_build/html

clean:
	rm -rf $(VENV) doc/_build manage.sqlite manage.sqlite.manage-lock
