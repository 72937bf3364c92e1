# Atelier's tasks. The Makefile only names the steps; the logic lives in Python
# (hub/atelier_hub/install/, the `atelier` CLI, tests/, bench/).
PYTHON ?= python3
VENV := .venv
PORT ?= 8000

.PHONY: install install-test images images-gpu dev test bench lint reset

install:
	PYTHONPATH=hub $(PYTHON) -m atelier_hub.install

# tests/install.py: `python3 -m atelier_hub.install --test` (only the images a test runs:
# ATELIER_TEST_IMAGES, default base) while the test suite's own Go tools build beside it
# (tests/k8s/control_plane.py: Kubernetes, etcd, kwok, helm; tests/terraform/terraform_tools.py:
# terraform, tflint, then checkov); it lists the steps that ran, slowest first, at its end.
install-test:
	$(PYTHON) tests/install.py

# The container images (also built by `make install`); gpu adds ~3 GB of torch, so only on request.
images:
	PYTHONPATH=hub $(PYTHON) -m atelier_hub.install.docker base hub proxy

images-gpu:
	PYTHONPATH=hub $(PYTHON) -m atelier_hub.install.docker gpu

dev: install
	$(VENV)/bin/atelier dev --port $(PORT)

# tests/run.py: install-test, then the suite on two workers (many tests wait on real
# timeouts and services; each worker takes a whole file, the k8s folder as one, slowest
# first: tests/conftest.py), then the tests marked `alone` by themselves; it prints the
# time of each phase at the end. TEST_WORKERS=0 runs in one process; PYTEST_ARGS="tests/unit -x"
# narrows both pytest phases.
TEST_WORKERS ?= 2
test:
	TEST_WORKERS=$(TEST_WORKERS) PYTEST_ARGS="$(PYTEST_ARGS)" $(PYTHON) tests/run.py

bench: install
	$(VENV)/bin/python bench/run.py

lint: install
	$(VENV)/bin/ruff check hub repro extensions tests bench
	$(VENV)/bin/python -m atelier_hub.cli profiles --check profiles

# Wipes the embedded state: users, homes, MLflow runs, S3 objects.
reset:
	rm -rf state
