"""The `fastgp` entry points start and explain themselves."""

import errno
import io
import json
import os
import subprocess
import sys

import pytest
import torch
from cli_helpers import one_line_error

from fastgp import cli
from fastgp.cli import main


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "fastgp", "--help"], capture_output=True,
                            text=True, check=True)
    assert "train" in result.stdout and "sample" in result.stdout


@pytest.mark.parametrize("command", ["train", "sample"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: fastgp " + command in capsys.readouterr().out


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "required: command" in capsys.readouterr().err


def test_bad_train_option_is_reported(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--steps", "0", "--no-progress"]) == 2
    assert "steps must be >= 1, got 0" in capsys.readouterr().err


TINY_TRAIN = ["--steps", "2", "--hidden", "8", "--eval-every", "100", "--eval-samples", "64",
              "--no-progress"]


@pytest.fixture
def one_gpu(monkeypatch):
    """This machine as seen by a torch with one CUDA device (whatever the real hardware)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize("command", [["train", *TINY_TRAIN], ["compare", "--steps", "1"],
                                     ["profile"], ["bench", "--cases", "mlp-b2"]])
def test_unavailable_device_is_refused_up_front_listing_the_devices(command, tmp_path, capsys,
                                                                     one_gpu, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the device must be checked before any data or model is built")

    monkeypatch.setattr("fastgp.train.trainer.load_dataset", never)
    monkeypatch.setattr("fastgp.perf.bench.run_case", never)
    monkeypatch.setattr("fastgp.perf.profile.profile_gp", never)
    assert main([*command, "--out" if command[0] != "profile" else "--batch",
                 str(tmp_path) if command[0] != "profile" else "2", "--device", "cuda:1"]) == 2
    one_line_error(capsys.readouterr().err, command[0], "--device 'cuda:1' is not available",
                   "available: cpu, cuda, cuda:0")


def test_device_without_cuda_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert main(["train", "--out", str(tmp_path), *TINY_TRAIN, "--device", "cuda"]) == 2
    one_line_error(capsys.readouterr().err, "train", "'cuda' is not available",
                   "built without CUDA", "available: cpu")
    assert main(["train", "--out", str(tmp_path), *TINY_TRAIN, "--device", "gpu"]) == 2
    one_line_error(capsys.readouterr().err, "train", "'gpu' is not available", "available: cpu")


@pytest.mark.parametrize(
    "option, value, name",
    [("--lr", "nan", "lr"), ("--gp-weight", "inf", "gp_weight"), ("--ema", "nan", "ema"),
     ("--clip", "nan", "clip"), ("--clip", "-inf", "clip")],
)
def test_non_finite_option_is_refused_before_training(option, value, name, tmp_path, capsys,
                                                      monkeypatch):
    monkeypatch.setattr("fastgp.train.trainer.load_dataset", None)  # never reached
    assert main(["train", "--out", str(tmp_path), *TINY_TRAIN, f"{option}={value}"]) == 2
    one_line_error(capsys.readouterr().err, "train", f"{name} must be a finite number, got {value}")
    assert not (tmp_path / "config.json").exists()


def test_non_finite_adam_betas_are_refused():
    from fastgp.train import TrainConfig

    for field in ("beta1", "beta2"):
        with pytest.raises(ValueError, match=f"{field} must be a finite number, got nan"):
            TrainConfig(**{field: float("nan")}).validate()


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999999"])
def test_seed_out_of_range_is_refused(seed, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), *TINY_TRAIN, f"--seed={seed}"]) == 2
    one_line_error(capsys.readouterr().err, "train", f"seed must lie in [0, 4294967295], got {seed}")
    assert main(["sample", "--run", str(tmp_path), "--out", str(tmp_path / "s.npy"),
                 f"--seed={seed}"]) == 2
    one_line_error(capsys.readouterr().err, "sample", f"--seed must lie in [0, 4294967295], got {seed}")
    assert main(["compare", "--out", str(tmp_path), f"--seed={seed}"]) == 2
    one_line_error(capsys.readouterr().err, "compare", f"seed must lie in [0, 4294967295], got {seed}")


def test_largest_seed_trains(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), *TINY_TRAIN, "--seed", str(2**32 - 1)]) == 0


class FullDisk(io.RawIOBase):
    """A file on a full disk, where the system has no /dev/full."""

    def writable(self):
        return True

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_while_training_fails_the_run_in_one_line(tmp_path, capsys, monkeypatch):
    """The first write (config.json) succeeds, the checkpoint finds the disk full (/dev/full:
    a real file whose writes fail with ENOSPC)."""
    from fastgp.train import run_folder

    real_fdopen, calls = run_folder.os.fdopen, []

    def fdopen(descriptor, mode):
        calls.append(descriptor)
        if len(calls) == 1:
            return real_fdopen(descriptor, mode)
        os.close(descriptor)
        return open("/dev/full", mode) if os.path.exists("/dev/full") else FullDisk()

    monkeypatch.setattr(run_folder.os, "fdopen", fdopen)
    assert main(["train", "--out", str(tmp_path), *TINY_TRAIN]) == 1
    one_line_error(capsys.readouterr().err, "train", "No space left on device",
                   f"(writing {tmp_path})")
    assert len(calls) == 2 and not list(tmp_path.glob(".*.tmp"))  # no half-written file left


def _info_with_tf32(conv: bool, matmul_precision: str, capsys) -> tuple[str, dict]:
    """`fastgp info` and `fastgp info --json` under the given TF32 flags, restored afterwards."""
    before = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = conv
    torch.set_float32_matmul_precision(matmul_precision)
    try:
        assert main(["info"]) == 0
        text = capsys.readouterr().out
        assert main(["info", "--json"]) == 0
        return text, json.loads(capsys.readouterr().out)
    finally:
        torch.backends.cudnn.allow_tf32 = before[0]
        torch.set_float32_matmul_precision(before[1])


@pytest.mark.parametrize("conv, matmul_precision, line", [
    (True, "highest", "TF32: cuDNN conv on, CUDA matmul off (float32 matmul precision 'highest')"),
    (False, "high", "TF32: cuDNN conv off, CUDA matmul on (float32 matmul precision 'high')"),
])
def test_info_reports_the_tf32_settings_it_finds(conv, matmul_precision, line, capsys):
    text, report = _info_with_tf32(conv, matmul_precision, capsys)
    assert f"fp32 precision: {line}" in text
    assert report["float32_precision"] == {"tf32_cudnn_conv": conv,
                                           "tf32_cuda_matmul": matmul_precision != "highest",
                                           "float32_matmul_precision": matmul_precision}


def test_unexpected_errors_keep_their_traceback(tmp_path, monkeypatch):
    """Only expected failures become one line: anything else is a bug to report."""
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "info", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["info"])

    def connection_reset(args):  # an OSError that no input of the user explains
        raise OSError(errno.ECONNRESET, "Connection reset by peer")

    monkeypatch.setitem(cli.COMMANDS, "info", connection_reset)
    with pytest.raises(ConnectionResetError):
        main(["info"])


def test_diverged_run_fails_in_one_line(tmp_path, capsys, monkeypatch):
    from fastgp.train.trainer import Trainer

    logged = Trainer._log_row
    monkeypatch.setattr(Trainer, "_log_row",
                        lambda self, stats: logged(self, stats) | {"w_estimate": float("nan")})
    assert main(["train", "--out", str(tmp_path), *TINY_TRAIN, "--log-every", "1"]) == 1
    one_line_error(capsys.readouterr().err, "train",
                   "training diverged at step 1: ['w_estimate'] not finite")
