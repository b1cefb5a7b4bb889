"""What the training entry points share: flags over a preset or over the checkpoint they resume, exit statuses."""

from experiments.launch.errors import UsageError, run_command
from experiments.launch.resume import (
  Checkpoint,
  RunArgs,
  check_training,
  flag,
  holds_checkpoints,
  iterations_left,
  parse_run_flags,
  peek_flag,
  read_checkpoint,
  refuse_repeated_flags,
  restore_checkpoint,
)

__all__ = [
  "Checkpoint",
  "RunArgs",
  "UsageError",
  "check_training",
  "flag",
  "holds_checkpoints",
  "iterations_left",
  "parse_run_flags",
  "peek_flag",
  "read_checkpoint",
  "refuse_repeated_flags",
  "restore_checkpoint",
  "run_command",
]
