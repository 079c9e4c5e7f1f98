# Two commands for a fresh Debian machine (as root): `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
FMNIST  ?= /usr/share/datasets/fashion-mnist
STAMP   := $(VENV)/.installed-stamp

.PHONY: setup data browser demo dashboard test lint fmt proto lint-proto bench clean results

setup: $(STAMP) data browser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

# Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package.
data:
	@if [ ! -f $(FMNIST)/t10k-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	      || { echo "error: could not install dataset-fashion-mnist with apt-get." >&2; exit 1; }; \
	  else \
	    echo "error: Fashion-MNIST is missing at $(FMNIST)." >&2; \
	    echo "       Run as root on Debian/Ubuntu: apt-get install dataset-fashion-mnist" >&2; \
	    echo "       or set PARASAL_FASHION_MNIST=/dir/with/the/four/.gz/files" >&2; exit 1; \
	  fi; \
	fi

# The dashboard's browser tests drive Debian's chromium through Playwright (Playwright's own
# browser download needs the internet). PARASAL_CHROMIUM points elsewhere.
browser:
	@if [ -z "$$PARASAL_CHROMIUM" ] && ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing chromium (Debian package) for the dashboard's browser tests..."; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	      || { echo "error: could not install chromium with apt-get." >&2; exit 1; }; \
	  else \
	    echo "error: chromium is missing (the dashboard's browser tests need it)." >&2; \
	    echo "       Run as root on Debian/Ubuntu: apt-get install chromium" >&2; \
	    echo "       or set PARASAL_CHROMIUM=/path/to/chromium" >&2; exit 1; \
	  fi; \
	fi

demo: setup
	$(BIN)/parasal demo

# The web dashboard on the demo's bundle (built by `make demo` first when missing): a server
# and the dashboard, http://127.0.0.1:$(DASHBOARD_PORT)/ (DEMO_BUNDLE=DIR for another bundle).
DEMO_BUNDLE    ?= bundles/demo-fashion-test
DASHBOARD_PORT ?= 8080
dashboard: setup
	@test -d $(DEMO_BUNDLE) || $(BIN)/parasal demo --bundle-dir $(DEMO_BUNDLE)
	$(BIN)/python -m parasal.client.dashboard --bundle $(DEMO_BUNDLE) --port $(DASHBOARD_PORT)

test: setup lint
	$(BIN)/python -m pytest -q

# ruff: lint + format check (config in pyproject.toml). `make fmt` rewrites in place.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# docs/RESULTS.md and docs/results/: both papers' experiments on the demo model, on the 10k test images
# with reference statistics over the 60k training images (RESULTS_BUNDLE, indexed first when missing).
RESULTS_BUNDLE ?= bundles/demo-fashion-test-ref
RESULTS_MACHINE ?=
results: setup
	@test -d $(RESULTS_BUNDLE) || $(BIN)/parasal index --model demo-fashion --data fashion-mnist:test \
	  --reference-data fashion-mnist:train --out $(RESULTS_BUNDLE)
	OMP_NUM_THREADS=1 $(BIN)/python -m parasal.server.experiments.results --bundle $(RESULTS_BUNDLE) \
	  --out docs/results/ --machine "$(RESULTS_MACHINE)"

proto: setup
	$(BIN)/python proto/generate.py

lint-proto: setup
	cd proto && ../$(BIN)/buf lint

bench: setup
	$(BIN)/python benchmarks/saliency_throughput.py

clean:
	rm -rf $(VENV) demo-report build *.egg-info
