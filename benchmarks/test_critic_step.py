"""pytest-benchmark suite: the WGAN-GP critic step of every penalty path on the standard matrix.

Run with ``make bench-pytest`` or ``.venv/bin/python -m pytest benchmarks`` (add
``--benchmark-json=FILE`` to keep results). Each benchmark's ``extra_info`` holds the step's
machine-independent counts, its modeled H100 time and the process's fp32 precision settings
(TF32). Never part of the test suite: timings are reported, not asserted. ``fastgp bench`` runs
the same matrix interleaved in one process and writes CSV, Markdown and a chart.
"""

import copy

import pytest
import torch

from fastgp.models import paper_adam
from fastgp.perf.bench import CRITICS, STANDARD_MATRIX
from fastgp.perf.counting import count
from fastgp.perf.profile import PATHS, critic_step, float32_precision
from fastgp.perf.roofline import modeled_time

PATH_IDS = [*PATHS, "nogp"]


@pytest.mark.parametrize("path", [*PATHS, None], ids=PATH_IDS)
@pytest.mark.parametrize("case", STANDARD_MATRIX, ids=[case.name for case in STANDARD_MATRIX])
def test_critic_step(benchmark, case, path):
    spec = CRITICS[case.critic]
    torch.manual_seed(0)
    critic = copy.deepcopy(spec.build())
    optimizer = paper_adam(critic.parameters())
    real = torch.randn(case.batch, *spec.sample_shape)
    fake = torch.randn(case.batch, *spec.sample_shape)

    def step():
        return critic_step(critic, optimizer, real, fake, path)

    step()
    counts, _ = count(step)
    benchmark.group = case.name
    benchmark.extra_info.update(counts.summary())
    benchmark.extra_info["modeled_h100_seconds"] = modeled_time(counts.kernels).seconds
    benchmark.extra_info["torch_version"] = torch.__version__
    benchmark.extra_info.update(float32_precision())
    benchmark.pedantic(step, rounds=5, warmup_rounds=1, iterations=1)
