# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint check bench clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway run --config gateway.toml

# Debian packages the tests run for real (clamd). Needs root; skipped when present.
system-deps:
	@if ! command -v clamd >/dev/null 2>&1 && [ ! -x /usr/sbin/clamd ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clamav-daemon >/dev/null; \
	  else \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clamav-daemon >/dev/null; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/smtp_ingest.py --write
	$(BIN)/python bench/smtp_ingest.py --scan --count 400 --concurrency 1,8 --write
	$(BIN)/python bench/outbox.py --write

clean:
	rm -rf $(VENV) var .pytest_cache
