# The project's commands. `make demo` runs the main job, `make test` runs the tests.
# Both set up the environment first (idempotent: scripts/setup_env.sh).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTEST_ARGS ?=
# The demo uses real CLIPSeg weights when it can (the Hugging Face cache, then the hub) and
# only without both falls back to random weights, saying so loudly (docs/replay.md).
# Others: make demo DEMO_ARGS="--clipseg-model DIR_OR_HF_ID", "--weights real", "--bag BAG".
DEMO_ARGS ?=

.PHONY: help setup build test lint demo bench clean

help:
	@echo "make setup  - create/update the venv (ROS 2 Jazzy wheels, torch, ...) and colcon-build"
	@echo "make demo   - the main job: replay the shipped demo scene through the node (see README)"
	@echo "make test   - run every test (pytest) against the colcon install, linters included"
	@echo "make bench  - run the benchmarks (engine, geometry, node, bags) and print JSON + tables"
	@echo "make clean  - remove build/, install/, log/ (the venv is kept)"

setup:
	@bash scripts/setup_env.sh

build: setup

# Exit code 5 (pytest collected no test) is reported and not treated as a failure.
test: setup
	@source scripts/env.sh && export ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$((RANDOM % 100 + 1))} && \
	rc=0 && pytest -p no:cacheprovider $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; rc=0; fi; exit $$rc

lint: setup
	@source scripts/env.sh && pytest -p no:cacheprovider test/test_lint.py

demo: setup
	@source scripts/env.sh && zs_perception_demo $(DEMO_ARGS) --output demo_output

bench: setup
	@source scripts/env.sh && python -m benchmarks.bench_engine && \
	python -m benchmarks.bench_geometry && python -m benchmarks.bench_node && \
	python -m benchmarks.bench_bags

clean:
	rm -rf build install log
