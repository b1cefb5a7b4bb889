"""An agent for the benchmarks: the one given, one already trained, or one trained now (docs/design.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable


def ensure_checkpoint(
  checkpoint: str | None,
  *,
  directory: str = "checkpoints/bench-cpu",
  preset: str = "cpu",
  log: Callable[[str], None] = print,
) -> str:
  """`checkpoint`, or an agent trained with `python -m experiments.train --preset cpu` into `directory`.

  An agent already in `directory` is reused; training the `cpu` preset takes
  about 13 minutes on 2 CPU cores.
  """
  if checkpoint is not None:
    return checkpoint
  if os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory)):
    log(f"muzero: reusing the agent in {directory}")
    return directory
  cmd = [sys.executable, "-m", "experiments.train", "--preset", preset, "--checkpoint-dir", directory, "--no-evaluate"]
  log(f"muzero: no --checkpoint given; training one: {' '.join(cmd[1:])}")
  subprocess.run(cmd, check=True)
  return directory
