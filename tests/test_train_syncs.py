"""No host syncs on the training loop's per-step path.

On a GPU the host queues work ahead of the device; each read of a device value on the host
(``.item()``, ``bool()``, ``.tolist()``), each pageable host-to-device copy, waits for all the work
queued before it. Counted here on the CPU: reads of tensor values on the host (every ``.item()``,
``bool()``, ``float()`` dispatches ``aten::_local_scalar_dense``; ``.tolist()`` and ``.numpy()``
of CPU tensors dispatch nothing, so they are counted where they are called). Where a GPU is
present the counted steps also run under ``torch.cuda.set_sync_debug_mode("error")``. Copies are
checked with mocks: on CUDA the data take pinned memory and ``non_blocking=True``.
"""

import contextlib
import dataclasses

import pytest
import torch
from torch.optim.swa_utils import AveragedModel
from torch.utils._python_dispatch import TorchDispatchMode

from fastgp.devices import host_to_device
from fastgp.models import mlp
from fastgp.train import TrainConfig, Trainer
from fastgp.train import trainer as trainer_module
from fastgp.train.averaging import generator_average
from fastgp.train.distributed import ProcessGroup

SMALL = dict(steps=10, hidden=16, batch_size=32, eval_samples=64, eval_every=100)


class _ScalarReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def host_reads():
    """``with host_reads() as reads:`` counts the host's reads of tensor values in ``reads()``."""

    @contextlib.contextmanager
    def counting():
        listed = []
        sync_check = (torch.cuda.set_sync_debug_mode if torch.cuda.is_available()
                      else lambda mode: None)
        with pytest.MonkeyPatch.context() as patch, _ScalarReads() as scalars:
            for name in ("tolist", "numpy"):
                original = getattr(torch.Tensor, name)

                def counted(self, *args, _original=original, **kwargs):
                    listed.append(1)
                    return _original(self, *args, **kwargs)

                patch.setattr(torch.Tensor, name, counted)
            sync_check("error")
            try:
                yield lambda: scalars.count + len(listed)
            finally:
                sync_check("default")

    return counting


def _trainer(tmp_path, **options):
    trainer = Trainer(TrainConfig(**(SMALL | options)), tmp_path, progress=False)
    trainer._train_step()  # the first step allocates (pinned buffers, optimizer state, caches)
    return trainer


@pytest.mark.parametrize("options", [
    {},  # the engine's critic step, generator average on
    {"critic_step": "tier1"},
    {"precision": "fp16"},  # autograd's step with loss scaling: the penalty unscales on device
    {"precision": "bf16"},
    {"loss": "gan", "penalty": "r1"},
    {"loss": "wgan-lp", "penalty_every": 2, "ema": 0.0},
    {"loss": "wgan-clip"},
    {"dataset": "digits", "batch_size": 8, "width": 8, "eval_samples": 16},
], ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()) or "default")
def test_a_training_step_reads_nothing_on_the_host(tmp_path, host_reads, options):
    trainer = _trainer(tmp_path, **options)
    with host_reads() as reads:
        for _ in range(2):
            trainer._train_step()
    assert reads() == 0


def test_fp16_with_an_optimizer_torch_cannot_step_on_the_device_reads_once_per_update(
        tmp_path, host_reads):
    """The documented exception: GradScaler decides on the host whether a non-fused optimizer
    (RMSprop, wgan-clip's) steps, one read per optimizer step. Fused Adam steps on the device."""
    trainer = _trainer(tmp_path, loss="wgan-clip", precision="fp16")
    with host_reads() as reads:
        trainer._train_step()
    assert reads() == trainer.config.n_critic + 1


@pytest.mark.parametrize("penalty", ["gp", "none"])  # norms from the penalty, or measured anew
def test_a_logged_row_is_read_at_once(tmp_path, host_reads, penalty):
    trainer = _trainer(tmp_path, penalty=penalty)
    stats = trainer._train_step()
    with host_reads() as reads:
        row = trainer._log_row(stats)
    assert reads() == 1
    assert set(row) == {"critic_loss", "generator_loss", "w_estimate", "penalty", "grad_norm_mean",
                        "grad_norm_std", "grad_norm_max", "lr"}
    assert all(isinstance(value, float) for value in row.values())


def test_the_data_reach_a_gpu_through_pinned_memory_without_blocking(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to",
                        lambda self, *args, **kwargs: calls.append(("to", args, kwargs)) or self)
    gpu = torch.device("cuda", 1)
    host_to_device(torch.zeros(3), gpu)
    assert calls == ["pin", ("to", (gpu,), {"non_blocking": True})]
    calls.clear()
    host_to_device(torch.zeros(3), torch.device("cpu"))
    assert calls == [("to", (torch.device("cpu"),), {})]  # nothing to pin for the CPU


def test_every_critic_step_copies_its_real_batch_with_host_to_device(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path)
    devices = []

    def spy(tensor, device):
        devices.append(device)
        return host_to_device(tensor, device)

    monkeypatch.setattr(trainer_module, "host_to_device", spy)
    trainer._train_step()
    assert devices == [trainer.device] * trainer.config.n_critic


@dataclasses.dataclass(frozen=True)
class _TwoProcessesInOne(ProcessGroup):
    """Rank 0 of a 2-process job whose twin never differs: collectives are identities, and
    ``events`` records each stop agreement (``any``) among the training steps."""

    events: list = dataclasses.field(default_factory=list)

    def broadcast_parameters(self, module):
        pass

    def average_gradients(self, module):
        pass

    def average(self, values):
        return values

    def concatenate(self, shard):
        return shard

    def gather(self, payload):
        return [payload] * self.world_size

    def any(self, flag, device):
        self.events.append("agree")
        return flag


def _two_process_trainer(tmp_path, monkeypatch, stop_during_step=None, **options):
    group = _TwoProcessesInOne(rank=0, world_size=2)
    trainer = Trainer(TrainConfig(**(SMALL | options)), tmp_path, progress=False, group=group)
    original = Trainer._train_step

    def step(self):
        group.events.append("step")
        if self.step == stop_during_step:
            self._stop_requested = True  # what Ctrl-C's handler does
        return original(self)

    monkeypatch.setattr(Trainer, "_train_step", step)
    group.events.clear()  # the folder check's agreement
    return trainer, group.events


def test_processes_agree_on_stopping_only_at_logged_steps(tmp_path, monkeypatch):
    trainer, events = _two_process_trainer(tmp_path, monkeypatch, steps=7, log_every=3)
    trainer.run()
    assert events == ["agree", *["step"] * 3, "agree", *["step"] * 3, "agree", "step"]


def test_a_stop_request_in_a_job_takes_effect_at_the_next_logged_step(tmp_path, monkeypatch):
    trainer, events = _two_process_trainer(tmp_path, monkeypatch, stop_during_step=4, steps=10,
                                           log_every=3)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert trainer.step == 6 and events.count("step") == 6


def _generator_with_buffers():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 2))


def _previous_average(generator, decay):
    """The average as written before, on PyTorch's AveragedModel (host reads, host counter)."""

    def update(averaged, current, num_averaged):
        step_decay = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay)
        for average, value in zip(averaged, current, strict=True):
            if average.is_floating_point():
                average.lerp_(value, (1 - step_decay).to(average.dtype))
            else:
                average.copy_(value)

    return AveragedModel(generator, multi_avg_fn=update, use_buffers=True)


def test_the_generator_average_is_bitwise_the_previous_one_and_loads_as_one():
    generator = _generator_with_buffers()
    average, previous = generator_average(generator, 0.9), _previous_average(generator, 0.9)
    for _ in range(6):  # past the warm-up's cap: d = min(0.9, (1 + n)/(10 + n))
        with torch.no_grad():
            for parameter in generator.parameters():
                parameter.add_(torch.randn_like(parameter))
        generator(torch.randn(16, 3))  # training mode: new running statistics, counter + 1
        average.update_parameters(generator)
        previous.update_parameters(generator)
    state, expected = average.state_dict(), previous.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    loaded = AveragedModel(_generator_with_buffers(), use_buffers=True)  # as load_generator does
    loaded.load_state_dict(state)


def test_the_generator_average_never_reads_its_counter_on_the_host():
    """On the meta device any read of a value on the host raises; the counter lives with the
    weights (PyTorch's AveragedModel keeps it in host memory and reads it twice per update)."""
    generator = mlp(2, 2, hidden=8, depth=2).to("meta")
    average = generator_average(generator, 0.999)
    assert average.n_averaged.device.type == "meta"
    for _ in range(3):
        average.update_parameters(generator)
    with pytest.raises(RuntimeError, match="meta"):  # what the previous average did
        _previous_average(generator, 0.999).to("meta").update_parameters(generator)
