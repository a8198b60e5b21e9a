"""The prepared GPU check: everything a first GPU machine must prove, in one run.

    python benchmarks/gpu_check.py [--out DIR] [--dry-run] [--device cuda]

On a machine with NVIDIA GPUs (``make gpu-check`` installs fastgp into the machine's own CUDA
torch first): every op × dtype × layout on every usable backend against the fp64 oracle; the
engine on the benchmark critics in fp64 and in fp32 with TF32 off and on; one optimizer step
after the engine against one after autograd; ``torch.compile`` and ``mode="reduce-overhead"``
(CUDA graphs) of the step; the drop-in penalty under bf16 and fp16 autocast; ``fastgp bench
--quick``; short ``fastgp train`` runs on 8 gaussians and digits; ``torchrun`` with two
processes when there are two GPUs. It prints one table (check, result, figure), writes it to
``DIR/summary.md`` with the bench CSV beside it, and exits non-zero when a check fails.

``--dry-run`` runs every check on the CPU (small sizes; Triton through its interpreter) and
reports the CUDA-only ones as skipped: CI runs it, so the script cannot rot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if "--dry-run" in sys.argv:
    # The Triton kernels run on CPU tensors only through the interpreter, which must be chosen
    # before triton is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

import fastgp  # noqa: E402
from fastgp import reference  # noqa: E402
from fastgp.ops.backend import resolve  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    check: str
    result: str  # "pass" | "FAIL" | "skip"
    figure: str


def relative_error(a, b) -> float:
    """``‖a − b‖ / ‖b‖`` over tensors or lists of tensors, in fp64 (NaN compares as failed)."""
    if isinstance(a, list | tuple):
        a = torch.cat([t.detach().double().flatten().cpu() for t in a])
        b = torch.cat([t.detach().double().flatten().cpu() for t in b])
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    error = float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-300))
    return error if error == error else float("inf")


#: Relative tolerances against the fp64 oracle (DESIGN §4; TF32 has a 10-bit mantissa).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2,
             torch.float16: 5e-3, "tf32": 5e-3}


class Checks:
    def __init__(self, device: torch.device, dry_run: bool, out: Path) -> None:
        self.device, self.dry_run, self.out = device, dry_run, out
        self.rows: list[Row] = []

    def run(self, name: str, check: Callable[[], str], cuda_only: bool = False) -> None:
        """One check: ``check()`` returns its figure or raises ``AssertionError`` with it."""
        if cuda_only and self.device.type != "cuda":
            self.rows.append(Row(name, "skip", "needs CUDA"))
            return
        started = time.perf_counter()
        try:
            figure = check()
            result = "pass"
        except AssertionError as failure:
            figure, result = str(failure), "FAIL"
        except Exception as error:  # a crash is a failed check, reported, not a stopped run
            figure, result = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}", "FAIL"
        figure = f"{figure} ({time.perf_counter() - started:.1f} s)"
        self.rows.append(Row(name, result, figure))
        print(f"{result:5} {name}: {figure}", flush=True)

    def table(self) -> str:
        lines = ["| check | result | figure |", "|---|---|---|"]
        lines += [f"| {r.check} | {r.result} | {r.figure} |" for r in self.rows]
        return "\n".join(lines)


def usable_backends(device: torch.device) -> list[str]:
    found = []
    for backend in ("torch", "native", "triton"):
        try:
            resolve(backend, device)
            found.append(backend)
        except RuntimeError:
            pass
    return found


def _layouts(shape: tuple[int, ...], dtype, device) -> dict[str, torch.Tensor]:
    """The same values in contiguous, channels-last and permuted memory."""
    x = torch.randn(shape, dtype=dtype, device=device)
    layouts = {"contiguous": x}
    if x.dim() == 4:
        layouts["channels_last"] = x.contiguous(memory_format=torch.channels_last)
    layouts["transposed"] = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    return layouts


def check_ops(checks: Checks, dtypes: list[torch.dtype]) -> None:
    """interpolate, norm_penalty and bias_leaky_relu per backend × dtype × layout against the
    fp64 oracle (reference.py), forward and first derivative."""
    device = checks.device
    shape = (5, 3, 9, 7) if checks.dry_run else (64, 32, 33, 31)
    for backend in usable_backends(device):
        for dtype in dtypes:
            def ops(backend=backend, dtype=dtype) -> str:
                worst = 0.0
                tolerance = TOLERANCE[dtype]
                for layout, real in _layouts(shape, dtype, device).items():
                    fake = torch.randn_like(real)
                    eps = torch.rand(shape[0], device=device)
                    mixed = fastgp.ops.interpolate(real, fake, eps, backend=backend)
                    oracle = reference.interpolate(real.double(), fake.double(), eps.double())
                    worst = max(worst, relative_error(mixed, oracle))
                    grad = real.clone().requires_grad_(True)
                    penalty, norms = fastgp.ops.norm_penalty(grad, 10.0, backend=backend)
                    (penalty_grad,) = torch.autograd.grad(penalty, grad)
                    oracle_grad = real.double().requires_grad_(True)
                    oracle_penalty, oracle_norms = reference.norm_penalty(oracle_grad, 10.0)
                    (oracle_penalty_grad,) = torch.autograd.grad(oracle_penalty, oracle_grad)
                    worst = max(worst, relative_error(norms, oracle_norms),
                                relative_error(penalty_grad, oracle_penalty_grad))
                    bias = torch.randn(shape[1], dtype=dtype, device=device)
                    out, _ = fastgp.ops.bias_leaky_relu(real, bias, 0.2, backend=backend)
                    shifted = real.double() + bias.double().view(1, -1, 1, 1)
                    expected = torch.nn.functional.leaky_relu(shifted, 0.2)
                    worst = max(worst, relative_error(out, expected))
                    assert worst <= tolerance, f"{layout}: error {worst:.1e} > {tolerance:.0e}"
                return f"max error {worst:.1e} (≤ {tolerance:.0e}), 3 layouts"
            checks.run(f"ops {backend} {str(dtype).removeprefix('torch.')}", ops)


BENCHMARK_CRITICS = ("mlp", "dcgan32", "resnet32", "dcgan32_in", "resnet32_sum", "dcgan32_sn")


def _engine_case(name: str, dtype, device, batch: int):
    from fastgp.perf.bench import CRITICS

    spec = CRITICS[name]
    torch.manual_seed(0)
    critic = spec.build().to(device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(1)
    real = torch.randn((batch, *spec.sample_shape), generator=generator).to(device, dtype)
    fake = torch.randn((batch, *spec.sample_shape), generator=generator).to(device, dtype)
    eps = torch.rand(batch, generator=generator).to(device, dtype)
    return critic, real, fake, eps


def _oracle_gradients(critic, real, fake, eps):
    """The canonical eager critic loss in fp64 and its parameter gradients."""
    import copy

    critic = copy.deepcopy(critic).double()
    real, fake, eps = real.double(), fake.double(), eps.double()
    loss = critic(fake).mean() - critic(real).mean()
    loss = loss + reference.gradient_penalty(lambda x: critic(x).reshape(x.shape[0]), real, fake,
                                             eps, 10.0)[0]
    return list(torch.autograd.grad(loss, list(critic.parameters()), allow_unused=True))


def _set_tf32(enabled: bool) -> tuple[bool, bool]:
    previous = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    return previous


def check_engine(checks: Checks) -> None:
    """FusedCritic.step on every benchmark critic against the fp64 oracle: fp64, fp32 with TF32
    off and (CUDA) on. The check sets the TF32 flags itself and restores them."""
    device = checks.device
    batch = 3 if checks.dry_run else 16
    critics = ("mlp", "dcgan32", "dcgan32_in") if checks.dry_run else BENCHMARK_CRITICS
    modes = [("fp64", torch.float64, False), ("fp32", torch.float32, False)]
    if device.type == "cuda":
        modes.append(("fp32 tf32", torch.float32, True))
    for name in critics:
        for label, dtype, tf32 in modes:
            def engine(name=name, dtype=dtype, tf32=tf32) -> str:
                critic, real, fake, eps = _engine_case(name, dtype, device, batch)
                expected = _oracle_gradients(critic, real, fake, eps)
                previous = _set_tf32(tf32)
                try:
                    fastgp.FusedCritic(critic).step(real, fake, eps=eps)
                finally:
                    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
                grads = [torch.zeros_like(p) if p.grad is None else p.grad
                         for p in critic.parameters()]
                expected = [torch.zeros_like(g) if e is None else e
                            for g, e in zip(grads, expected, strict=True)]
                error = relative_error(grads, expected)
                tolerance = TOLERANCE["tf32" if tf32 else dtype]
                assert error <= tolerance, f"error {error:.1e} > {tolerance:.0e}"
                return f"error {error:.1e} (≤ {tolerance:.0e})"
            checks.run(f"engine {name} {label}", engine)


def check_optimizer_step(checks: Checks) -> None:
    """One fused-Adam step after the engine equals one after autograd (gradient layouts)."""
    import copy

    def step() -> str:
        critic, real, fake, eps = _engine_case("dcgan32", torch.float64, checks.device, 4)
        twin = copy.deepcopy(critic)
        for model, use_engine in ((critic, True), (twin, False)):
            # fused Adam reads .grad by its layout: the engine must write autograd's layouts
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
            if use_engine:
                fastgp.FusedCritic(model).step(real, fake, eps=eps)
            else:  # .backward(): AccumulateGrad gives each .grad its parameter's layout
                loss = model(fake).mean() - model(real).mean()
                loss = loss + reference.gradient_penalty(
                    lambda x, m=model: m(x).reshape(x.shape[0]), real, fake, eps, 10.0)[0]
                loss.backward()
            optimizer.step()
        error = relative_error(list(critic.parameters()), list(twin.parameters()))
        assert error <= 1e-12, f"parameters differ by {error:.1e}"
        return f"parameters after one fused Adam step differ by {error:.1e}"
    checks.run("optimizer step after the engine", step)


def check_compile(checks: Checks) -> None:
    """torch.compile(fullgraph=True) of the engine step, and CUDA graphs (reduce-overhead)."""
    def compiled(mode: str | None) -> str:
        torch._dynamo.reset()
        name = "dcgan32"
        critic, real, fake, eps = _engine_case(name, torch.float32, checks.device, 4)
        fused = fastgp.FusedCritic(critic)

        def step(real, fake, eps):
            result = fused.step(real, fake, eps=eps, check_inputs=False)
            return result.loss, [p.grad.clone() for p in critic.parameters()]

        run = torch.compile(step, fullgraph=True, mode=mode)
        started = time.perf_counter()
        for _ in range(3):  # reduce-overhead records its graph on a later call
            loss, grads = run(real, fake, eps)
        seconds = time.perf_counter() - started
        eager_loss, eager_grads = step(real, fake, eps)
        error = relative_error(grads + [loss], eager_grads + [eager_loss])
        assert error <= 1e-4, f"compiled vs eager {error:.1e}"
        return f"{name}: compiled vs eager {error:.1e}, first 3 calls {seconds:.0f} s"
    checks.run("compile fullgraph", lambda: compiled(None))
    checks.run("compile reduce-overhead (CUDA graphs)", lambda: compiled("reduce-overhead"),
               cuda_only=True)


def check_autocast(checks: Checks) -> None:
    """The drop-in under autocast: autograd's path in the autocast dtype (fp16 with a scaler),
    and the explicit passes in fp32, both against the fp64 oracle."""
    device = checks.device
    dtypes = [torch.bfloat16] if device.type == "cpu" else [torch.bfloat16, torch.float16]
    for dtype in dtypes:
        def autocast(dtype=dtype) -> str:
            critic, real, fake, eps = _engine_case("dcgan32", torch.float32, device, 4)
            expected = _penalty_gradients(critic.double(), real.double(), fake.double(),
                                          eps.double(), "autograd", None)
            critic = critic.float()
            scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
            figures = []
            for method, tolerance in (("autograd", TOLERANCE[dtype] * 10), ("explicit", 1e-4)):
                with torch.autocast(device.type, dtype=dtype):
                    got = _penalty_gradients(critic, real, fake, eps, method, scaler)
                error = relative_error(got, expected)
                assert error <= tolerance, f"{method}: error {error:.1e} > {tolerance:.0e}"
                figures.append(f"{method} {error:.1e}")
            return ", ".join(figures)
        checks.run(f"drop-in under {str(dtype).removeprefix('torch.')} autocast", autocast)


def _penalty_gradients(critic, real, fake, eps, method, scaler):
    critic.zero_grad(set_to_none=True)
    value = fastgp.gradient_penalty(critic, real, fake, eps=eps, method=method, scaler=scaler)
    (value if scaler is None else scaler.scale(value)).backward()
    scale = 1.0 if scaler is None else scaler.get_scale()
    return [torch.zeros_like(p) if p.grad is None else p.grad / scale
            for p in critic.parameters()]


def _fastgp(*arguments: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastgp", *arguments], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def check_cli(checks: Checks) -> None:
    """fastgp bench --quick and short fastgp train runs, as a user starts them."""
    device = checks.device.type

    def bench() -> str:
        cases = ["--cases", "mlp-b256"] if checks.dry_run else []
        done = _fastgp("bench", "--quick", "--device", device, "--no-progress",
                       "--out", str(checks.out / "bench"), *cases)
        assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
        csv = checks.out / "bench" / "bench.csv"
        assert csv.is_file(), "no bench.csv written"
        return f"{len(csv.read_text().splitlines()) - 1} rows in {csv.name}"
    checks.run("fastgp bench --quick", bench)

    for dataset, steps in (("8gaussians", 20 if checks.dry_run else 300),
                           ("digits", 3 if checks.dry_run else 100)):
        def train(dataset=dataset, steps=steps) -> str:
            folder = checks.out / f"train-{dataset}"
            done = _fastgp("train", "--dataset", dataset, "--steps", str(steps), "--device",
                           device, "--out", str(folder), "--overwrite", "--no-progress",
                           "--eval-every", str(steps))
            assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
            assert (folder / "final_metrics.json").is_file(), "no final_metrics.json"
            metrics = json.loads((folder / "final_metrics.json").read_text())
            shown = {k: round(v, 3) for k, v in metrics.items() if isinstance(v, float)}
            return f"{steps} steps, {dict(list(shown.items())[:3])}"
        checks.run(f"fastgp train {dataset}", train)


def check_torchrun(checks: Checks) -> None:
    """Two processes on two GPUs (NCCL) through torchrun."""
    def torchrun() -> str:
        count = torch.cuda.device_count()
        if count < 2:
            return f"skipped: {count} GPU"
        folder = checks.out / "train-ddp"
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
             "fastgp", "train", "--steps", "50", "--device", "cuda", "--out", str(folder),
             "--overwrite", "--no-progress"], capture_output=True, text=True, timeout=600,
            cwd=REPO)
        assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
        return "2 processes, 50 steps"
    checks.run("torchrun 2 processes", torchrun, cuda_only=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu-check", help="folder for summary.md and CSVs")
    parser.add_argument("--dry-run", action="store_true",
                        help="every check on the CPU, small; CUDA-only checks skipped")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on a machine without a GPU", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    checks = Checks(device, args.dry_run, out)
    checks.run("environment", lambda: _environment(device))
    dtypes = [torch.float32, torch.float64] if args.dry_run else [
        torch.float32, torch.bfloat16, torch.float16, torch.float64]
    check_ops(checks, dtypes)
    check_engine(checks)
    check_optimizer_step(checks)
    check_compile(checks)
    check_autocast(checks)
    check_cli(checks)
    check_torchrun(checks)
    seconds = time.perf_counter() - started
    table = checks.table()
    failed = sum(row.result == "FAIL" for row in checks.rows)
    footer = (f"\n\n{len(checks.rows)} checks on {device}{' (dry run)' if args.dry_run else ''}: "
              f"{failed} failed, {sum(r.result == 'skip' for r in checks.rows)} skipped, "
              f"{seconds:.0f} s")
    (out / "summary.md").write_text(table + footer + "\n")
    print("\n" + table + footer)
    return 1 if failed else 0


def _environment(device: torch.device) -> str:
    tf32 = (f"TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
            f"cuDNN {torch.backends.cudnn.allow_tf32}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (f"torch {torch.__version__}, {name}, backends {usable_backends(device)}, {tf32}")


if __name__ == "__main__":
    sys.exit(main())
