# One command sets up and runs; the virtual environment lives in .venv/ of the checkout.
#   make run    install, then train the default WGAN-GP (8 gaussians) into runs/latest
#               (--overwrite: replaces the run an earlier `make run` left there), on the GPU
#               where torch sees one, else on the CPU; DEVICE=cpu|cuda|cuda:N picks the device
#   make test   install, then run the whole test suite
# TORCH_SPEC chooses the torch build: the default pins the CPU build that installs in seconds
# where a local wheel is available; `make test TORCH_SPEC=torch` takes PyPI's default build
# (CUDA on Linux). The native extension fastgp._C is compiled against that torch (about 30 s),
# with its CPU kernels only: no CUDA toolkit is needed, also for a CUDA torch (its CUDA kernels:
# kernels/build_cuda.sh). NATIVE=0 installs without it (fastgp then runs on the Triton and torch
# backends). The install ends with `fastgp info`: which backend runs on each device, and why not.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
NATIVE ?= 1
STAMP := $(VENV)/.installed
SKIP_NATIVE := $(if $(filter 0,$(NATIVE)),-C wheel.cmake=false,)

.PHONY: install run test lint bench bench-quick bench-pytest profile gpu-check gpu-check-dry-run clean

$(STAMP): pyproject.toml fastgp/_version.py CMakeLists.txt $(wildcard kernels/*.cpp kernels/*/*.cpp kernels/*/*.cu kernels/*/*/*.h)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" "scikit-build-core>=0.10" "cmake>=3.26" ninja
	$(BIN)/pip install --quiet --no-build-isolation $(SKIP_NATIVE) -e ".[train,test,bench]"
	$(BIN)/fastgp info
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

# On a machine with NVIDIA GPUs: fastgp goes into that machine's own Python and CUDA torch
# (GPU_PYTHON; nothing else is installed, so missing packages must already be there), with the
# CUDA kernels when nvcc is found (a module for that Python only, so that a CMake older than the
# stable ABI's 3.26 builds it too), then benchmarks/gpu_check.py runs every GPU check (at most a
# few minutes) and writes runs/gpu-check/summary.md. gpu-check-dry-run: the same checks on the
# CPU, CUDA-only ones skipped (CI runs it).
GPU_PYTHON ?= python3
NVCC := $(shell command -v nvcc 2>/dev/null)

gpu-check:
	$(GPU_PYTHON) -c "import sys, torch; sys.exit(None if torch.cuda.is_available() else 'no CUDA device visible to $(GPU_PYTHON): make gpu-check-dry-run checks on the CPU')"
	TORCH_CUDA_ARCH_LIST=$$($(GPU_PYTHON) -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") \
	  $(GPU_PYTHON) -m pip install --quiet --no-build-isolation --no-deps \
	  $(if $(NVCC),-C cmake.define.FASTGP_CUDA=ON,) -C build-dir=build/gpu-check \
	  -C cmake.version=">=3.18" -C wheel.py-api="" -e .
	$(GPU_PYTHON) benchmarks/gpu_check.py --out runs/gpu-check

gpu-check-dry-run: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --dry-run --out runs/gpu-check-dry-run

lint: $(STAMP)
	$(BIN)/ruff check fastgp tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
