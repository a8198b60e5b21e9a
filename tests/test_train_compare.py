"""`fastgp compare`: one row per loss, a figure, and reruns that skip finished runs."""

import csv

import pytest

from fastgp.cli import main
from fastgp.train import Trainer
from fastgp.train.compare import compare
from fastgp.train.config import TrainConfig

BASE = TrainConfig(dataset="8gaussians", steps=3, hidden=16, eval_every=100, eval_samples=200)


def test_compare_writes_a_row_per_loss_and_skips_finished_runs(tmp_path, monkeypatch):
    rows = compare(BASE, tmp_path, ("gan", "wgan-gp"), progress=False, report=lambda line: None)
    assert [row["loss"] for row in rows] == ["gan", "wgan-gp"]
    assert rows[0]["critic_step"].startswith("tier1") and rows[1]["critic_step"].startswith("engine")
    with open(tmp_path / "compare.csv", newline="") as handle:
        saved = list(csv.DictReader(handle))
    assert [row["loss"] for row in saved] == ["gan", "wgan-gp"]
    assert all(float(row["emd"]) > float(row["emd_floor"]) > 0 for row in saved)
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    table = (tmp_path / "compare.md").read_text().splitlines()
    assert table[0].startswith("| loss | modes | high quality | EMD (floor) | wall time |")
    assert [line.split(" | ")[0] for line in table[2:]] == ["| gan", "| wgan-gp"]

    def no_training(self):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(Trainer, "run", no_training)
    messages = []
    again = compare(BASE, tmp_path, ("gan", "wgan-gp"), progress=False, report=messages.append)
    assert again == rows and all("already trained" in message for message in messages)


def test_compare_resumes_an_interrupted_run(tmp_path, monkeypatch):
    original = Trainer._train_step

    def interrupt_at_step_2(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", interrupt_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        compare(BASE, tmp_path, ("wgan-gp",), progress=False, report=lambda line: None)
    monkeypatch.setattr(Trainer, "_train_step", original)
    messages = []
    compare(BASE, tmp_path, ("wgan-gp",), progress=False, report=messages.append)
    assert "resumed" in messages[0]
    assert len((tmp_path / "wgan-gp" / "metrics.csv").read_text().splitlines()) == 1 + 1  # step 3


def test_compare_cli_refuses_unknown_losses_and_non_toy_data(tmp_path, capsys):
    assert main(["compare", "--losses", "gan,hinge", "--out", str(tmp_path)]) == 2
    assert "--losses takes names from" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown dataset"):
        compare(TrainConfig(dataset="digits"), tmp_path, ("gan",), progress=False)


def test_compare_cli_passes_its_options_to_the_runs(tmp_path, capsys, monkeypatch):
    """--hidden, --seed, --eval-every and --device are train's flags (TrainConfig's fields);
    left out, they keep TrainConfig's defaults."""
    bases = []

    def record(base, out, losses, progress):
        bases.append(base)
        (out / "compare.md").write_text("table\n")

    monkeypatch.setattr("fastgp.train.compare.compare", record)
    out = tmp_path / "compare"
    out.mkdir()
    assert main(["compare", "--out", str(out), "--steps", "5", "--hidden", "16", "--seed", "3",
                 "--eval-every", "7", "--device", "cpu", "--no-progress"]) == 0
    assert main(["compare", "--out", str(out), "--dataset", "8gaussians", "--no-progress"]) == 0
    assert bases == [TrainConfig(dataset="25gaussians", steps=5, hidden=16, seed=3, eval_every=7,
                                 device="cpu"), TrainConfig(dataset="8gaussians")]
    assert "table" in capsys.readouterr().out
