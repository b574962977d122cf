# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Two installs, each with its stamp: `make run` needs only the gateway's own
# dependencies; `make test` (and lint, bench) adds the test extras (pytest,
# Playwright, ruff, hypothesis, ...). The test install includes the run one, so
# `make run` after `make test` installs nothing. pip's output goes to a log, shown
# only when the install fails.
STAMP     := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
PIP       := $(BIN)/pip --disable-pip-version-check install --quiet
PIP_LOG   := $(VENV)/pip.log

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "installing the gateway into $(VENV) (log: $(PIP_LOG))"
	@$(PIP) -e . >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing the gateway and its test tools into $(VENV) (log: $(PIP_LOG))"
	@$(PIP) -e '.[test]' >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@touch $@ $(RUN_STAMP)

# The daemon's log (JSON lines) goes to var/gateway.log; the terminal shows its
# one ready line: where to send mail, the web pages, how to watch outgoing mail.
# If it exits with an error, what this run wrote that is not a JSON event (the
# command's one-line error, a traceback) is shown.
run: $(RUN_STAMP)
	@mkdir -p var
	@from=$$(( $$(stat -c %s var/gateway.log 2>/dev/null || echo 0) + 1 )); \
	$(BIN)/gateway run --config gateway.toml 2>>var/gateway.log || { code=$$?; \
	  tail -c +$$from var/gateway.log | grep -v '^{' >&2; \
	  echo "gateway exited $$code; its log: var/gateway.log" >&2; exit $$code; }

# Debian packages the tests run for real (clamd, Dovecot, Chromium, poppler's
# pdftoppm/pdftotext for the report PDF, systemd-analyze for the unit file, the
# PostgreSQL server for the store's second engine, the age CLI that opens a
# backup without the gateway, dnsmasq (dnsmasq-base: the binary, no system service)
# as the DNS server of the SPF/DKIM/DMARC tests, Postfix as the MTA that hands mail
# to the LMTP listener and the benchmark's reference, run privately by
# bench/postfix.py: the preseed keeps the package from configuring or starting a
# system instance), each as package:the file it installs (a glob where the path
# names a version). Needs root; only the missing ones are installed.
DEBS := clamav-daemon:/usr/sbin/clamd dovecot-imapd:/usr/sbin/dovecot dnsmasq-base:/usr/sbin/dnsmasq \
        chromium:/usr/bin/chromium poppler-utils:/usr/bin/pdftoppm \
        systemd:/usr/bin/systemd-analyze 'postgresql:/usr/lib/postgresql/*/bin/initdb' \
        age:/usr/bin/age postfix:/usr/sbin/postfix
system-deps:
	@missing=$$(for d in $(DEBS); do \
	  found=; for f in $${d#*:}; do [ -x "$$f" ] && found=1; done; \
	  [ -n "$$found" ] || echo "$${d%%:*}"; done); \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "postfix postfix/main_mailer_type select No configuration" | $$SUDO debconf-set-selections && \
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
# Adds the bench extras (py-spy) and the Debian package only the benchmark uses: wrk
# (Postfix, the reference MTA, comes with the tests' packages above).
BENCH_DEBS := wrk
bench-deps: $(STAMP) system-deps
	@$(PIP) -e '.[test,bench,fast]' >$(PIP_LOG) 2>&1 || { cat $(PIP_LOG); exit 1; }
	@if ! command -v wrk >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEBS) >/dev/null; \
	fi

bench: bench-deps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
