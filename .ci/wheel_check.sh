#!/usr/bin/env bash
# The wheel users install, checked as they would meet it: `python -m build` makes it (against the
# torch of .venv, as `make install` set it up, in a build folder of its own); a fresh environment
# with no compiler on PATH installs it with torch, triton and nothing else (no fastgp[train]
# extra); there fastgp is imported and every backend available runs one op
# (.ci/wheel_smoke.py). Prints the wheel's name, size and build time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=$root/.venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
if ! "$python" -m build --wheel --no-isolation --outdir "$work/dist" \
    -C build-dir="$work/build" . >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log"
  exit 1
fi
built=$(($(date +%s) - start))
wheel=$(ls "$work"/dist/*.whl)
echo "wheel: $(basename "$wheel"), $(du -k "$wheel" | cut -f1) KiB, built from scratch in ${built} s"

# A fresh environment from the same interpreter, run with a PATH that holds only its own
# scripts: no cc, gcc, c++, clang or nvcc can be found while installing or running.
base=$("$python" -c "import sys; print(sys._base_executable)")
torch_version=$("$python" -c "import torch; print(torch.__version__.split('+')[0])")
"$base" -m venv "$work/env"
isolated=(env PATH="$work/env/bin")
for compiler in cc gcc c++ g++ clang nvcc; do
  if "${isolated[@]}" sh -c "command -v $compiler" >/dev/null 2>&1; then
    echo "a compiler is still on PATH: $compiler" >&2
    exit 1
  fi
done
start=$(date +%s)
# (grep: this machine's pip configuration names index folders that may be absent)
"${isolated[@]}" "$work/env/bin/pip" install --quiet "torch==$torch_version" triton "$wheel" 2>&1 \
  | { grep -v "^WARNING: Location '.*' is ignored" || true; }
echo "installed with no compiler on PATH in $(($(date +%s) - start)) s"
# Run from outside the checkout, so that the installed package is the one imported.
cd "$work"
"${isolated[@]}" TRITON_INTERPRET=1 "$work/env/bin/python" "$root/.ci/wheel_smoke.py"
