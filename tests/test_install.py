"""What installing fastgp needs: the native build's use of torch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


# The native build --------------------------------------------------------------------------

def _configure(tmp_path: Path, *definitions: str, env: dict | None = None):
    """Run CMake's configure step of fastgp._C against this Python's torch."""
    tools = os.path.dirname(sys.executable)
    cmake = shutil.which("cmake", path=tools) or shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed (make install puts it in .venv)")
    ninja = shutil.which("ninja", path=tools) or shutil.which("ninja")
    generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
    return subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(tmp_path / "build"), *generator,
         f"-DPython_EXECUTABLE={sys.executable}", *definitions],
        capture_output=True, text=True, env=env, timeout=300)


def _broken_torch_config(tmp_path: Path) -> str:
    """A TorchConfig.cmake that fails as a CUDA build of torch's does where nvcc is missing."""
    folder = tmp_path / "torch-config"
    folder.mkdir()
    (folder / "TorchConfig.cmake").write_text(
        'message(FATAL_ERROR "Your installed Caffe2 version uses CUDA but I cannot find the CUDA '
        'libraries. Please set the proper CUDA prefixes and / or install CUDA.")\n')
    return f"-DTorch_DIR={folder}"


def test_cpu_build_does_not_use_torchs_cmake_config(tmp_path):
    """The default build (CPU kernels) links torch's CPU libraries itself, so a CUDA build of
    torch on a machine without the CUDA toolkit builds: torch's CMake config, which demands the
    toolkit there, stands in here as one that always fails."""
    result = _configure(tmp_path, _broken_torch_config(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"fastgp._C: CPU kernels{'' if torch.version.cuda is None else ' only'}, against " \
           f"torch {torch.__version__}" in result.stdout


def test_cuda_build_says_what_it_needs(tmp_path):
    if torch.version.cuda is None:
        result = _configure(tmp_path, "-DFASTGP_CUDA=ON")
        expected = "FASTGP_CUDA=ON needs a CUDA build of torch"
    else:  # hide nvcc; the C++ compiler is named since hiding nvcc can hide its folder too
        compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
        env = {name: value for name, value in os.environ.items()
               if name not in ("CUDACXX", "CUDA_HOME", "CUDA_PATH")}
        env["PATH"] = os.pathsep.join(folder for folder in env.get("PATH", "").split(os.pathsep)
                                      if not os.path.exists(os.path.join(folder, "nvcc")))
        result = _configure(tmp_path, "-DFASTGP_CUDA=ON", f"-DCMAKE_CXX_COMPILER={compiler}",
                            env=env)
        expected = "FASTGP_CUDA=ON needs nvcc"
    assert result.returncode != 0
    assert expected in " ".join(result.stderr.split()), result.stderr
