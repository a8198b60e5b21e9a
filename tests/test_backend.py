"""Backend selection and the `fastgp info` report."""

import json

import pytest
import torch

import fastgp
from fastgp.cli import main
from fastgp.ops import native
from fastgp.ops.backend import environment_report, kernels, resolve

CPU = torch.device("cpu")


def test_resolve_auto_on_cpu_prefers_native_then_torch():
    expected = "native" if native.load_error() is None else "torch"
    assert resolve("auto", CPU) == expected
    assert resolve("torch", CPU) == "torch"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve("triton", CPU) == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="backend 'triton' is not usable here: Triton kernels "
                                           "run on CUDA devices"):
        resolve("triton", CPU)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        resolve("cuda", CPU)
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        fastgp.set_backend("fast")


def test_global_backend_is_used_when_none_is_given(monkeypatch):
    calls = []
    original = fastgp.ops.kernels_for

    def spy(backend, device):
        chosen = original(backend, device)
        calls.append(chosen)
        return chosen

    monkeypatch.setattr(fastgp.ops, "kernels_for", spy)
    try:
        fastgp.set_backend("triton")
        assert fastgp.get_backend() == "triton"
        fastgp.norm_penalty(torch.randn(3, 4))
        fastgp.norm_penalty(torch.randn(3, 4), backend="torch")
    finally:
        fastgp.set_backend("auto")
    assert calls == [kernels("triton"), kernels("torch")]


def test_native_unavailable_reason_is_reported():
    report = environment_report()
    status = report["backends"]["cpu"]["native"]
    if native.load_error() is None:
        assert status == "usable"
    else:
        assert status.startswith("fastgp._C is not built")
        with pytest.raises(RuntimeError, match="backend 'native' is not usable here"):
            resolve("native", CPU)


def test_info_command(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "auto ->" in out and "torch   usable" in out
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fastgp"] == fastgp.__version__ and "cpu" in data["backends"]
