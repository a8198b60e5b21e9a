#!/usr/bin/env bash
# Compile fastgp._C with its CUDA kernels against a CUDA build of torch, in .venv-cuda/, and
# check that the result loads and reports CUDA kernels. Needs nvcc (CUDA 13 for torch 2.14's
# cu130 wheels) but no GPU. Usage: bash kernels/build_cuda.sh
#   CUDA_TORCH_SPEC   torch requirement of a CUDA build        (default torch==2.14.1)
#   TORCH_CUDA_ARCH_LIST  GPU architectures to compile for     (default 9.0: H100/H200)
#   CUDA_HOME         CUDA toolkit root                        (default /usr/local/cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-cuda
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export CUDACXX=${CUDACXX:-$CUDA_HOME/bin/nvcc}

test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet "${CUDA_TORCH_SPEC:-torch==2.14.1}" "scikit-build-core>=0.10" \
  "cmake>=3.18" ninja numpy
# torch's CMake config links libnvrtc, which ships in the nvidia-* wheels, not in the toolkit.
NVRTC=$("$VENV/bin/python" -c "
import glob, os, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
found = sorted(glob.glob(os.path.join(site, 'nvidia', '**', 'libnvrtc.so*'), recursive=True))
print(found[0] if found else '')")
rm -rf build/cuda build/cuda-wheel
"$VENV/bin/pip" wheel --quiet --no-build-isolation --no-deps -w build/cuda-wheel \
  -C cmake.define.FASTGP_CUDA=ON -C cmake.define.CUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" \
  -C cmake.define.CUDAToolkit_ROOT="$CUDA_HOME" ${NVRTC:+-C cmake.define.CUDA_nvrtc_LIBRARY="$NVRTC"} \
  -C build-dir=build/cuda .
"$VENV/bin/pip" install --quiet --force-reinstall --no-deps build/cuda-wheel/fastgp-*.whl
REPO=$(pwd)
cd "$(mktemp -d)"  # import the installed wheel, not the source tree
"$REPO/$VENV/bin/python" -c "
import torch
from fastgp.ops import native
assert native.load_error() is None, native.load_error()
assert native.has_cuda(), 'fastgp._C was built without its CUDA kernels'
x = torch.randn(3, 5, dtype=torch.float64)
penalty, _ = torch.ops.fastgp_native.norm_penalty(x, 10.0, 1.0, False)
print(f'fastgp._C with CUDA kernels built against torch {torch.__version__}; CPU check {penalty.item():.6f}')"
