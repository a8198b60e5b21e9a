"""The training job end to end through the CLI: run folder, sampling, interruption, repeatability."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from cli_helpers import one_line_error

from fastgp.cli import main
from fastgp.train import TrainConfig, Trainer, load_generator
from fastgp.train.run_folder import load_checkpoint

TIMINGS = {"seconds", "seconds_per_step"}  # wall-clock columns differ between identical runs
TINY = ["--steps", "20", "--hidden", "16", "--eval-every", "10", "--no-progress"]


def _metrics_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    assert main(["train", "--out", str(run_dir), *TINY]) == 0
    return run_dir


def test_run_folder_contents(tiny_run):
    names = {path.name for path in tiny_run.iterdir()}
    assert {"config.json", "metrics.csv", "final_metrics.json", "checkpoint.pt", "samples.png",
            "samples_step000010.png", "curves.png"} <= names
    assert not [name for name in names if name.endswith(".tmp")]
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["dataset"] == "8gaussians" and config["steps"] == 20 and config["hidden"] == 16
    assert config["gp_weight"] == 0.1 and config["lr"] == 1e-3
    assert (config["beta1"], config["beta2"], config["n_critic"]) == (0.5, 0.9, 5)


def test_report_shows_settings_metrics_evaluations_and_figures(tiny_run):
    report = (tiny_run / "report.md").read_text()
    assert report.startswith("# 8gaussians: wgan-gp, 20 generator steps")
    assert "penalty: gp (λ = 0.1)" in report and "critic step: engine" in report
    final = json.loads((tiny_run / "final_metrics.json").read_text())
    assert f"| modes covered | {final['modes_covered']}/8 |" in report
    evaluation_rows = [line for line in report.splitlines() if line.startswith("| 10 |")
                       or line.startswith("| 20 |")]
    assert len(evaluation_rows) == 2  # one per evaluation, steps 10 and 20
    for name in ("samples.png", "curves.png"):
        assert f"![{name}]({name})" in report


def test_tensorboard_log_holds_the_logged_scalars(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run / "tensorboard"))
    events.Reload()
    w_estimates = events.Scalars("train/w_estimate")
    assert [event.step for event in w_estimates] == [10, 20]
    logged = [float(row["w_estimate"]) for row in _metrics_rows(tiny_run)]
    assert [event.value for event in w_estimates] == pytest.approx(logged, rel=1e-6)
    assert [event.step for event in events.Scalars("eval/high_quality_share")] == [10, 20]


def test_metrics_csv_and_final_metrics(tiny_run):
    rows = _metrics_rows(tiny_run)
    assert [int(row["step"]) for row in rows] == [10, 20]
    for row in rows:
        assert all(np.isfinite(float(value)) for value in row.values())
        assert float(row["penalty"]) >= 0
    final = json.loads((tiny_run / "final_metrics.json").read_text())
    assert final["steps"] == 20 and final["num_modes"] == 8 and not final["interrupted"]
    assert 0 <= final["modes_covered"] <= 8 and 0 <= final["high_quality_share"] <= 1
    assert sum(final["samples_per_mode"]) == round(final["high_quality_share"] * 2500)


def test_sample_command_writes_the_generators_output(tiny_run, tmp_path):
    out = tmp_path / "samples.npy"
    assert main(["sample", "--run", str(tiny_run), "--n", "123", "--out", str(out), "--seed", "4"]) == 0
    samples = np.load(out)
    assert samples.shape == (123, 2) and samples.dtype == np.float32
    generator, config = load_generator(tiny_run)
    noise = torch.randn(123, config.noise_dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = generator(noise).numpy()
    np.testing.assert_array_equal(samples, expected)


def test_checkpoint_holds_the_trained_state(tiny_run):
    state = load_checkpoint(tiny_run / "checkpoint.pt")
    assert state["step"] == 20
    generator, _ = load_generator(tiny_run)  # samples come from the weight average
    for name, tensor in generator.state_dict().items():
        assert torch.equal(tensor, state["generator_average"][f"module.{name}"])
        assert not torch.equal(tensor, state["generator"][name])


def test_weight_average_follows_its_recurrence(tmp_path, monkeypatch):
    """ema₁ = θ₁, emaₖ = dₖ·emaₖ₋₁ + (1 − dₖ)·θₖ, dₖ = min(d, k/(9 + k)) after each generator step."""
    decay = 0.25  # d₂ = 2/11 and d₃ = 3/12 by the warm-up, d₄ = min(0.25, 4/13) by the cap
    config = TrainConfig(steps=4, eval_every=100, eval_samples=64, hidden=16, ema=decay)
    trainer = Trainer(config, tmp_path, progress=False)
    weights = []
    original = Trainer._train_step

    def record(self):
        result = original(self)
        weights.append({k: v.detach().clone().double() for k, v in self.generator.state_dict().items()})
        return result

    monkeypatch.setattr(Trainer, "_train_step", record)
    trainer.run()
    expected = weights[0]
    for index, current in enumerate(weights[1:], start=2):
        d = min(decay, index / (9 + index))
        expected = {k: d * expected[k] + (1 - d) * current[k] for k in expected}
    for name, tensor in trainer.sampler.state_dict().items():
        torch.testing.assert_close(tensor.double(), expected[name], rtol=1e-6, atol=1e-7)


def test_same_seed_same_run(tmp_path):
    for name in ("a", "b"):
        assert main(["train", "--out", str(tmp_path / name), *TINY, "--seed", "7"]) == 0
    strip = lambda rows: [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]  # noqa: E731
    assert strip(_metrics_rows(tmp_path / "a")) == strip(_metrics_rows(tmp_path / "b"))


def test_interrupt_saves_checkpoint_and_metrics(tmp_path, monkeypatch):
    original = Trainer._train_step

    def interrupt_at_step_7(self):
        if self.step == 7:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", interrupt_at_step_7)
    assert main(["train", "--out", str(tmp_path), *TINY]) == 130
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 7
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["interrupted"] and final["steps"] == 7


def test_sample_errors_are_clear(tmp_path, tiny_run, capsys):
    assert main(["sample", "--run", str(tmp_path), "--n", "5", "--out", str(tmp_path / "x.npy")]) == 2
    assert "is not a fastgp run folder: checkpoint.pt is missing" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["sample", "--run", str(broken), "--n", "5", "--out", str(tmp_path / "x.npy")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert main(["sample", "--run", str(tiny_run), "--n", "5", "--out", str(tmp_path / "x.csv")]) == 2
    assert "must end in .npy or .png" in capsys.readouterr().err


def _foreign_checkpoints(tiny_run):
    """Torch files that load without pickle but are no fastgp checkpoint, and the error each gets
    from sample and from resume."""
    without_rng = load_checkpoint(tiny_run / "checkpoint.pt")
    del without_rng["rng"]
    return [
        ([1, 2, 3], "is not a fastgp checkpoint: it holds a list, not a dict",
         "is not a fastgp checkpoint: it holds a list, not a dict"),
        ({"weight": torch.zeros(2)}, "is not a fastgp checkpoint: missing keys ['format', "
         "'sample_shape', 'generator']", "is not a fastgp checkpoint: missing keys ['format']"),
        (without_rng, None, "is not a fastgp checkpoint: missing keys ['rng']; it cannot be resumed"),
    ]


def test_sample_and_resume_refuse_a_foreign_checkpoint_in_one_line(tmp_path, tiny_run, capsys):
    for index, (state, sample_error, resume_error) in enumerate(_foreign_checkpoints(tiny_run)):
        run = tmp_path / f"run{index}"
        shutil.copytree(tiny_run, run)
        torch.save(state, run / "checkpoint.pt")
        code = main(["sample", "--run", str(run), "--n", "3", "--out", str(tmp_path / "s.npy")])
        if sample_error is None:  # sampling needs no random streams
            assert code == 0
        else:
            assert code == 2
            one_line_error(capsys.readouterr().err, "sample", str(run / "checkpoint.pt"),
                           sample_error)
        assert main(["train", "--out", str(run), *TINY, "--steps", "30", "--resume"]) == 2
        one_line_error(capsys.readouterr().err, "train", resume_error)


def test_sample_refuses_a_checkpoint_whose_weights_do_not_fit_its_config(tmp_path, tiny_run,
                                                                        capsys):
    run = tmp_path / "edited"
    shutil.copytree(tiny_run, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config"]["hidden"] = 32
    torch.save(state, run / "checkpoint.pt")
    assert main(["sample", "--run", str(run), "--n", "3", "--out", str(tmp_path / "s.npy")]) == 2
    one_line_error(capsys.readouterr().err, "sample", "do not fit the models of its config",
                   "size mismatch for module.0.weight")


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        TrainConfig(steps=0).validate()
    with pytest.raises(ValueError, match="unknown config keys"):
        TrainConfig.from_dict({"dataset": "8gaussians", "learning_rate": 1.0})


def test_critic_step_uses_the_engine_when_it_supports_the_critic(tmp_path):
    from fastgp.train.trainer import TrainConfig, Trainer

    config = TrainConfig(steps=2, eval_every=100, eval_samples=64, hidden=16)
    assert Trainer(config, tmp_path / "a", progress=False).objectives.engine is not None
    tier1 = TrainConfig(steps=2, eval_every=100, eval_samples=64, hidden=16, critic_step="tier1")
    assert Trainer(tier1, tmp_path / "b", progress=False).objectives.engine is None
    with pytest.raises(ValueError, match="critic_step"):
        Trainer(TrainConfig(critic_step="fast"), tmp_path / "c", progress=False)


def test_engine_and_tier1_critic_steps_train_alike(tmp_path):
    """Same seed, data and ε: the two critic steps differ by rounding, which Adam can turn into
    at most a few learning-rate-sized steps on near-zero gradient components."""
    from fastgp.train.trainer import TrainConfig, Trainer

    finals, logs = [], []
    for path in ("engine", "tier1"):
        config = TrainConfig(steps=5, eval_every=100, eval_samples=64, hidden=16, log_every=1,
                             critic_step=path)
        trainer = Trainer(config, tmp_path / path, progress=False)
        trainer.run()
        finals.append([p.detach().clone() for p in trainer.critic.parameters()])
        with open(tmp_path / path / "metrics.csv") as handle:
            logs.append([{k: float(v) for k, v in row.items() if k not in TIMINGS}
                         for row in csv.DictReader(handle)])
    for engine_param, tier1_param in zip(*finals, strict=True):
        torch.testing.assert_close(engine_param, tier1_param, rtol=0, atol=5 * trainer.config.lr)
    for engine_row, tier1_row in zip(*logs, strict=True):
        for column in ("w_estimate", "penalty", "grad_norm_mean", "critic_loss"):
            assert engine_row[column] == pytest.approx(tier1_row[column], rel=1e-3, abs=1e-6)


def _resume_config(steps, lr_schedule="linear"):
    return TrainConfig(steps=steps, eval_every=3, eval_samples=64, hidden=16, log_every=1,
                       lr_schedule=lr_schedule)


def test_extending_a_run_matches_an_uninterrupted_one(tmp_path):
    """A 3-step run resumed to 6 steps equals a 6-step run (constant learning rate: a linear
    decay depends on the total number of steps)."""
    whole = Trainer(_resume_config(6, "constant"), tmp_path / "whole", progress=False)
    whole.run()
    Trainer(_resume_config(3, "constant"), tmp_path / "split", progress=False).run()
    resumed = Trainer(_resume_config(6, "constant"), tmp_path / "split", progress=False, resume=True)
    assert resumed.step == 3
    resumed.run()
    for a, b in zip(whole.critic.parameters(), resumed.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(whole.generator.parameters(), resumed.generator.parameters(), strict=True):
        assert torch.equal(a, b)
    rows = []
    for folder in ("whole", "split"):
        with open(tmp_path / folder / "metrics.csv") as handle:
            rows.append([{k: v for k, v in row.items() if k not in TIMINGS}
                         for row in csv.DictReader(handle)])
    assert rows[0] == rows[1] and len(rows[0]) == 6


def test_resume_refuses_a_changed_config_or_a_foreign_checkpoint(tmp_path):
    Trainer(_resume_config(2), tmp_path / "run", progress=False).run()
    changed = _resume_config(4)
    changed.gp_weight = 1.0
    with pytest.raises(ValueError, match="gp_weight"):
        Trainer(changed, tmp_path / "run", progress=False, resume=True)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    del state["processes"]
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match="cannot be resumed"):
        Trainer(_resume_config(4), tmp_path / "run", progress=False, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(_resume_config(4), tmp_path / "empty", progress=False, resume=True)


def test_sigterm_stops_after_the_current_step_and_the_run_resumes_exactly(tmp_path, monkeypatch):
    import os
    import signal

    original = Trainer._train_step

    def terminate_during_step_4(self):
        row = original(self)
        if self.step == 3:  # the signal arrives while step 4 is being computed
            os.kill(os.getpid(), signal.SIGTERM)
        return row

    monkeypatch.setattr(Trainer, "_train_step", terminate_during_step_4)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_resume_config(6), tmp_path / "split", progress=False).run()
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == 4
    monkeypatch.setattr(Trainer, "_train_step", original)
    resumed = Trainer(_resume_config(6), tmp_path / "split", progress=False, resume=True)
    resumed.run()
    whole = Trainer(_resume_config(6), tmp_path / "whole", progress=False)
    whole.run()
    for a, b in zip(whole.critic.parameters(), resumed.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(whole.sampler.parameters(), resumed.sampler.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_last_k_checkpoints_are_kept_and_load(tmp_path):
    config = TrainConfig(steps=9, eval_every=2, eval_samples=64, hidden=16, keep_checkpoints=2)
    Trainer(config, tmp_path, progress=False).run()
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["step_00000008.pt", "step_00000009.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / kept[0])["step"] == 8
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 9


def test_cli_resume_continues_a_run_to_more_steps(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), *TINY]) == 0
    first = load_checkpoint(tmp_path / "checkpoint.pt")["step"]
    more = list(TINY)
    more[more.index("--steps") + 1] = str(first + 4)
    assert main(["train", "--out", str(tmp_path), *more, "--resume"]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == first + 4
    assert "critic step: engine" in capsys.readouterr().out


def test_kill_9_loses_at_most_one_interval_and_never_a_loadable_checkpoint(tmp_path):
    """SIGKILL at arbitrary moments (mid-step, mid-evaluation, mid-write): the checkpoint always
    loads, is at most one evaluation interval behind the last logged step, and resumes."""
    import random
    import subprocess
    import sys
    import time

    run, interval = tmp_path / "run", 3
    command = [sys.executable, "-m", "fastgp", "train", "--out", str(run), "--steps", "100000",
               "--hidden", "16", "--eval-every", str(interval), "--eval-samples", "64",
               "--log-every", "1", "--no-progress"]
    environment = dict(__import__("os").environ, OMP_NUM_THREADS="1")
    rng, reached = random.Random(0), 0
    for attempt in range(2):
        process = subprocess.Popen(command + (["--resume"] if attempt else []), env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until this process has checkpointed past `reached`
            try:
                if load_checkpoint(run / "checkpoint.pt")["step"] > reached + interval:
                    break
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))
        process.kill()
        process.wait()
        state = load_checkpoint(run / "checkpoint.pt")
        last_logged = int(_metrics_rows(run)[-1]["step"])
        assert last_logged - interval <= state["step"] <= last_logged
        assert state["step"] > reached
        reached = state["step"]
    finish = command + ["--resume"]
    finish[finish.index("--steps") + 1] = str(reached + 2)
    assert subprocess.run(finish, env=environment, capture_output=True).returncode == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == reached + 2
    assert not list(run.glob(".*.tmp"))
