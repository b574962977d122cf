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

# Debian packages the tests run for real (clamd, Dovecot, Chromium, poppler's
# pdftoppm/pdftotext for the report PDF, systemd-analyze for the unit file, the
# PostgreSQL server for the store's second engine), each as package:the file it
# installs (a glob where the path names a version). Needs root; only the missing
# ones are installed.
DEBS := clamav-daemon:/usr/sbin/clamd dovecot-imapd:/usr/sbin/dovecot \
        chromium:/usr/bin/chromium poppler-utils:/usr/bin/pdftoppm \
        systemd:/usr/bin/systemd-analyze 'postgresql:/usr/lib/postgresql/*/bin/initdb'
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

bench: $(STAMP)
	$(BIN)/python bench/smtp_ingest.py --write
	$(BIN)/python bench/smtp_ingest.py --scan --count 400 --concurrency 1,8 --write
	$(BIN)/python bench/outbox.py --write

clean:
	rm -rf $(VENV) var .pytest_cache
