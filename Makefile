# memberbot — `make run` serves the demo on the embedded default; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test test-fast bench lint format migrations sim clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	DEMO=1 $(BIN)/memberbot serve --migrate --seed-demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)  # the inner loop: everything but the tests marked slow
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" -n 2

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy bot webhooks handlers models

migrations: $(STAMP)
	$(BIN)/python -m tortoise -c bot.orm.TORTOISE_ORM makemigrations

sim: $(STAMP)
	$(BIN)/memberbot wechat-sim

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
