# Two commands on a fresh machine (Python 3.11, git, Node/npm, apt):
#   make book   set everything up and build the book into _build/html
#   make test   set everything up and run every test (what CI runs: .ci/run)
# Helpers: make refresh [NB=book/x.ipynb], make student, make clean.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NOTEBOOKS := $(sort $(wildcard book/*.ipynb))
export BOOK_TORCH_THREADS ?= 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: llvm setup book test lint unit notebooks build-html browser student student-test student-run refresh clean

## ---- set-up (idempotent; re-runs only what changed) -------------------------
setup: $(VENV)/.installed node_modules/.installed book/_static/vendor/.installed chromium llvm

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

book/_static/vendor/.installed: node_modules/.installed scripts/vendor_assets.py
	$(BIN)/python scripts/vendor_assets.py
	touch $@

chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

# Sionna RT's CPU back end (Dr.Jit) needs LLVM 19: Debian's libllvm19 (older ones crash).
llvm:
	@ls /usr/lib/*-linux-gnu/libLLVM-19.so* >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libllvm19 >/dev/null; }

## ---- the book -----------------------------------------------------------------
book: setup
	$(BIN)/jupyter-book build . -W -n --keep-going
	@echo "The book is in _build/html: open $(CURDIR)/_build/html/index.html"

## ---- all tests (CI runs exactly this) ------------------------------------------
test: setup
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory lint unit notebooks build-html student-test browser; \
	echo "make test: all stages passed in $$(( $$(date +%s) - start )) s"

lint:
	$(BIN)/ruff check lib tests scripts benchmarks book

# Two workers: the machine has 2 cores and every worker uses one torch thread.
unit:
	$(BIN)/pytest tests --ignore=tests/browser --ignore=tests/student -q -n 2

notebooks:
	$(BIN)/pytest --nbval-lax --sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS) -q \
	  -n 2 --dist loadfile

build-html:
	rm -rf _build/html _build/.doctrees
	$(BIN)/jupyter-book build . -W -n --keep-going

student:
	$(BIN)/python scripts/make_student.py --out _build/student

student-test: student
	$(BIN)/pytest tests/student -q

# Also execute every student notebook up to its first stub (doubles notebook time).
student-run: student
	BOOK_STUDENT_EXECUTE=1 $(BIN)/pytest tests/student -q -n 2

browser:
	$(BIN)/pytest tests/browser -q

## ---- helpers ------------------------------------------------------------------
refresh: $(VENV)/.installed
	$(BIN)/python scripts/refresh_notebooks.py $(NB)

clean:
	rm -rf _build book/_static/vendor
