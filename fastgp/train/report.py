"""``report.md``: one page per run with its settings, the metric table and the figures."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from fastgp.perf.tables import table_lines
from fastgp.train.run_folder import atomic_write

# Final metrics shown in the summary table, in this order, with how to print them.
_SUMMARY = [
    ("modes_covered", "modes covered", lambda final: f"{final['modes_covered']}/{final['num_modes']}"),
    ("high_quality_share", "high-quality samples (within 3σ of a mode)",
     lambda final: f"{100 * final['high_quality_share']:.1f}%"),
    ("emd", "EMD to real samples (real-vs-real floor)",
     lambda final: f"{final['emd']:.4f} ({final['emd_floor']:.4f})"),
    ("classes_present", "digit classes present",
     lambda final: f"{final['classes_present']}/{final['num_classes']}"),
    ("min_class_share", "smallest / largest class share",
     lambda final: f"{100 * final['min_class_share']:.1f}% / {100 * final['max_class_share']:.1f}%"),
    ("frechet_distance", "Fréchet distance of classifier features (real-vs-real floor)",
     lambda final: f"{final['frechet_distance']:.2f} ({final['frechet_floor']:.2f})"),
    ("classifier_accuracy", "digits classifier accuracy (held out)",
     lambda final: f"{100 * final['classifier_accuracy']:.1f}%"),
    ("penalty_share", "share of a critic step spent on the penalty",
     lambda final: f"{100 * final['penalty_share']:.0f}%"),
]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cell(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() and abs(number) < 1e9 else f"{number:.4g}"


def markdown_table(rows: list[dict[str, str]]) -> list[str]:
    """A Markdown table of CSV rows (numbers to 4 significant digits)."""
    if not rows:
        return []
    columns = list(rows[0])
    return table_lines(columns, [[_cell(row[column]) for column in columns] for row in rows])


def write_report(run_dir: Path, config: dict, final: dict, metrics_csv: Path,
                 evaluations_csv: Path, figures: list[str]) -> Path:
    """Write ``run_dir/report.md`` (atomically) and return its path."""
    log = _read_csv(metrics_csv)
    step_seconds = [float(row["seconds_per_step"]) for row in log if row.get("seconds_per_step")]
    penalty = config["penalty"]
    if penalty in ("gp", "lp", "dragan"):
        penalty += f" (λ = {config['gp_weight']:g}"
        penalty += f", every {config['penalty_every']} critic steps)" if config["penalty_every"] > 1 else ")"
    elif penalty in ("r1", "r2"):
        penalty += f" (γ = {config['gp_weight']:g})"
    lines = [
        f"# {config['dataset']}: {config['loss']}, {final['steps']} generator steps",
        "",
        f"- penalty: {penalty}; critic steps per generator step: {config['n_critic']}; "
        f"batch {config['batch_size']}",
        f"- optimizer: {config['optimizer']}, lr {config['lr']:g} ({config['lr_schedule']}); "
        f"initialization: {config['init']}; generator average: "
        + (f"EMA {config['ema']:g}" if config["ema"] > 0 else "off"),
        f"- critic step: {final.get('critic_step', '?')}; seed {config['seed']}",
        f"- time: {final['seconds']:.1f} s"
        + (f", median {1000 * statistics.median(step_seconds):.1f} ms per generator step"
           if step_seconds else "")
        + (" (interrupted)" if final.get("interrupted") else ""),
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {show(final)} |" for key, label, show in _SUMMARY if key in final]
    evaluations = _read_csv(evaluations_csv)
    if evaluations:
        lines += ["", "## Evaluations", "", *markdown_table(evaluations)]
    lines += ["", "## Figures", ""]
    lines += [f"![{name}]({name})" for name in figures if (run_dir / name).is_file()]
    lines += ["", "## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    path = run_dir / "report.md"
    text = "\n".join(lines)
    atomic_write(path, lambda handle: handle.write(text.encode()))
    return path
