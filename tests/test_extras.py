"""`pip install fastgp` without the ``train`` extra: the penalty, ops, engine and measurement
tools work; the training commands say in one line what to install. (The real core install is
checked by .ci/wheel_check.sh: a fresh environment with the wheel, torch and triton only.)"""

import subprocess
import sys

import pytest

import fastgp.extras
from fastgp.cli import main
from fastgp.extras import TRAIN_PACKAGES, MissingExtraError, progress_bar
from fastgp.perf import bench

CORE_MODULES = ["fastgp", "fastgp.cli", "fastgp.perf.bench", "fastgp.perf.profile",
                "fastgp.perf.explain", "fastgp.perf.roofline", "fastgp.train.config"]


def test_the_core_imports_none_of_the_train_packages():
    """Beyond what torch itself imports (``import torch`` loads tqdm where it is installed)."""
    code = ("import importlib, sys, torch\n"
            f"packages = {sorted(TRAIN_PACKAGES)!r}\n"
            "by_torch = {m for m in packages if m in sys.modules}\n"
            f"for name in {CORE_MODULES!r}:\n    importlib.import_module(name)\n"
            "print(sorted(m for m in packages if m in sys.modules and m not in by_torch))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


@pytest.fixture
def without_train_extra(monkeypatch):
    monkeypatch.setattr(fastgp.extras, "installed", lambda module: module not in TRAIN_PACKAGES)


@pytest.mark.parametrize("command, options", [
    ("train", ["--steps", "1", "--out", "{tmp}/run"]),
    ("compare", ["--steps", "1", "--out", "{tmp}/compare"]),
    ("sample", ["--run", "{tmp}/run", "--out", "{tmp}/samples.npy"]),
])
def test_training_commands_name_the_extra_in_one_line(command, options, without_train_extra,
                                                      tmp_path, capsys):
    assert main([command, *(option.format(tmp=tmp_path) for option in options)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"fastgp {command}: error: the training extras are not installed (missing "
                     "matplotlib, tqdm, scikit-learn, POT, Pillow): pip install 'fastgp[train]'"]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_the_trainer_names_the_extra(without_train_extra, monkeypatch):
    import fastgp.train

    monkeypatch.delitem(fastgp.train.__dict__, "Trainer", raising=False)
    with pytest.raises(MissingExtraError, match=r"pip install 'fastgp\[train\]'"):
        fastgp.train.Trainer  # noqa: B018


def test_bench_writes_its_tables_without_matplotlib(without_train_extra, tmp_path, monkeypatch):
    def no_figure(*args):
        raise AssertionError("bench drew a figure without matplotlib")

    monkeypatch.setattr(bench, "write_csv", lambda path, rows: path.write_text("csv\n"))
    monkeypatch.setattr(bench, "markdown_table", lambda rows: "table\n")
    monkeypatch.setattr(bench, "plot_rows", no_figure)
    written = bench.write_outputs(tmp_path, [{"case": "mlp-b8"}])
    assert written == [tmp_path / "bench.csv", tmp_path / "bench.md"]
    assert not (tmp_path / "bench.png").exists()


def test_progress_bar_without_tqdm_is_the_iterable(without_train_extra):
    items = [1, 2, 3]
    assert progress_bar(items, desc="x") is items
