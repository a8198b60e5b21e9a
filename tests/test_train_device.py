"""Where training runs: the default device (``auto``), the GPU of each process of a torchrun job
(made current before the process group exists), and the opt-in deterministic mode.

CUDA is mocked (``torch.cuda.is_available``, ``device_count``, ``set_device``, the process-group
calls): what is checked is which device each process chooses and in which order it tells torch,
which is the logic that differs between one GPU and several.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from fastgp import cli
from fastgp.devices import check_device, make_deterministic, resolve_device
from fastgp.train import TrainConfig, Trainer
from fastgp.train.distributed import ProcessGroup

TINY = dict(steps=2, hidden=16, eval_samples=64, batch_size=32, eval_every=100)
REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpus(monkeypatch):
    """A machine with 4 mocked GPUs; ``calls`` records what is asked of torch, in order."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(
        ("set_device", torch.device(device))))
    return calls


@pytest.fixture
def torchrun(monkeypatch, gpus):
    """The environment torchrun gives process ``LOCAL_RANK`` of a 4-process job on one machine,
    with a process group that only records how it is made."""
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **options: gpus.append(
        ("init_process_group", backend, options.get("device_id"))))
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)

    def launch(local_rank):
        environment = {"WORLD_SIZE": "4", "RANK": str(local_rank), "LOCAL_RANK": str(local_rank)}
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(dist, "get_rank", lambda: local_rank)
        return gpus

    return launch


@pytest.mark.parametrize("local_rank", [0, 1, 3])
@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_each_process_makes_its_gpu_current_before_joining_the_job(torchrun, local_rank, device):
    calls = torchrun(local_rank)
    group = ProcessGroup.from_environment(device)
    gpu = torch.device("cuda", local_rank)
    assert calls == [("set_device", gpu), ("init_process_group", "nccl", gpu)]
    assert (group.rank, group.world_size, group.local_rank) == (local_rank, 4, local_rank)
    calls.clear()
    assert group.select_device(device) == gpu  # what the trainer trains on
    assert calls == [("set_device", gpu)]


def test_cpu_processes_join_over_gloo_without_touching_a_gpu(torchrun):
    calls = torchrun(1)
    ProcessGroup.from_environment("cpu")
    assert calls == [("init_process_group", "gloo", None)]


@pytest.mark.parametrize("local_rank, device, message", [
    (1, "cuda:0", "device 'cuda:0' names one GPU for all 4 processes"),
    (3, "cuda", "LOCAL_RANK 3 asks for GPU 3, and 2 GPU(s) are visible"),
])
def test_a_job_with_more_processes_than_gpus_or_one_shared_gpu_is_refused(torchrun, monkeypatch,
                                                                           local_rank, device,
                                                                           message):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = torchrun(local_rank)
    with pytest.raises(ValueError, match=re.escape(message)):
        ProcessGroup.from_environment(device)
    assert calls == []  # refused before any GPU is chosen or any process group made


@pytest.mark.parametrize("device, current, expected", [
    ("cuda", 2, 2), ("cuda:3", 0, 3), ("auto", 1, 1),
])
def test_one_process_makes_its_gpu_current(gpus, monkeypatch, device, current, expected):
    """Triton launches on the current device, whatever device the tensors are on."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    assert ProcessGroup().select_device(device) == torch.device("cuda", expected)
    assert gpus == [("set_device", torch.device("cuda", expected))]
    with pytest.raises(ValueError, match="device 'cuda:7' asks for GPU 7, and 4 GPU"):
        ProcessGroup().select_device("cuda:7")


def test_the_nccl_barrier_runs_on_this_processs_gpu(gpus, monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(dist, "barrier", lambda **options: gpus.append(("barrier", options)))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: gpus.append(("destroy",)))
    ProcessGroup(rank=2, world_size=4, local_rank=2).close()
    assert gpus == [("barrier", {"device_ids": [2]}), ("destroy",)]


def test_the_trainer_trains_on_the_device_its_group_selects(tmp_path, monkeypatch):
    chosen = []

    def select(self, device):
        chosen.append(device)
        return torch.device("cpu")

    monkeypatch.setattr(ProcessGroup, "select_device", select)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trainer = Trainer(TrainConfig(**TINY), tmp_path, progress=False)
    assert chosen == ["cuda"]  # auto, resolved where CUDA is available
    assert trainer.config.device == "cuda"  # what config.json records


@pytest.mark.parametrize("cuda, expected", [(True, "cuda"), (False, "cpu")])
def test_auto_is_the_default_and_picks_cuda_where_available(monkeypatch, cuda, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert TrainConfig().device == "auto"
    assert resolve_device("auto") == expected
    assert TrainConfig().resolved("toy").device == expected
    assert TrainConfig(device="cpu").resolved("toy").device == "cpu"  # an explicit device stays
    assert check_device("auto", allow_auto=True) == "auto"
    with pytest.raises(ValueError, match="'auto' is not available"):
        check_device("auto")  # commands that do not resolve it (profile, bench) refuse it


class _Chosen(Exception):
    """Raised by the stand-in trainer once it has the CLI's config."""


@pytest.mark.parametrize("command", ["train", "compare"])
def test_the_cli_trains_on_auto_by_default(monkeypatch, command, tmp_path):
    seen = []

    def trainer(config, *args, **kwargs):
        seen.append(config.device)
        raise _Chosen

    monkeypatch.setattr("fastgp.train.trainer.Trainer", trainer)
    monkeypatch.setattr("fastgp.train.compare.Trainer", trainer)
    with pytest.raises(_Chosen):
        cli.main([command, "--out", str(tmp_path / "run"), "--no-progress"])
    assert seen == ["auto"]


def test_a_cli_run_without_a_gpu_trains_on_the_cpu_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    assert cli.main(["train", "--out", str(run), "--steps", "2", "--hidden", "16",
                     "--eval-samples", "64", "--no-progress"]) == 0
    assert "generator steps on cpu ->" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_trains_on_auto_unless_a_device_is_given():
    def run_command(*variables, environment=None):
        # -o: take the installed venv as up to date; -n: print the commands, run nothing
        # Under `make test` the outer make's level and flags would make this one print
        # "Entering/Leaving directory" lines: run it as a top-level make.
        outer = {"MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES"}
        base = {key: value for key, value in os.environ.items() if key not in outer}
        result = subprocess.run(["make", "--no-print-directory", "-n", "-o", ".venv/.installed",
                                 "run", *variables],
                                cwd=REPOSITORY, capture_output=True, text=True, check=True,
                                env=dict(base, **(environment or {})))
        return result.stdout.splitlines()[-1]

    assert run_command().endswith("fastgp train --out runs/latest --overwrite --device auto")
    assert run_command("DEVICE=cpu").endswith("--device cpu")
    # a variable of the user's environment that happens to be called DEVICE is not an option
    assert run_command(environment={"DEVICE": "/dev/sda"}).endswith("--device auto")


@pytest.fixture
def global_settings(monkeypatch):
    """The process-wide settings deterministic mode changes, restored after the test."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # restored (or removed) afterwards
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())

    def current():
        return (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                torch.are_deterministic_algorithms_enabled(),
                os.environ.get("CUBLAS_WORKSPACE_CONFIG"))

    yield current
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def test_deterministic_mode_is_off_unless_asked_and_changes_nothing_global(global_settings,
                                                                           tmp_path):
    torch.backends.cudnn.benchmark = True  # a user's own choice must survive a run
    before = global_settings()
    Trainer(TrainConfig(**TINY), tmp_path, progress=False).run()
    assert global_settings() == before
    assert json.loads((tmp_path / "config.json").read_text())["deterministic"] is False


def test_deterministic_mode_sets_cudnn_cublas_and_torch_and_is_saved(global_settings, tmp_path):
    torch.backends.cudnn.benchmark = True
    trainer = Trainer(TrainConfig(**TINY, deterministic=True), tmp_path, progress=False)
    assert global_settings() == (True, False, True, ":4096:8")
    trainer.run()  # the training step has deterministic versions of all its ops on the CPU
    assert json.loads((tmp_path / "config.json").read_text())["deterministic"] is True


def test_deterministic_mode_refuses_a_cublas_workspace_it_cannot_use(global_settings,
                                                                     monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(ValueError, match="CUBLAS_WORKSPACE_CONFIG .* sets ':0:0'"):
        make_deterministic()
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    make_deterministic()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"  # a valid choice is kept


def test_the_cli_flag_reaches_the_config(monkeypatch, tmp_path):
    seen = []

    def trainer(config, *args, **kwargs):
        seen.append(config.deterministic)
        raise _Chosen

    monkeypatch.setattr("fastgp.train.trainer.Trainer", trainer)
    for flags in ([], ["--deterministic"]):
        with pytest.raises(_Chosen):
            cli.main(["train", "--out", str(tmp_path / "run"), "--no-progress", *flags])
    assert seen == [False, True]


def test_resume_keeps_the_deterministic_choice_and_reads_older_configs(global_settings, tmp_path):
    """A resumed run must compute as the run it continues; a checkpoint written before the option
    existed holds no ``deterministic`` and ran without it."""
    config = TrainConfig(**(TINY | {"steps": 1}))
    Trainer(config, tmp_path, progress=False).run()
    with pytest.raises(ValueError, match="deterministic: False -> True"):
        Trainer(TrainConfig(**TINY, deterministic=True), tmp_path, progress=False, resume=True)
    checkpoint = tmp_path / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["config"]["deterministic"]
    torch.save(state, checkpoint)
    resumed = Trainer(TrainConfig(**TINY), tmp_path, progress=False, resume=True)
    assert resumed.step == 1
