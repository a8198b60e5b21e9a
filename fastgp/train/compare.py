"""``fastgp compare``: the same training budget for several losses on one toy set, measured.

Each loss trains with its own published defaults (:mod:`fastgp.train.config`) for the same number
of generator steps and the same seed, in ``out/<loss>/``; then ``compare.csv``, ``compare.md``
(table) and ``compare.png`` (the final samples side by side) are written to ``out``. A finished
run is not trained again and an interrupted one resumes, when its checkpoint holds the same config
(the same ``steps`` included): rerunning an interrupted comparison loses nothing. A run folder
holding a run of other settings, or a run that reached its steps without finishing, is refused:
its numbers would not be this comparison's.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import torch
from matplotlib.figure import Figure  # not pyplot: the caller's backend stays as it is

from fastgp.train import run_folder
from fastgp.train.checkpoint import sample
from fastgp.train.config import COMPARED_LOSSES, TrainConfig
from fastgp.train.data import ToyDataset, toy_dataset
from fastgp.train.report import markdown_table
from fastgp.train.trainer import Trainer

COLUMNS = ["loss", "modes_covered", "num_modes", "high_quality_share", "emd", "emd_floor",
           "seconds", "critic_step"]


# Options a rerun may change: they change neither the models nor the final metrics. ``steps`` is
# not one: every loss trains with the same budget, and a linearly decaying learning rate makes a
# run extended to more steps differ from a run of that many steps.
RERUN_CHANGES = ("log_every", "eval_every", "keep_checkpoints")


def _existing_run(run_dir: Path, config: TrainConfig) -> tuple[str, dict | None]:
    """What ``run_dir`` holds for ``config``: ``("new", None)`` (no checkpoint: a fresh run,
    which refuses a folder holding files), ``("resume", None)`` (an interrupted run of it) or
    ``("finished", final metrics)``. Anything else is refused with a ValueError."""
    checkpoint = run_dir / run_folder.CHECKPOINT_FILE
    if not checkpoint.is_file():
        return "new", None
    state = run_folder.load_checkpoint(checkpoint)
    differing = config.changes_from(state.get("config") or {}, RERUN_CHANGES)
    if differing:
        changes = ", ".join(differing)
        raise ValueError(f"{run_dir} holds a run of other settings ({changes}); compare trains "
                         "every loss with the same settings: choose another --out")
    step = int(state["step"])
    if step < config.steps:
        return "resume", None
    final_path = run_dir / run_folder.FINAL_METRICS
    final = run_folder.read_json(final_path) if final_path.is_file() else {}
    if not final.get("interrupted") and final.get("steps") == step:
        return "finished", final
    raise ValueError(f"{run_dir} holds a run that reached step {step} of {config.steps} but did "
                     "not finish (no final metrics); delete it or choose another --out")


def compare(base: TrainConfig, out_dir: Path, losses: tuple[str, ...] = COMPARED_LOSSES,
            progress: bool = True, report=print) -> list[dict]:
    """Train ``base`` once per loss (per-loss defaults for everything ``base`` leaves at None);
    return one row per loss and write the table and the figure."""
    if not isinstance(toy_dataset(base.dataset), ToyDataset):
        raise ValueError(f"compare needs a toy set with modes (8gaussians, 25gaussians), "
                         f"got {base.dataset!r}")
    out_dir = Path(out_dir)
    rows, samples = [], {}
    for loss in losses:
        run_dir = out_dir / loss
        trainer = None
        resolved = dataclasses.replace(base, loss=loss).resolved("toy")
        status, final = _existing_run(run_dir, resolved)
        if status != "finished":
            resume = status == "resume"
            trainer = Trainer(dataclasses.replace(base, loss=loss), run_dir, progress, resume=resume)
            report(f"{loss}: training {resolved.steps} generator steps in {run_dir} "
                   f"({trainer.critic_step_name}{', resumed' if resume else ''})")
            final = trainer.run()
        else:
            report(f"{loss}: already trained in {run_dir}")
        rows.append({"loss": loss} | {key: final.get(key, "") for key in COLUMNS[1:]})
        samples[loss] = sample(run_dir, resolved.eval_samples, seed=resolved.seed)
    _write_table(out_dir, rows)
    _plot(out_dir / "compare.png", base.dataset, samples, rows)
    return rows


def _write_table(out_dir: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    run_folder.atomic_write(out_dir / "compare.csv", lambda handle: handle.write(buffer.getvalue().encode()))
    shown = [{
        "loss": row["loss"],
        "modes": f"{row['modes_covered']}/{row['num_modes']}",
        "high quality": f"{100 * row['high_quality_share']:.1f}%",
        "EMD (floor)": f"{row['emd']:.4f} ({row['emd_floor']:.4f})",
        "wall time": f"{row['seconds']:.0f} s",
        "critic step": row["critic_step"],
    } for row in rows]
    text = "\n".join(markdown_table(shown)) + "\n"
    run_folder.atomic_write(out_dir / "compare.md", lambda handle: handle.write(text.encode()))


def _plot(path: Path, dataset: str, samples: dict[str, torch.Tensor], rows: list[dict]) -> None:
    data = toy_dataset(dataset)
    real = data.sample(2500, torch.Generator().manual_seed(0))
    low, high = real.min(dim=0).values - 0.4, real.max(dim=0).values + 0.4
    figure = Figure(figsize=(3.6 * len(samples), 3.9), dpi=110)
    axes = figure.subplots(1, len(samples), squeeze=False)
    for axis, row in zip(axes[0], rows, strict=True):
        fake = samples[row["loss"]].clamp(min=low - 1, max=high + 1)
        axis.scatter(real[:, 0], real[:, 1], s=1, c="tab:orange", alpha=0.4)
        axis.scatter(fake[:, 0], fake[:, 1], s=1, c="tab:blue", alpha=0.4)
        axis.set_xlim(float(low[0]), float(high[0]))
        axis.set_ylim(float(low[1]), float(high[1]))
        axis.set_aspect("equal")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(f"{row['loss']}: {row['modes_covered']}/{row['num_modes']} modes, "
                       f"{100 * row['high_quality_share']:.0f}% HQ\nEMD {row['emd']:.3f}", fontsize=9)
    figure.suptitle(f"{dataset}: generated (blue) over real (orange) samples", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.92))  # leave the top band to the suptitle
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    run_folder.atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
