# One command sets up and runs; the virtual environment lives in .venv/ of the checkout.
#   make run    install, then train the default WGAN-GP (8 gaussians) into runs/latest
#               (--overwrite: replaces the run an earlier `make run` left there), on the GPU
#               where torch sees one, else on the CPU; DEVICE=cpu|cuda|cuda:N picks the device
#   make test   install, then run the whole test suite
# TORCH_SPEC chooses the torch build: the default pins the CPU build that installs in seconds
# where a local wheel is available; `make test TORCH_SPEC=torch` takes PyPI's default build
# (CUDA on Linux). The native extension fastgp._C is compiled against that torch (about 30 s);
# NATIVE=0 installs without it (fastgp then runs on the Triton and torch backends).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
NATIVE ?= 1
STAMP := $(VENV)/.installed
SKIP_NATIVE := $(if $(filter 0,$(NATIVE)),-C wheel.cmake=false,)

.PHONY: install run test lint bench bench-quick bench-pytest profile clean

$(STAMP): pyproject.toml CMakeLists.txt $(wildcard kernels/*.cpp kernels/*/*.cpp kernels/*/*.cu kernels/*/*/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" "scikit-build-core>=0.10" "cmake>=3.18" ninja
	$(BIN)/pip install --quiet --no-build-isolation $(SKIP_NATIVE) -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

# `make run DEVICE=cpu` overrides it; a DEVICE environment variable does not (:=, not ?=)
DEVICE := auto
run: $(STAMP)
	$(BIN)/fastgp train --out runs/latest --overwrite --device $(DEVICE)

test: $(STAMP)
	$(BIN)/ruff check fastgp tests benchmarks
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/fastgp bench --out runs/bench

bench-quick: $(STAMP)
	$(BIN)/fastgp bench --quick --out runs/bench-quick

bench-pytest: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-columns=min,median,max,rounds

profile: $(STAMP)
	$(BIN)/fastgp profile --critic dcgan32 --batch 64

lint: $(STAMP)
	$(BIN)/ruff check fastgp tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
