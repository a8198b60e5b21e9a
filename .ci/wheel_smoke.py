"""Run inside the fresh environment of .ci/wheel_check.sh: the installed wheel imports, every
backend usable on the CPU runs each op against the torch composite in fp64, the drop-in penalty
runs, and the training commands, whose extra is not installed, say so in one line."""

import subprocess
import sys

import torch

import fastgp
from fastgp.extras import missing_train_packages
from fastgp.ops import native
from fastgp.ops.backend import environment_report

location = fastgp.__file__
assert "site-packages" in location, f"fastgp was imported from {location}, not the wheel"
print(f"fastgp {fastgp.__version__} from {location}; torch {torch.__version__}; "
      f"fastgp._C built against torch {native.built_with()}")

usable = [name for name, state in environment_report()["backends"]["cpu"].items()
          if state == "usable"]
assert "native" in usable, f"the wheel's native kernels do not load: {native.load_error()}"
generator = torch.Generator().manual_seed(0)
real, fake = (torch.randn(4, 3, 8, 8, generator=generator, dtype=torch.float64) for _ in range(2))
eps = torch.rand(4, generator=generator, dtype=torch.float64)
bias = torch.randn(3, generator=generator, dtype=torch.float64)
expected = fastgp.bias_leaky_relu(fastgp.interpolate(real, fake, eps, backend="torch"), bias,
                                  backend="torch")[0]
expected = fastgp.norm_penalty(expected, backend="torch")[0]
for backend in usable:
    mixed = fastgp.interpolate(real, fake, eps, backend=backend)
    activated, _ = fastgp.bias_leaky_relu(mixed, bias, backend=backend)
    penalty, _ = fastgp.norm_penalty(activated, backend=backend)
    error = abs(penalty.item() - expected.item()) / abs(expected.item())
    assert error <= 1e-12, (backend, error)
    print(f"backend {backend}: interpolate -> bias_leaky_relu -> norm_penalty = "
          f"{penalty.item():.6f} (relative error {error:.1e} against torch)")

torch.manual_seed(0)
critic = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.LeakyReLU(0.2), torch.nn.Linear(16, 1))
print(f"gradient_penalty on an MLP critic: "
      f"{fastgp.gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2)).item():.6f}")

missing = missing_train_packages()
assert missing, "the train extra was installed: this check is of the core install"
result = subprocess.run([sys.executable, "-m", "fastgp", "train", "--steps", "1"],
                        capture_output=True, text=True)
lines = result.stderr.strip().splitlines()
assert result.returncode == 1 and len(lines) == 1 and "fastgp[train]" in lines[0], result
print(f"fastgp train without the extra (missing {', '.join(missing)}): exit 1, {lines[0]!r}")
