# Two commands on a fresh machine: `make run` (the studio) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# `=`, not `?=`: a PORT or HOST already in the environment (containers and shells often export one) must not win
# over HUMO_PORT / HUMO_HOST; `make run PORT=8080` on the command line still does.
HOST = $(or $(HUMO_HOST),127.0.0.1)
PORT = $(or $(HUMO_PORT),7860)

.PHONY: run test lint format clean-venv chromium postgresql

$(VENV)/.installed: requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	touch $@

run: $(VENV)/.installed
	$(PY) app.py --host $(HOST) --port $(PORT)

# Browser tests drive Debian's chromium (never a downloaded browser); install it when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: install Debian's chromium package for the browser tests"; fi; }
	@command -v ffprobe >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null; \
	  else echo "ffprobe missing: Gradio's streaming video (Generate live) needs Debian's ffmpeg package"; fi; }

# The store's tests start a PostgreSQL server of their own from Debian's binaries (tests/postgres.py), never the
# package's system cluster or service. Install the binaries when missing.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; \
	  else echo "PostgreSQL missing: install Debian's postgresql package for the store's tests"; fi; }

test: $(VENV)/.installed-test chromium postgresql
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed-test
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
