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
# pdftoppm/pdftotext for the report PDF, systemd-analyze for the unit file), each
# as package:the file it installs. Needs root; only the missing ones are installed.
DEBS := clamav-daemon:/usr/sbin/clamd dovecot-imapd:/usr/sbin/dovecot \
        chromium:/usr/bin/chromium poppler-utils:/usr/bin/pdftoppm \
        systemd:/usr/bin/systemd-analyze
system-deps:
	@missing=$$(for d in $(DEBS); do [ -x "$${d#*:}" ] || echo "$${d%%:*}"; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
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
