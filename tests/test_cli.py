"""The `fastgp` entry points start and explain themselves."""

import subprocess
import sys

import pytest

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
