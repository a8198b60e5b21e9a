"""What fastgp writes in a run folder, and whether a run may write there.

fastgp deletes and overwrites only files it wrote itself, known by name (:data:`OWN_FILES`,
:data:`OWN_PATTERNS`, and the entries of :data:`OWN_FOLDERS`). A symbolic link is never fastgp's:
fastgp creates none, so a link under one of its names is refused rather than written through.

- A fresh run starts in a missing or empty folder (fastgp's lock file and temporaries left by a
  killed run do not count). A folder holding an earlier fastgp run is refused unless
  ``overwrite``: then that run's files are removed, by name, and nothing else.
- A folder holding anything fastgp did not write is refused for a fresh run, with or without
  ``overwrite``: the user's files are never at stake, and a run folder holds one run only.
  Files under fastgp's names count as its own only beside a ``config.json`` that is a fastgp
  config (the first file a run writes): a user's lone ``report.md`` is not fastgp's.
- A resumed run needs its checkpoint; other files of the user's in the folder are left alone.

The run folder itself may be a symbolic link (the user named it); what is inside may not.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fastgp.train import run_folder
from fastgp.train.config import TrainConfig
from fastgp.train.run_lock import LOCK_FILE

OWN_FILES = frozenset({
    run_folder.CONFIG_FILE, run_folder.METRICS_CSV, run_folder.EVALUATIONS_CSV,
    run_folder.FINAL_METRICS, run_folder.CHECKPOINT_FILE, run_folder.REPORT, run_folder.CURVES,
    run_folder.SAMPLES,
})
OWN_PATTERNS = (re.compile(r"samples_step\d{6,}\.png"),)  # evaluation figures
# Subfolders fastgp creates, with the names it writes in them.
OWN_FOLDERS = {
    run_folder.CHECKPOINT_HISTORY: (run_folder.HISTORY_NAME,),
    run_folder.TENSORBOARD: (re.compile(r"events\.out\.tfevents\..+"),),
}
SHOWN_NAMES = 8  # names listed in a message before "and N more"


@dataclass
class Contents:
    """A run folder's entries by owner, as paths relative to the folder."""

    own: list[str] = field(default_factory=list)  # files of an earlier fastgp run
    leftovers: list[str] = field(default_factory=list)  # fastgp temporaries of a killed run
    foreign: list[str] = field(default_factory=list)  # anything fastgp did not write
    links: list[str] = field(default_factory=list)  # symbolic links under fastgp's names


def _own_name(name: str, patterns=OWN_PATTERNS, names=OWN_FILES) -> bool:
    return name in names or any(pattern.fullmatch(name) for pattern in patterns)


def survey(folder: Path) -> Contents:
    """Sort the entries of ``folder`` (and of fastgp's subfolders) by owner."""
    contents = Contents()
    for entry in sorted(Path(folder).iterdir()):
        name = entry.name
        if name == LOCK_FILE:
            continue  # the lock's own file: held by whoever is about to write
        if name in OWN_FOLDERS:
            if entry.is_symlink():
                contents.links.append(name + "/")
            elif not entry.is_dir():
                contents.foreign.append(name)
            else:
                _survey_subfolder(entry, OWN_FOLDERS[name], contents)
            continue
        _sort_entry(entry, name, _own_name(name), contents)
    return contents


def _survey_subfolder(folder: Path, patterns, contents: Contents) -> None:
    entries = sorted(folder.iterdir())
    for entry in entries:
        _sort_entry(entry, f"{folder.name}/{entry.name}", _own_name(entry.name, patterns, ()),
                    contents)
    if not entries:
        contents.own.append(folder.name + "/")  # an empty subfolder fastgp made


def _sort_entry(entry: Path, name: str, own: bool, contents: Contents) -> None:
    if run_folder.is_temporary(entry.name) and not entry.is_symlink() and entry.is_file():
        contents.leftovers.append(name)
    elif not own:
        contents.foreign.append(name)
    elif entry.is_symlink():
        contents.links.append(name)
    elif entry.is_file():
        contents.own.append(name)
    else:
        contents.foreign.append(name)  # e.g. a folder named config.json


def names(paths: list[str]) -> str:
    """``a, b, c`` or ``a, b, … and N more``."""
    shown = ", ".join(paths[:SHOWN_NAMES])
    return shown + (f" and {len(paths) - SHOWN_NAMES} more" if len(paths) > SHOWN_NAMES else "")


def check_destination(folder: Path) -> None:
    """Refuse an ``--out`` that cannot become a run folder: a file, a path through a file, or
    a folder (or the nearest existing parent of a missing one) that is not writable."""
    folder = Path(folder)
    if str(folder) == "":
        raise ValueError("the run folder path is empty")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder")
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            raise ValueError(f"{existing} is a symbolic link to a missing target")
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot create {folder}: {existing} is a file, not a folder")
    if not _writable(existing):
        raise ValueError(f"{existing} is not writable" if existing == folder
                         else f"cannot create {folder}: {existing} is not writable")


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def refuse_links(folder: Path, contents: Contents) -> None:
    if contents.links:
        raise ValueError(f"{folder} holds symbolic links under names fastgp writes "
                         f"({names(contents.links)}); fastgp writes nothing through a link: "
                         "remove them or choose another folder")


def check_fresh(folder: Path, overwrite: bool) -> list[str]:
    """Check that a fresh run may start in ``folder`` (which exists); return fastgp's files of
    an earlier run there, which ``overwrite`` allows to remove (:func:`remove`)."""
    contents = survey(folder)
    refuse_links(folder, contents)
    if contents.own and not _holds_fastgp_config(folder):
        raise ValueError(f"{folder} holds {names(contents.foreign + contents.own)} but no fastgp "
                         f"{run_folder.CONFIG_FILE}, so fastgp cannot tell them as its own; a "
                         "fresh run needs a new or empty folder")
    if contents.foreign:
        raise ValueError(f"{folder} holds files fastgp did not write ({names(contents.foreign)}); "
                         "a fresh run needs a new or empty folder (--overwrite removes only "
                         "fastgp's own files, so it does not apply here)")
    if contents.own and not overwrite:
        raise ValueError(f"{folder} holds {_earlier_run(folder)}: {hint(folder)}")
    return contents.own


def _holds_fastgp_config(folder: Path) -> bool:
    try:
        saved = run_folder.read_json(folder / run_folder.CONFIG_FILE)
    except (OSError, ValueError):
        return False
    fields = {option.name for option in dataclasses.fields(TrainConfig)}
    return isinstance(saved, dict) and {"dataset", "loss", "steps"} <= set(saved) <= fields


def _earlier_run(folder: Path) -> str:
    final_path = folder / run_folder.FINAL_METRICS
    if final_path.is_file():
        try:
            final = run_folder.read_json(final_path)
        except ValueError:
            final = {}
        if final.get("steps") is not None and not final.get("interrupted"):
            return f"a finished fastgp run of {final['steps']} steps"
    if (folder / run_folder.CHECKPOINT_FILE).is_file():
        return "an unfinished fastgp run"
    return "files of an earlier fastgp run"


def hint(folder: Path) -> str:
    if (folder / run_folder.CHECKPOINT_FILE).is_file():
        return ("continue it with --resume (and more --steps), start over with --overwrite, or "
                "choose another folder")
    return "start over with --overwrite (removes fastgp's files only), or choose another folder"


def remove(folder: Path, own: list[str]) -> None:
    """Delete fastgp's files listed by :func:`check_fresh` (never following a link), then
    fastgp's subfolders that are left empty. ``config.json`` goes last: it marks the folder as
    fastgp's, so an ``--overwrite`` killed midway can be repeated."""
    for name in sorted(own, key=lambda name: name == run_folder.CONFIG_FILE):
        path = folder / name.rstrip("/")
        if not name.endswith("/") and not path.is_symlink():
            path.unlink(missing_ok=True)
    for subfolder in OWN_FOLDERS:
        path = folder / subfolder
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
