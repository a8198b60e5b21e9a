"""TensorBoard scalars of a run, written when the ``tensorboard`` package is installed."""

from __future__ import annotations

import numbers
from pathlib import Path


class TensorBoardLog:
    """Scalars under ``run_dir/tensorboard``; does nothing when TensorBoard is not installed.

    ``resume_step`` purges events logged after it by an earlier, interrupted run, so that the
    curves of a resumed run have no doubled stretch.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: torch's writer needs the tensorboard package
            self.writer = None
            return
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def scalars(self, prefix: str, values: dict, step: int) -> None:
        """Every real number of ``values`` as ``prefix/name`` at ``step``."""
        if self.writer is None:
            return
        for name, value in values.items():
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and name != "step":
                self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
