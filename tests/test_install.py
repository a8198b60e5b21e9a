"""What installing fastgp needs: the torch floor, the native build's use of torch, and the
toolchain that Triton needs on CUDA (checked before ``auto`` picks Triton)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version

from fastgp.cli import main
from fastgp.ops import backend, native

ROOT = Path(__file__).resolve().parent.parent
CUDA = torch.device("cuda")


# The torch floor ---------------------------------------------------------------------------

def _torch_requirement(requirements: list[str]) -> Requirement:
    found = [Requirement(text) for text in requirements if Requirement(text).name == "torch"]
    assert len(found) == 1, requirements
    return found[0]


def _torch_floors() -> tuple[Requirement, Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return (_torch_requirement(config["build-system"]["requires"]),
            _torch_requirement(config["project"]["dependencies"]))


def test_torch_floor_is_one_and_the_installed_torch_meets_it():
    build, runtime = _torch_floors()
    assert build.specifier == runtime.specifier, (build, runtime)
    installed = Version(torch.__version__)
    assert runtime.specifier.contains(installed, prereleases=True), (str(runtime), installed)


def test_torch_floor_has_the_library_apis_the_ops_use():
    _, runtime = _torch_floors()
    floor = [Version(spec.version) for spec in runtime.specifier if spec.operator == ">="]
    assert len(floor) == 1, str(runtime)
    # torch.library.triton_op and wrap_triton (fastgp/ops/triton/) became public in torch 2.6
    # (pytorch/pytorch#141880; the 2.6 release lists triton_op as a beta feature).
    assert floor[0] >= Version("2.6"), str(runtime)
    for name in ("triton_op", "wrap_triton", "custom_op", "register_fake", "register_autograd",
                 "opcheck"):
        assert callable(getattr(torch.library, name, None)), f"torch.library.{name}"


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


# What fastgp._C was built against ----------------------------------------------------------

def _loads(name):
    return None


def _fails(message):
    def load(name):
        raise ImportError(message)
    return load


def test_the_extension_records_its_torch_and_uses_the_stable_abi():
    if native.load_error() is not None:
        pytest.skip(native.load_error())
    import fastgp._C

    assert native.built_with() == torch.__version__
    assert fastgp._C.__file__.endswith(".abi3.so")  # one build for every CPython >= 3.10


def test_a_build_for_another_torch_is_named_not_loaded():
    loaded = []
    problem = native.load_problem("2.11.0+cu128", "2.13.0+cpu", load=loaded.append)
    assert problem == ("fastgp._C was built against torch 2.11.0+cu128, but torch 2.13.0+cpu is "
                       f"running: {native.REBUILD}")
    assert loaded == []  # never loaded against another release's C++ ABI
    assert native.load_problem("2.13.0+cpu", "2.13.1+cu130", load=_loads) is None
    assert native.load_problem("2.13.0", "2.13.0", load=_fails("undefined symbol: _ZN3c10")) == (
        "fastgp._C (built against torch 2.13.0) does not load: undefined symbol: _ZN3c10; "
        f"{native.REBUILD}")
    assert native.load_problem(None, "2.13.0", load=_fails("No module named 'fastgp._C'")) == (
        "fastgp._C is not built (No module named 'fastgp._C')")


def test_info_names_a_torch_mismatch(monkeypatch, capsys):
    mismatch = native.load_problem("2.11.0", torch.__version__, load=_loads)
    monkeypatch.setattr(native, "_LOAD_ERROR", mismatch)
    assert main(["info"]) == 0
    assert f"native  {mismatch}" in capsys.readouterr().out


# Triton's toolchain on CUDA ----------------------------------------------------------------

@pytest.fixture
def unchecked(monkeypatch):
    """Triton installed and not interpreted, its toolchain not yet checked in this process."""
    pytest.importorskip("triton")
    monkeypatch.setattr(backend, "_TRITON_INSTALLED", True)
    monkeypatch.setattr(backend, "_TRITON_BUILD_CHECK", {})
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    return monkeypatch


def _without_compiler(monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(backend.shutil, "which", lambda name, *args, **kwargs: None)


def _cuda_fallback() -> str:
    return "native" if backend.native_unavailable_reason(CUDA) is None else "torch"


def test_without_a_c_compiler_auto_takes_the_next_backend_and_says_why(unchecked):
    _without_compiler(unchecked)
    with pytest.warns(RuntimeWarning, match="Triton kernels cannot run on CUDA here: no C "
                                            "compiler found"):
        assert backend.resolve("auto", CUDA) == _cuda_fallback()
    reason = backend.triton_unavailable_reason(CUDA)
    assert reason.startswith("no C compiler found") and "install gcc or set CC" in reason
    with pytest.raises(RuntimeError, match="backend 'triton' is not usable here: no C compiler"):
        backend.resolve("triton", CUDA)
    with warnings.catch_warnings():  # checked and warned once per process
        warnings.simplefilter("error")
        assert backend.resolve("auto", CUDA) == _cuda_fallback()


def test_without_python_headers_auto_takes_the_next_backend(unchecked, tmp_path):
    real_get_paths = sysconfig.get_paths
    unchecked.setattr(sysconfig, "get_paths",
                      lambda *args, **kwargs: {**real_get_paths(*args, **kwargs),
                                               "include": str(tmp_path)})
    if backend.shutil.which("gcc") is None and backend.shutil.which("clang") is None:
        unchecked.setenv("CC", sys.executable)  # any program on PATH: the headers come first
    with pytest.warns(RuntimeWarning, match="Python's development headers are missing"):
        assert backend.resolve("auto", CUDA) == _cuda_fallback()
    assert f"no Python.h in {tmp_path}" in backend.triton_unavailable_reason(CUDA)


def test_a_compiler_that_fails_or_is_missing_is_named(unchecked, tmp_path):
    if not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        pytest.skip("Python.h is not installed here: the compiler is never reached")
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: error: cannot write output' >&2\nexit 3\n")
    broken.chmod(0o755)
    unchecked.setenv("CC", str(broken))
    assert backend.triton_build_error() == (
        f"the C compiler {broken} cannot build Triton's CUDA launcher against Python.h "
        f"(exit 3: broken-cc: error: cannot write output)")
    unchecked.setenv("CC", "no-such-compiler-fastgp")
    assert backend.triton_build_error() == ("CC='no-such-compiler-fastgp', the C compiler Triton "
                                            "builds its CUDA launcher with, is not found")


def test_a_working_toolchain_passes(unchecked):
    unchecked.delenv("CC", raising=False)
    if shutil.which("gcc") is None and shutil.which("clang") is None:
        pytest.skip("no C compiler here")
    if not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
        pytest.skip("Python.h is not installed here")
    assert backend.triton_build_error() is None
    assert backend.resolve("auto", CUDA) == "triton"


def test_a_build_function_set_in_triton_replaces_the_compiler(unchecked):
    triton = pytest.importorskip("triton")
    build = getattr(getattr(triton, "knobs", None), "build", None)
    if build is None:
        pytest.skip("this Triton has no triton.knobs.build")
    _without_compiler(unchecked)
    unchecked.setattr(build, "impl", lambda *args: None)
    assert backend.triton_build_error() is None


def test_info_reports_why_triton_is_not_used_on_a_gpu(unchecked, capsys):
    _without_compiler(unchecked)
    unchecked.setattr(torch.cuda, "is_available", lambda: True)
    unchecked.setattr(torch.cuda, "device_count", lambda: 1)
    unchecked.setattr(torch.cuda, "get_device_name", lambda device=None: "Mock GPU")
    with pytest.warns(RuntimeWarning):
        assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"cuda:0: Mock GPU  (auto -> {_cuda_fallback()})" in out
    assert "  triton  no C compiler found" in out


def test_compiled_code_reads_the_eager_answer(unchecked):
    """torch.compile does not trace the compiler run: it reads the answer of an eager call."""

    def offset(x):
        return x + (1.0 if backend.resolve("auto", CUDA) == "triton" else 2.0)

    _without_compiler(unchecked)
    torch._dynamo.reset()
    compiled = torch.compile(offset, backend="eager", fullgraph=True)
    try:
        with pytest.warns(RuntimeWarning):
            eager = offset(torch.zeros(2))
        assert torch.equal(compiled(torch.zeros(2)), eager)
        assert eager.tolist() == [2.0, 2.0]
    finally:
        torch._dynamo.reset()
