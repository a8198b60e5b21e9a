"""Run folders: fastgp never deletes, overwrites or writes through what it did not write, and one
process at a time writes a folder."""

import os

import pytest

from fastgp.cli import main
from fastgp.train.run_folder import MetricsLog, atomic_write

TINY = ["--steps", "4", "--hidden", "16", "--eval-every", "2", "--eval-samples", "64",
        "--no-progress"]


def _train(out, *extra):
    return main(["train", "--out", str(out), *TINY, *extra])


def _snapshot(folder):
    """Every file under ``folder`` (links as their target) with its bytes."""
    files = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            files[key] = "-> " + os.readlink(path)
        elif path.is_file():
            files[key] = path.read_bytes()
    return files


def _error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("fastgp ") and err.count("\n") == 1, err  # one line
    return err


@pytest.fixture
def finished_run(tmp_path):
    run = tmp_path / "run"
    assert _train(run) == 0
    return run


def test_only_fastgp_temporaries_are_cleaned(finished_run):
    mine = finished_run / ".notes.tmp"
    mine.write_text("mine")
    leftovers = [finished_run / ".fastgp-metrics.csv.1a2b3c4d.tmp",
                 finished_run / "checkpoints" / ".fastgp-step_00000006.pt.5e6f7a8b.tmp"]
    for path in leftovers:
        path.write_text("half written")
    assert _train(finished_run, "--steps", "6", "--resume") == 0
    assert mine.read_text() == "mine"
    assert not any(path.exists() for path in leftovers)
    temporaries = [path.name for path in finished_run.rglob("*.tmp")]
    assert temporaries == [".notes.tmp"]


def test_atomic_writes_use_fastgp_temporary_names(tmp_path, monkeypatch):
    seen = []
    original = os.replace

    def record(source, target):
        seen.append(os.path.basename(source))
        original(source, target)

    monkeypatch.setattr(os, "replace", record)
    atomic_write(tmp_path / "x.json", lambda handle: handle.write(b"{}"))
    assert seen[0].startswith(".fastgp-x.json.") and seen[0].endswith(".tmp")


def test_metrics_log_replaces_a_link_instead_of_writing_through_it(tmp_path):
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("precious\n")
    (tmp_path / "metrics.csv").symlink_to(elsewhere)
    log = MetricsLog(tmp_path / "metrics.csv", ["step"])
    log.append({"step": 1})
    log.close()
    assert elsewhere.read_text() == "precious\n"
    assert not (tmp_path / "metrics.csv").is_symlink()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step", "1"]


