"""The run folder: config, metrics CSV, figures and checkpoints, each written so a crash never leaves
a half-written file behind (write to a temporary file in the same folder, then rename)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

CONFIG_FILE = "config.json"
METRICS_CSV = "metrics.csv"
FINAL_METRICS = "final_metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_HISTORY = "checkpoints"


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file next to ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of writes a killed process never finished (``.NAME.*.tmp``);
    the files they were meant to replace are intact. Returns what was deleted."""
    stale = [path for path in Path(folder).glob(".*.tmp") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def write_json(path: Path, payload: dict) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def read_json(path: Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def keep_history(latest: Path, folder: Path, name: str, keep: int) -> None:
    """Keep a copy of ``latest`` as ``folder/name`` and delete all but the ``keep`` newest
    copies (names sort by age). The copy is a hard link when the file system allows it."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    temporary = folder / f".{name}.tmp"
    temporary.unlink(missing_ok=True)
    try:
        os.link(latest, temporary)
    except OSError:
        shutil.copyfile(latest, temporary)
    os.replace(temporary, target)
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()


def load_checkpoint(path: Path, required: tuple[str, ...] = ("format",)) -> dict:
    """Load a checkpoint on the CPU; a missing or unreadable file, or a torch file that is not a
    fastgp checkpoint (another type, or a dict without the ``required`` keys), gets an error
    that names it."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(f"checkpoint {path} cannot be read ({error}); it is corrupt or "
                         "was not written by fastgp") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a fastgp checkpoint: it holds a {type(state).__name__}, "
                         "not a dict")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"{path} is not a fastgp checkpoint: missing keys {missing}")
    return state


class MetricsLog:
    """Append rows to ``metrics.csv``, flushed after each row so a crash keeps what was logged.

    ``resume_after_step`` continues an existing log: rows logged after that step (by a run that
    went on past its last checkpoint) are dropped, since the resumed run logs them again.
    """

    def __init__(self, path: Path, columns: list[str], resume_after_step: int | None = None) -> None:
        self.columns = columns
        kept: list[dict] = []
        if resume_after_step is not None and path.is_file():
            with open(path, newline="") as handle:
                kept = [row for row in csv.DictReader(handle)
                        if int(float(row["step"])) <= resume_after_step]
        self._handle = open(path, "w", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=columns)
        self._writer.writeheader()
        for row in kept:
            self._writer.writerow({column: row.get(column, "") for column in columns})
        self._handle.flush()

    def append(self, row: dict[str, float]) -> None:
        self._writer.writerow({column: row[column] for column in self.columns})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
