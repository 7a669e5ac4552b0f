# The two commands of the README: `make run` and `make test`.  Both set up everything they need
# on a fresh Debian 12 machine (as root): apt packages, the .venv, the project itself.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` keeps its demo state (CA, audit DB, simulated devices) inside the checkout.
STATION_HOME ?= $(CURDIR)/.station-home
export STATION_HOME

# Everything a line PC and the simulated devices need, in one place (see packaging/apt-packages.txt).
APT_PACKAGES := $(shell grep -v '^\#' packaging/apt-packages.txt)

.PHONY: run test setup apt venv lint pytest sim-down clean dist soak zpl-renderer

run: setup
	@test -f "$(STATION_HOME)/ca/ca.cert" || { echo "First run: create the demo station's CA (choose a passphrase of 8+ characters)"; \
	  $(BIN)/station ca init; }
	-@$(BIN)/station sim down >/dev/null 2>&1
	$(BIN)/station sim up --count 4
	$(BIN)/station gui

test: setup zpl-renderer lint pytest

setup: apt venv

# Install only what is missing, so a machine that has everything does not touch the network.
# The OP-TEE boards (station sim up --kind optee) boot Debian's arm64 kernel and u-boot: dpkg needs
# the arm64 architecture (added once, then the package lists are refreshed).
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	arm64=$$(dpkg --print-foreign-architectures | grep -qx arm64 || echo add); \
	if [ -n "$$missing$$arm64" ] && [ "$$(id -u)" != 0 ]; then \
	  echo "error: installing system packages (or adding dpkg's arm64 architecture) needs root (run as root or with sudo)"; exit 1; fi; \
	if [ -n "$$arm64" ]; then echo "Adding dpkg's arm64 architecture (for the OP-TEE boards' kernel)"; dpkg --add-architecture arm64; fi; \
	if [ -n "$$missing$$arm64" ]; then apt-get update -qq; fi; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:" $$missing; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.stamp-installed

$(VENV)/.stamp-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,packaging]'
	touch $@

# The tests render ZPL labels offline with zpl-renderer-js (IngridHQ's zebrash as WebAssembly), pinned by
# tests/line/zpl_render/package-lock.json.  Debian's npm only where no npm exists (NodeSource's nodejs has its own).
ZPL_RENDERER := tests/line/zpl_render
zpl-renderer: $(ZPL_RENDERER)/node_modules/.package-lock.json

$(ZPL_RENDERER)/node_modules/.package-lock.json: $(ZPL_RENDERER)/package-lock.json
	@command -v npm >/dev/null || { echo "Installing system packages: npm"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm; }
	npm ci --prefix $(ZPL_RENDERER) --no-audit --no-fund --loglevel=error

lint:
	$(BIN)/ruff check station ui tests bench packaging
	$(BIN)/ruff format --check station ui tests bench packaging
	$(BIN)/mypy --strict station
	$(BIN)/lint-imports

# The soak (1 000 units, seeded faults, random kills) runs only under `make soak`.  CI's log ends with the 30
# slowest tests and set-ups: where the next minute of CI time is.
pytest:
	$(BIN)/python -m pytest -q --durations=30 --ignore=tests/soak tests

soak: setup
	STATION_SOAK=1 $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/soak

# The line PC's bundle (packaging/station.spec): dist/station/ with `station`, `station-gui`, Python, Qt and the
# desktop integration; copy the folder to a line PC and run its install.sh (README, "Administrator's guide").
dist: setup
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/station.spec

sim-down:
	$(BIN)/station sim down

clean:
	-$(BIN)/station sim down
	rm -rf $(VENV) build dist *.egg-info
