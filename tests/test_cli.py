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


def _train_args(*argv):
    return cli.build_parser().parse_args(["train", *argv])


def test_every_train_config_field_has_a_flag():
    """Each field of TrainConfig is a flag of ``fastgp train`` (``--field-name``) of its type,
    with its allowed names as choices, and a value given there reaches the config."""
    import dataclasses

    from fastgp.train import TrainConfig

    defaults = TrainConfig()
    numbers = {int: ("7", 7), float: ("0.25", 0.25)}
    argv, expected = [], {}
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = type(getattr(defaults, field.name))
        choices = field.metadata.get("choices")
        if choices is not None:  # a name other than the default, which the flag must accept
            value = next(name for name in choices if name != field.default)
            argv += [flag, value]
        elif kind is bool:
            assert field.default is False  # a store_true flag; --no-... where the default is True
            argv, value = [*argv, flag], True
        elif field.name in ("dataset", "device"):
            value = "25gaussians" if field.name == "dataset" else "cpu"
            argv += [flag, value]
        else:  # int or float, also where the default is None (the config's own default)
            kind = cli._option_type(field.name)
            argv += [flag, numbers[kind][0]]
            value = numbers[kind][1]
        expected[field.name] = value
        assert field.metadata.get("help") or choices or field.name in ("seed", "eval_every"), (
            f"TrainConfig.{field.name} has no help text")
    config = cli.train_config(_train_args(*argv))
    assert dataclasses.asdict(config) == expected
    assert expected.keys() == dataclasses.asdict(defaults).keys()
    # A flag left out keeps TrainConfig's default.
    assert cli.train_config(_train_args()) == defaults


@pytest.mark.parametrize("flag, value", [("--loss", "wgan"), ("--penalty", "l2"),
                                          ("--precision", "fp64"), ("--steps", "2.5")])
def test_train_flags_refuse_values_outside_their_choices_and_types(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: invalid" in capsys.readouterr().err


def test_adam_betas_have_flags():
    config = cli.train_config(_train_args("--beta1", "0.0", "--beta2", "0.99"))
    assert (config.beta1, config.beta2) == (0.0, 0.99)


def test_train_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ["--beta1 BETA1 Adam's β1 (default: 0.5)", "--beta2 BETA2 Adam's β2 (default: 0.9)",
                 "--hidden HIDDEN MLP width (default: 256)", "--compile run the engine's critic",
                 "--steps STEPS generator steps (default: 6000 on 25gaussians, 2000 otherwise) "
                 "(default: None)", "--config CONFIG_JSON", "--resume", "--overwrite"]:
        assert text in out


def test_config_file_round_trips_and_flags_override_it(tmp_path, capsys):
    """The config.json of a run, given to --config, trains the same run; a flag overrides it,
    also where it gives the default value, and the other options keep the file's values."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--out", str(first), *TINY_TRAIN, "--beta1", "0.0", "--beta2", "0.99",
                 "--loss", "wgan-lp", "--deterministic"]) == 0
    saved = json.loads((first / "config.json").read_text())
    assert (saved["beta1"], saved["beta2"], saved["loss"], saved["deterministic"]) == (0.0, 0.99,
                                                                                 "wgan-lp", True)
    assert main(["train", "--config", str(first / "config.json"), "--steps", "3",
                 "--out", str(second), "--no-progress"]) == 0
    again = json.loads((second / "config.json").read_text())
    assert again == {**saved, "steps": 3}
    overridden = cli.train_config(_train_args("--config", str(first / "config.json"),
                                               "--hidden", "256", "--depth", "3"))
    assert (overridden.hidden, overridden.depth, overridden.beta2) == (256, 3, 0.99)
    assert overridden.eval_samples == saved["eval_samples"] == 64


@pytest.mark.parametrize("content, fragments", [
    ({"steps": 2, "learning_rate": 0.1, "betas": [0.5, 0.9]},
     ["unknown keys betas, learning_rate", "known: dataset, "]),
    ({"hidden": "8"}, ["hidden must be int, got '8'"]),
    ({"steps": 2.5}, ["steps must be int or null, got 2.5"]),
    ({"compile": 1}, ["compile must be bool, got 1"]),
    ([1, 2], ["must hold a JSON object of options, got list"]),
])
def test_bad_config_file_is_refused_in_one_line(content, fragments, tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(content))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run"), *TINY_TRAIN]) == 2
    one_line_error(capsys.readouterr().err, "train", f"--config {path}", *fragments)
    assert not (tmp_path / "run").exists()


def test_missing_or_malformed_config_file_is_refused_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.json"
    assert main(["train", "--config", str(missing), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys.readouterr().err, "train", str(missing))
    broken = tmp_path / "broken.json"
    broken.write_text('{"steps": 2,')
    assert main(["train", "--config", str(broken), "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys.readouterr().err, "train", f"--config {broken} is not valid JSON")
