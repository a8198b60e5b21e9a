"""The run folder: config, metrics CSV, figures and checkpoints, each written so a crash never leaves
a half-written file behind (write to a temporary file in the same folder, then rename).

Temporaries are named ``.fastgp-NAME.RANDOM.tmp`` so that cleaning up after a killed run removes
fastgp's own leftovers and nothing else. No file is written through a symbolic link: renames
replace a link itself, and the metrics logs are opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch

CONFIG_FILE = "config.json"
METRICS_CSV = "metrics.csv"
FINAL_METRICS = "final_metrics.json"
CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_HISTORY = "checkpoints"
EVALUATIONS_CSV = "evaluations.csv"
REPORT = "report.md"
CURVES = "curves.png"
SAMPLES = "samples.png"
TENSORBOARD = "tensorboard"
TEMPORARY_PREFIX = ".fastgp-"
HISTORY_NAME = re.compile(r"step_\d{8,}\.pt")  # checkpoints/step_00001000.pt


def temporary_name(name: str) -> str:
    """A fresh temporary name for a write of ``name``: fastgp's own, never a user's file."""
    return f"{TEMPORARY_PREFIX}{name}.{secrets.token_hex(4)}.tmp"


def is_temporary(name: str) -> bool:
    return name.startswith(TEMPORARY_PREFIX) and name.endswith(".tmp")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file next to ``path`` and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / temporary_name(path.name)
    # Not mkstemp: its files are private (0600); created like any file, the result gets the
    # user's umask (usually 0644), as a plain write of the same file would.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o666)
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
    """Delete the temporary files of writes a killed process never finished
    (``.fastgp-NAME.*.tmp``; the files they were meant to replace are intact), and only those.
    Returns what was deleted."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return []
    stale = [path for path in folder.iterdir()
             if is_temporary(path.name) and not path.is_symlink() and path.is_file()]
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
    copies (names sort by age). The copy is a hard link when the file system allows it. Only
    fastgp's own ``step_*.pt`` files count and are deleted; nothing else in ``folder`` is."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    temporary = folder / temporary_name(name)
    try:
        try:
            os.link(latest, temporary)
        except OSError:
            shutil.copyfile(latest, temporary, follow_symlinks=False)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    history = sorted(path for path in folder.iterdir()
                     if HISTORY_NAME.fullmatch(path.name) and not path.is_symlink())
    for old in history[:-keep]:
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
    The header and the kept rows replace the file atomically (a symbolic link there is replaced,
    not followed); rows are then appended to that new file.
    """

    def __init__(self, path: Path, columns: list[str], resume_after_step: int | None = None) -> None:
        self.columns = columns
        kept: list[dict] = []
        if resume_after_step is not None and path.is_file():
            with _open_no_follow(path, os.O_RDONLY, "r") as handle:
                kept = [row for row in csv.DictReader(handle)
                        if int(float(row["step"])) <= resume_after_step]
        start = io.StringIO(newline="")
        writer = csv.DictWriter(start, fieldnames=columns)
        writer.writeheader()
        for row in kept:
            writer.writerow({column: row.get(column, "") for column in columns})
        atomic_write(path, lambda handle: handle.write(start.getvalue().encode()))
        self._handle = _open_no_follow(path, os.O_WRONLY | os.O_APPEND, "a")
        self._writer = csv.DictWriter(self._handle, fieldnames=columns)

    def append(self, row: dict[str, float]) -> None:
        self._writer.writerow({column: row[column] for column in self.columns})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _open_no_follow(path: Path, flags: int, mode: str) -> IO[str]:
    """``open(path, mode)`` that refuses a symbolic link at ``path`` instead of following it."""
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link; fastgp writes nothing through a link") from None
        raise
    return os.fdopen(descriptor, mode, newline="")
