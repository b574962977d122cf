# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint check bench bench-deps clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway run --config gateway.toml

# Debian packages the tests run for real (clamd, Dovecot, Chromium, poppler's
# pdftoppm/pdftotext for the report PDF, systemd-analyze for the unit file, the
# PostgreSQL server for the store's second engine, the age CLI that opens a
# backup without the gateway), each as package:the file it
# installs (a glob where the path names a version). Needs root; only the missing
# ones are installed.
DEBS := clamav-daemon:/usr/sbin/clamd dovecot-imapd:/usr/sbin/dovecot \
        chromium:/usr/bin/chromium poppler-utils:/usr/bin/pdftoppm \
        systemd:/usr/bin/systemd-analyze 'postgresql:/usr/lib/postgresql/*/bin/initdb' \
        age:/usr/bin/age
system-deps:
	@missing=$$(for d in $(DEBS); do \
	  found=; for f in $${d#*:}; do [ -x "$$f" ] && found=1; done; \
	  [ -n "$$found" ] || echo "$${d%%:*}"; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The whole suite on SQLite, then the store-facing tests again on PostgreSQL (a
# private cluster the tests start; tests/conftest.py names the SQLite-only files).
test: $(STAMP) system-deps lint
	$(BIN)/pytest -q
	GATEWAY_TEST_DB=postgresql $(BIN)/pytest -q

# Benchmarks (issue #9): never in CI (a smoke run is, in tests/test_bench_smoke.py).
# Adds the bench extras (py-spy) and the Debian packages only the benchmark uses:
# postfix (the reference MTA, run privately by bench/postfix.py; the preseed keeps
# the package from configuring or starting a system instance) and wrk.
BENCH_DEBS := postfix wrk
bench-deps: $(STAMP) system-deps
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@if [ ! -x /usr/sbin/postfix ] || ! command -v wrk >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections && \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEBS) >/dev/null; \
	fi

bench: bench-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
