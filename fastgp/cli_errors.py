"""Expected failures of ``fastgp <command>``: one line on stderr and an exit status, no traceback.

An expected failure is bad input (exit 2: an option, a data file, a checkpoint) or a run that
failed for a reason outside the program (exit 1: the disk filled up, training diverged, the
training extras are not installed). Only those exception types are mapped here; anything else
keeps its traceback, since it is a bug to report. Also here: the checks of option values that
argparse cannot express (seed ranges, non-empty lists), run before any work starts; numbers are
checked by the rules of :mod:`fastgp.validation`, as in the Python API.
"""

from __future__ import annotations

import errno

from fastgp.extras import MissingExtraError
from fastgp.train.config import SEED_RANGE

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2

# errnos of a write that failed for lack of room or a failing device: the run itself was fine.
RUN_FAILURE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})
# OSErrors that say a path given on the command line is wrong (missing, a file, not writable).
PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
               FileExistsError)
# ValueError: the checks of options, data and checkpoints; FloatingPointError: divergence;
# MissingExtraError: a command of the training system without the fastgp[train] extra.
EXPECTED = (ValueError, FloatingPointError, OSError, MissingExtraError)


def describe_failure(error: BaseException, writing_to: object = None) -> tuple[int, str] | None:
    """``(exit status, one-line message)`` for an expected failure, ``None`` for anything else
    (a bug: the caller re-raises it). ``writing_to`` names the output a failed write was for."""
    if isinstance(error, FloatingPointError | MissingExtraError):
        return EXIT_RUN_FAILED, one_line(error)
    if isinstance(error, OSError):
        if error.errno in RUN_FAILURE_ERRNOS:
            place = error.filename or writing_to
            where = f" (writing {place})" if place is not None else ""
            return EXIT_RUN_FAILED, f"{error.strerror or error}{where}"
        if isinstance(error, PATH_ERRORS):
            return EXIT_BAD_INPUT, one_line(error)
        return None
    if isinstance(error, ValueError):
        return EXIT_BAD_INPUT, one_line(error)
    return None


def one_line(error: BaseException) -> str:
    """The message on one line (torch's and numpy's messages may span several)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def require_seed(option: str, value: int) -> int:
    if value not in SEED_RANGE:
        raise ValueError(f"{option} must lie in [0, {SEED_RANGE.stop - 1}], got {value}")
    return value


def comma_list(option: str, text: str, expected: str) -> list[str]:
    """The non-empty names of a comma-separated option; an empty list is refused."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"{option} is empty: expected {expected}")
    return names
