"""What ``import fastgp`` loads, its lazily loaded names, and plots that leave matplotlib's backend
alone. Each check runs in a fresh interpreter: the test process has loaded everything already."""

import json
import os
import subprocess
import sys
import textwrap

# Modules ``import fastgp`` must not load: the measurement tools, the benchmark, the trainer and the
# libraries of plots, data and metrics.
HEAVY = ("matplotlib", "fastgp.perf", "fastgp.train", "ot", "sklearn", "PIL", "tqdm")


def _run(script: str, **environment: str) -> dict:
    """Run ``script`` in a fresh interpreter; it prints one JSON object as its last line."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                            text=True, timeout=300, env={**os.environ, **environment})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_import_loads_neither_the_tools_nor_the_trainer_nor_their_libraries():
    # torch loads some of these itself (torch.hub loads tqdm): what counts is what fastgp adds.
    loaded = _run("""
        import json, sys
        import torch
        before = set(sys.modules)
        import fastgp
        print(json.dumps({"added": sorted(set(sys.modules) - before), "all": sorted(sys.modules)}))
    """)
    for name in HEAVY:
        added = [m for m in loaded["added"] if m == name or m.startswith(name + ".")]
        assert not added, f"import fastgp loads {added}"
    assert not [m for m in loaded["all"] if m.startswith(("matplotlib", "fastgp.train"))]
    assert {"fastgp.penalty", "fastgp.ops", "fastgp.engine"} <= set(loaded["all"])


def test_every_public_name_is_reachable_and_a_lazy_one_loads_on_first_use():
    found = _run("""
        import json, sys
        import fastgp
        lazy_before = "fastgp.perf.profile" in sys.modules
        missing = [name for name in fastgp.__all__ if not hasattr(fastgp, name)]
        import fastgp.perf.profile
        same = fastgp.profile_gp is fastgp.perf.profile.profile_gp
        from fastgp import profile_gp
        try:
            fastgp.no_such_name
            unknown = "no error"
        except AttributeError as error:
            unknown = str(error)
        print(json.dumps({"lazy_before": lazy_before, "missing": missing, "same": same,
                          "imported": profile_gp is fastgp.profile_gp,
                          "undocumented": sorted(set(fastgp.__all__) - set(dir(fastgp))),
                          "unknown": unknown}))
    """)
    assert found["lazy_before"] is False
    assert found["missing"] == [] and found["undocumented"] == []
    assert found["same"] and found["imported"]
    assert "no_such_name" in found["unknown"]


def test_plots_leave_the_backend_of_the_caller_as_it_is(tmp_path):
    # A backend other than matplotlib's default; matplotlib.use raises, so any call shows.
    found = _run(f"""
        import csv, json, sys
        from pathlib import Path
        import matplotlib

        def refuse(*args, **kwargs):
            raise AssertionError(f"matplotlib.use{{args}} called")

        matplotlib.use = refuse
        backend = matplotlib.get_backend()
        import torch
        import fastgp
        from fastgp.train import plots

        out = Path({str(tmp_path)!r})
        generator = torch.Generator().manual_seed(0)
        real, fake = torch.randn(64, 2, generator=generator), torch.randn(64, 2, generator=generator)
        plots.plot_toy_samples(out / "toy.png", real, fake, critic=lambda x: x.sum(dim=1))
        plots.plot_histograms(out / "hist.png", real[:, 0], fake[:, 0])
        columns = ["step", "w_estimate", "critic_loss", "generator_loss", "penalty",
                   "grad_norm_mean"]
        with open(out / "metrics.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([[step] + [0.5 * step] * 5 for step in range(3)])
        plots.plot_training_curves(out / "curves.png", out / "metrics.csv")
        print(json.dumps({{"before": backend, "after": matplotlib.get_backend(),
                          "pyplot": "matplotlib.pyplot" in sys.modules}}))
    """, MPLBACKEND="svg")
    assert found["before"] == "svg" and found["after"] == "svg"
    assert found["pyplot"] is False
    for name in ("toy.png", "hist.png", "curves.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
