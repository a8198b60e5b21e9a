"""OpCounter against counts worked out by hand."""

import torch
from torch import nn

from fastgp.perf.counting import count, distinct_bytes


def _linear(bias=True):
    torch.manual_seed(0)
    return nn.Linear(4, 3, bias=bias)


def test_linear_forward_by_hand():
    x = torch.randn(5, 4)
    counts, _ = count(_linear(), x)
    # aten.t (view) + aten.addmm; addmm: 2·B·in·out = 2·5·4·3 FLOPs
    assert counts.ops == 2 and counts.kernel_count == 1
    assert dict(counts.op_histogram) == {"aten.t.default": 1, "aten.addmm.default": 1}
    assert counts.flops == 120
    # bias 3 + x 20 + weightᵀ 12 + output 15 elements, fp32
    assert counts.gemm_bytes == (3 + 20 + 12 + 15) * 4 and counts.non_gemm_bytes == 0
    assert counts.peak_bytes == 15 * 4


def test_elementwise_bytes_count_broadcast_inputs_once():
    x, bias = torch.randn(5, 3), torch.randn(3)
    counts, _ = count(lambda: torch.relu(x + bias.expand(5, 3)))
    # expand is a view (no kernel); add reads 15 + 3 and writes 15; relu reads 15, writes 15
    assert counts.ops == 3 and counts.kernel_count == 2
    assert counts.non_gemm_bytes == (15 + 3 + 15 + 15 + 15) * 4
    assert counts.flops == 0


def test_first_order_backward_flops_by_hand():
    linear = _linear(bias=False)
    x = torch.randn(5, 4, requires_grad=True)

    def forward_backward():
        linear(x).sum().backward()

    counts, _ = count(forward_backward)
    # forward Y = X·Wᵀ, backward dX = dY·W and dW = dYᵀ·X: three 5×4×3 products of 120 FLOPs
    assert counts.flops == 3 * 120
    assert counts.op_histogram["aten.mm.default"] == 3


def test_peak_bytes_follow_frees():
    def allocate():
        a = torch.ones(1000)          # 4000 bytes live
        b = a * 2                     # 8000
        del a                         # 4000
        c = b + 1                     # 8000 again, never 12000
        return c

    counts, _ = count(allocate)
    assert counts.peak_bytes == 8000


def test_in_place_ops_allocate_nothing():
    x = torch.zeros(100)
    counts, _ = count(lambda: x.add_(1))
    assert counts.peak_bytes == 0
    assert counts.non_gemm_bytes == 2 * 400  # read and write of x


def test_counts_are_deterministic_for_a_gp_step():
    from fastgp.perf.profile import critic_step

    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(critic.parameters())
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    critic_step(critic, optimizer, real, fake, "reference")  # creates Adam's state
    first, _ = count(critic_step, critic, optimizer, real, fake, "reference")
    second, _ = count(critic_step, critic, optimizer, real, fake, "reference")
    assert first.summary() == second.summary()
    assert first.op_histogram == second.op_histogram


def test_distinct_bytes():
    assert distinct_bytes(torch.zeros(3, 4)) == 48
    assert distinct_bytes(torch.zeros(4).expand(3, 4)) == 16
    assert distinct_bytes(torch.zeros(0, 4)) == 0
    assert distinct_bytes(torch.zeros(3, 4, dtype=torch.float64).t()) == 96


def test_in_place_matmul_accumulation_counts_its_flops():
    accumulator, a, b = torch.zeros(4, 5), torch.randn(4, 3), torch.randn(3, 5)
    counts, _ = count(lambda: accumulator.addmm_(a, b))
    assert counts.flops == 2 * 4 * 3 * 5
