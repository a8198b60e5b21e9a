"""Run folders: fastgp never deletes, overwrites or writes through what it did not write, and one
process at a time writes a folder."""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fastgp.cli import main
from fastgp.train import TrainConfig, Trainer, run_contents
from fastgp.train.compare import compare
from fastgp.train.run_folder import MetricsLog, atomic_write, load_checkpoint
from fastgp.train.run_lock import LOCK_FILE, RunLock

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


def test_fresh_run_refuses_a_folder_of_other_files_even_with_overwrite(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / ".draft.tmp").write_text("mine too")  # a hidden *.tmp that is not fastgp's
    (tmp_path / "report.md").write_text("# my report")  # fastgp's names, but not its files
    (tmp_path / "config.json").write_text('{"name": "my experiment"}')
    before = _snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert _train(tmp_path, *extra) == 2
        err = _error(capsys)
        assert ".draft.tmp" in err and "notes.txt" in err and "report.md" in err
        assert _snapshot(tmp_path) == before


def test_fresh_run_refuses_an_earlier_run_and_overwrite_replaces_only_its_files(
        finished_run, capsys):
    """Before: the old run's checkpoints (higher step numbers) outlived the new run's."""
    old_history = sorted(path.name for path in (finished_run / "checkpoints").iterdir())
    assert old_history == ["step_00000002.pt", "step_00000004.pt"]
    before = _snapshot(finished_run)
    assert _train(finished_run, "--steps", "3") == 2
    err = _error(capsys)
    assert "holds a finished fastgp run of 4 steps" in err and "--overwrite" in err
    assert _snapshot(finished_run) == before

    assert _train(finished_run, "--steps", "1", "--overwrite") == 0
    out = capsys.readouterr().out
    assert "--overwrite: removing the earlier run's files" in out
    assert "checkpoints/step_00000004.pt" in out and "config.json" in out
    assert [path.name for path in (finished_run / "checkpoints").iterdir()] == ["step_00000001.pt"]
    assert load_checkpoint(finished_run / "checkpoint.pt")["step"] == 1
    assert not (finished_run / "samples_step000002.png").exists()
    assert json.loads((finished_run / "final_metrics.json").read_text())["steps"] == 1


def test_overwrite_removes_config_json_last_so_an_interrupted_one_can_be_repeated(
        finished_run, monkeypatch):
    removed = []
    original = Path.unlink

    def record(self, missing_ok=False):
        removed.append(self.name)
        original(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", record)
    own = run_contents.check_fresh(finished_run, overwrite=True)
    run_contents.remove(finished_run, own)
    assert removed[-1] == "config.json" and len(removed) == len(own) > 10
    assert list(finished_run.iterdir()) == []


def test_fresh_run_into_an_unfinished_run_points_to_resume(tmp_path, capsys, monkeypatch):
    original = Trainer._train_step

    def interrupt_at_step_3(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", interrupt_at_step_3)
    assert _train(tmp_path) == 130
    capsys.readouterr()
    assert _train(tmp_path) == 2
    assert "holds an unfinished fastgp run: continue it with --resume" in _error(capsys)


def test_overwrite_keeps_the_run_when_a_foreign_file_joined_it(finished_run, capsys):
    (finished_run / "notes.txt").write_text("mine")
    before = _snapshot(finished_run)
    assert _train(finished_run, "--overwrite") == 2
    assert "holds files fastgp did not write (notes.txt)" in _error(capsys)
    assert _snapshot(finished_run) == before


def test_empty_out_is_refused_not_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command in (["train", "--out", "", *TINY], ["compare", "--out", " ", "--steps", "1"]):
        assert main(command) == 2
        assert "--out is empty" in _error(capsys)
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_or_under_a_file_is_a_one_line_error(tmp_path, capsys):
    file = tmp_path / "file.txt"
    file.write_text("mine")
    assert _train(file) == 2
    assert f"fastgp train: error: {file} is a file, not a folder" in _error(capsys)
    assert _train(file / "run") == 2
    assert f"{file} is a file, not a folder" in _error(capsys)
    assert _train(file, "--resume") == 2
    assert f"{file} is a file, not a folder" in _error(capsys)
    assert file.read_text() == "mine"


def test_a_folder_that_cannot_be_listed_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    def unreadable(folder):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(run_contents, "survey", unreadable)
    assert _train(tmp_path) == 2
    assert f"cannot use {tmp_path} as the run folder: [Errno 13] Permission denied" in _error(capsys)
    assert not (tmp_path / LOCK_FILE).exists()


def test_out_that_is_not_writable_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "read-only"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: stand in for the permission check
        monkeypatch.setattr(run_contents, "_writable", lambda folder: folder != locked)
    try:
        assert _train(locked) == 2
        assert f"fastgp train: error: {locked} is not writable" in _error(capsys)
        assert _train(locked / "run") == 2
        assert f"cannot create {locked / 'run'}: {locked} is not writable" in _error(capsys)
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []


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


def test_temporaries_and_a_stale_lock_alone_do_not_make_a_folder_taken(tmp_path, capsys):
    (tmp_path / ".fastgp-config.json.0a1b2c3d.tmp").write_text("{")
    (tmp_path / LOCK_FILE).write_text("pid 999999 on elsewhere\n")  # its holder was killed
    assert _train(tmp_path) == 0
    assert "took over the lock of pid 999999 on elsewhere" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / LOCK_FILE).exists()


def test_atomic_writes_use_fastgp_temporary_names(tmp_path, monkeypatch):
    seen = []
    original = os.replace

    def record(source, target):
        seen.append(os.path.basename(source))
        original(source, target)

    monkeypatch.setattr(os, "replace", record)
    atomic_write(tmp_path / "x.json", lambda handle: handle.write(b"{}"))
    assert seen[0].startswith(".fastgp-x.json.") and seen[0].endswith(".tmp")


def test_linked_metrics_csv_is_refused_and_its_target_untouched(finished_run, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("precious\n")
    (finished_run / "metrics.csv").unlink()
    (finished_run / "metrics.csv").symlink_to(elsewhere)
    assert _train(finished_run, "--steps", "6", "--resume") == 2
    err = _error(capsys)
    assert "symbolic links" in err and "metrics.csv" in err
    assert _train(finished_run, "--overwrite") == 2  # a link is never fastgp's to remove
    assert "metrics.csv" in _error(capsys)
    assert elsewhere.read_text() == "precious\n"
    assert (finished_run / "metrics.csv").is_symlink()


def test_linked_checkpoints_folder_is_refused_and_files_outside_kept(finished_run, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for step in (7, 8, 9, 10):  # would be "old checkpoints" beyond --keep-checkpoints
        (elsewhere / f"step_{step:08d}.pt").write_bytes(b"precious")
    for path in (finished_run / "checkpoints").iterdir():
        path.unlink()
    (finished_run / "checkpoints").rmdir()
    (finished_run / "checkpoints").symlink_to(elsewhere)
    assert _train(finished_run, "--steps", "6", "--resume") == 2
    assert "checkpoints/" in _error(capsys)
    assert sorted(path.read_bytes() for path in elsewhere.iterdir()) == [b"precious"] * 4


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


def test_run_folder_given_as_a_link_is_used(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert _train(tmp_path / "link") == 0
    assert load_checkpoint(real / "checkpoint.pt")["step"] == 4


def test_a_locked_run_folder_is_refused_naming_the_holder(tmp_path, capsys):
    with RunLock(tmp_path):
        before = _snapshot(tmp_path)
        assert _train(tmp_path) == 2
        err = _error(capsys)
        assert f"is in use by another fastgp process (pid {os.getpid()} on " in err
        assert _train(tmp_path, "--resume") == 2  # no checkpoint yet: refused before the lock
        capsys.readouterr()
        assert _snapshot(tmp_path) == before
    assert _train(tmp_path) == 0


def test_a_second_run_on_a_running_folder_is_refused(tmp_path, capsys, monkeypatch):
    """The run holds the lock from its start to its end: a second one started meanwhile (here
    from inside a training step) is refused and changes nothing."""
    original = Trainer._train_step
    outcomes = []

    def files_outside_tensorboard():
        # TensorBoard's writer appends events from a thread of the first run at any moment.
        return {name: data for name, data in _snapshot(tmp_path).items()
                if not name.startswith("tensorboard")}

    def start_a_second_run(self):
        if self.step == 2 and not outcomes:
            before = files_outside_tensorboard()
            outcomes.append(_train(tmp_path, "--overwrite"))
            outcomes.append(files_outside_tensorboard() == before)
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", start_a_second_run)
    assert _train(tmp_path) == 0
    assert outcomes == [2, True]
    assert f"in use by another fastgp process (pid {os.getpid()}" in capsys.readouterr().err
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_lock_is_released_when_a_run_fails(tmp_path, monkeypatch):
    def fail(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(Trainer, "_train_step", fail)
    with pytest.raises(RuntimeError, match="boom"):
        Trainer(TrainConfig(steps=2, hidden=16, eval_samples=64), tmp_path, progress=False).run()
    assert not (tmp_path / LOCK_FILE).exists()
    RunLock(tmp_path).acquire().release()


def test_resume_with_steps_at_or_below_the_checkpoint_is_refused(finished_run, capsys):
    before = _snapshot(finished_run)
    for steps in ("4", "2"):
        assert _train(finished_run, "--steps", steps, "--resume") == 2
        err = _error(capsys)
        assert f"its checkpoint is at step 4 and steps is {steps}; give --steps above 4" in err
    assert _snapshot(finished_run) == before


def test_resume_and_overwrite_together_are_refused(finished_run, capsys):
    assert _train(finished_run, "--steps", "6", "--resume", "--overwrite") == 2
    assert "give one of them" in _error(capsys)


BASE = TrainConfig(dataset="8gaussians", steps=3, hidden=16, eval_every=100, eval_samples=200)


def test_compare_refuses_a_finished_run_of_other_steps(tmp_path):
    compare(BASE, tmp_path, ("wgan-gp",), progress=False, report=lambda line: None)
    before = _snapshot(tmp_path / "wgan-gp")
    for steps in (2, 3 + 2):
        with pytest.raises(ValueError, match=rf"holds a run of other settings \(steps: 3 -> {steps}\)"):
            compare(dataclasses.replace(BASE, steps=steps), tmp_path, ("wgan-gp",),
                    progress=False, report=lambda line: None)
    assert _snapshot(tmp_path / "wgan-gp") == before


def test_compare_refuses_a_run_at_its_steps_that_did_not_finish(tmp_path):
    """Before: it was resumed with nothing to train, adding a duplicate evaluation row."""
    compare(BASE, tmp_path, ("wgan-gp",), progress=False, report=lambda line: None)
    (tmp_path / "wgan-gp" / "final_metrics.json").unlink()  # killed before the final evaluation
    before = _snapshot(tmp_path / "wgan-gp")
    with pytest.raises(ValueError, match="holds a run that reached step 3 of 3 but did not finish"):
        compare(BASE, tmp_path, ("wgan-gp",), progress=False, report=lambda line: None)
    assert _snapshot(tmp_path / "wgan-gp") == before


def test_sample_reads_the_config_saved_in_the_checkpoint(finished_run, tmp_path):
    assert main(["sample", "--run", str(finished_run), "--n", "9", "--out",
                 str(tmp_path / "a.npy")]) == 0
    config = json.loads((finished_run / "config.json").read_text())
    (finished_run / "config.json").write_text(json.dumps({**config, "hidden": 99, "noise_dim": 7}))
    assert main(["sample", "--run", str(finished_run), "--n", "9", "--out",
                 str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_sample_refuses_a_checkpoint_without_its_config(finished_run, tmp_path, capsys):
    state = load_checkpoint(finished_run / "checkpoint.pt")
    del state["config"]
    torch.save(state, finished_run / "checkpoint.pt")
    assert main(["sample", "--run", str(finished_run), "--n", "2", "--out",
                 str(tmp_path / "x.npy")]) == 2
    assert "holds no config" in _error(capsys)


def test_run_files_get_the_users_umask_not_private_modes(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "x.json", lambda handle: handle.write(b"{}"))
    finally:
        os.umask(previous)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
