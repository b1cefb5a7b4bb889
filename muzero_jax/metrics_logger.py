"""Scalar logging to tensorboard (tensorboardX), outside of jit.

Metrics are computed inside the jitted iteration and leave it only when the
call returns; the driver converts them to Python floats and hands them here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping

from tensorboardX import SummaryWriter

__all__ = ["MetricsLogger"]


class MetricsLogger:
  """Writes dicts of scalars to a tensorboard directory; a no-op when ``logdir`` is None.

  Non-finite values (e.g. the mean return of an iteration in which no episode
  finished, reported as NaN) are skipped rather than plotted.
  """

  def __init__(self, logdir: str | None, *, purge_step: int | None = None, filename_suffix: str = "") -> None:
    """``purge_step``: TensorBoard discards events at steps >= it from earlier
    files of ``logdir`` (a resumed run drops what a crashed run logged after
    its last checkpoint). ``filename_suffix`` ends the event file's name (two
    loggers of one directory write apart). The file's name also holds the process id and the time in
    nanoseconds: tensorboardX names it by the second alone, so a run resumed into its ``logdir`` within the same
    second as the run before it overwrote that run's file, curves and all (a fresh-clone CI run)."""
    self.logdir = logdir
    self._writer = None
    if logdir is not None:
      unique = f".{os.getpid()}.{time.time_ns()}{filename_suffix}"
      self._writer = SummaryWriter(logdir, purge_step=purge_step, filename_suffix=unique)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    """Adds every finite scalar of ``metrics`` at ``step``."""
    if self._writer is None:
      return
    for name, value in metrics.items():
      value = float(value)
      if math.isfinite(value):
        self._writer.add_scalar(name, value, global_step=step)

  def flush(self) -> None:
    """Flushes pending events to disk."""
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    """Flushes and closes the writer."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
