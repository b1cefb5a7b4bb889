"""A training run's settings: a preset, or the checkpoint it resumes, overridden by the flags.

The cube (`experiments.train`) and CartPole (`experiments.cartpole`) entry
points parse their typed `Args` (the `MuZeroConfig` and the task nested, their
fields as flags without a prefix) in two passes: `--preset` and `--resume` are
read first and give the defaults (the preset's values, or the values saved in
the checkpoint); then every flag overrides them. A resumed run may change only
what does not alter training (`SAFE_CONFIG_FIELDS` of the config and the
run's own flags such as `--iterations` and `--logdir`); any other flag that
differs from the checkpoint is an error that names it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import tyro

import muzero_jax
from experiments.launch.errors import UsageError, flag_error, holds_checkpoints, nearest_existing
from muzero_jax.checkpoint import SAFE_CONFIG_FIELDS

__all__ = [
  "Checkpoint",
  "RunArgs",
  "flag",
  "holds_checkpoints",
  "parse_run_flags",
  "peek_flag",
  "read_checkpoint",
  "restore_checkpoint",
]

# Fields of a run's `Args` checked against the checkpoint on resume; the others only steer the run.
_CHECKED = ("config", "task", "preset")


class RunArgs(Protocol):
  """What `parse_run_flags` needs of an entry point's `Args` (a frozen dataclass)."""

  config: muzero_jax.MuZeroConfig
  task: Any  # a frozen dataclass, saved in the checkpoint's meta
  preset: str
  iterations: int
  resume: str | None
  checkpoint_dir: str | None


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """What a resumed run reads first: the newest readable config and the meta's `extra` (task, preset, ...)."""

  directory: str
  config: muzero_jax.MuZeroConfig
  extra: dict


A = TypeVar("A", bound=RunArgs)


def flag(name: str) -> str:
  """The command-line spelling of a field."""
  return "--" + name.replace("_", "-")


def read_checkpoint(directory: str, *, env: str) -> Checkpoint:
  """Config and `extra` of the newest readable checkpoint in `directory` (its arrays are checked later).

  Raises:
    UsageError: no such directory, no checkpoint, not written by a training entry point, or for another `env`.
  """
  if not os.path.isdir(directory):
    raise UsageError(
      f"--resume {directory}: " + ("a file, not a directory" if os.path.exists(directory) else "no such directory")
    )
  ckpt = muzero_jax.Checkpointer(directory, create=False)
  try:
    if not ckpt.all_steps():
      raise UsageError(
        f"--resume {directory}: the directory holds no checkpoint (no step directory written by --checkpoint-dir)"
      )
    _, config, meta = ckpt.newest_readable_meta()
  except FileNotFoundError as err:
    raise UsageError(f"--resume {directory}: {err}") from err
  finally:
    ckpt.close()
  extra = meta.get("extra") or {}
  saved_env = extra.get("env", "cube")
  if saved_env != env:
    raise UsageError(f"--resume {directory}: checkpoint was written with --env {saved_env}, not --env {env}")
  if "task" not in extra or "preset" not in extra:
    raise UsageError(f"--resume {directory}: checkpoint was not written by experiments.train (its meta has no task)")
  return Checkpoint(directory=directory, config=config, extra=extra)


def iterations_left(total: int, state) -> int:
  """Iterations to train to reach `total` from `state` (None: a new run), saying so when a resumed checkpoint is
  already past it (an audit: `--resume DIR --iterations N` below the checkpoint trained nothing, silently)."""
  done = int(state.iteration) if state is not None else 0
  if done > total:
    print(f"the checkpoint is at iteration {done}, past --iterations {total} (a total): nothing to train")
  return max(total - done, 0)


def restore_checkpoint(checkpoint: Checkpoint, env, env_params_pool, config: muzero_jax.MuZeroConfig):
  """The resumed run's newest good step (`muzero_jax.restore`; damaged newer steps are quarantined).

  Raises:
    UsageError naming `--resume`: the checkpoint was made for another environment or config.
  """
  try:
    return muzero_jax.restore(checkpoint.directory, env, env_params_pool, config=config, quarantine=True)
  except ValueError as err:
    raise UsageError(f"--resume {checkpoint.directory}: {err}") from err


def peek_flag(argv: Sequence[str], name: str) -> str | None:
  """The value of `--name` in `argv` (None when absent), read before the full parse."""
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  parser.add_argument(flag(name))
  return getattr(parser.parse_known_args(list(argv))[0], name)


def check_writable(path: str, flag_text: str) -> None:
  """`UsageError` naming `flag_text` unless a folder can be written at `path` (or, where it is not yet, in the
  nearest folder above it that is): a folder is made there and removed at once, nothing left behind. A checkpoint
  audit: an unwritable --checkpoint-dir was 13 tracebacks after Orbax's five-minute wait for the first save."""
  existing = nearest_existing(path)
  if not os.path.isdir(existing):
    raise UsageError(f"{flag_text} {path}: {existing} is a file, not a directory")
  try:
    os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=existing))
  except OSError as err:
    raise UsageError(f"{flag_text} {path}: cannot write in {existing} ({err.strerror or err})") from None


def refuse_repeated_flags(argv: Sequence[str]) -> None:
  """Raises `UsageError` naming a flag given twice in `argv`: tyro and argparse keep the last value, so
  `--measures a --measures b` dropped `a` without a word (a CLI audit). `--name=value` counts as `--name`, an
  underscore as a dash, and a boolean's `--no-name` as `--name`; nothing after a bare `--` is read."""
  seen: dict[str, str] = {}
  for token in argv:
    if token == "--":
      break
    if not token.startswith("--"):
      continue
    given = token.split("=", 1)[0].replace("_", "-")
    name = "--" + given[len("--no-") :] if given.startswith("--no-") else given
    if name in seen and seen[name] == given:
      raise UsageError(
        f"{name} is given twice: give each flag once (a flag of several values takes them all after it: {name} A B)"
      )
    if name in seen:  # a review: --evaluate --no-evaluate, of which tyro kept the last
      raise UsageError(f"{seen[name]} and {given} are both given: give one of them")
    seen[name] = given


def parse_run_flags(
  args_type: type[A],
  argv: Sequence[str],
  *,
  env: str,
  fresh: Callable[[str | None], A],
  resumed: Callable[[Checkpoint], A],
) -> tuple[A, Checkpoint | None]:
  """Parses `argv` into `args_type` over the defaults of a preset or of the checkpoint `--resume` names.

  Args:
    args_type: the entry point's frozen `Args` dataclass.
    argv: the command line (without the program name).
    env: the entry point's environment name, as saved in the checkpoint's `extra["env"]`.
    fresh: the defaults of a new run given the `--preset` value (None: not given).
    resumed: the defaults of a run resuming this checkpoint (its config, task and preset).

  Returns:
    the parsed arguments, and the checkpoint when resuming (None otherwise).

  Raises:
    UsageError: `--checkpoint-dir` of a new run, or another than the resumed one, already holds checkpoints; a
      flag contradicts the
      resumed checkpoint (all are named); an invalid config value.
    SystemExit: a malformed flag or `--help` (from tyro).
  """
  refuse_repeated_flags(argv)
  directory = peek_flag(argv, "resume")
  checkpoint = read_checkpoint(directory, env=env) if directory is not None else None
  default = fresh(peek_flag(argv, "preset")) if checkpoint is None else resumed(checkpoint)
  try:
    args = tyro.cli(args_type, default=default, args=list(argv), config=(tyro.conf.OmitArgPrefixes,))
  except ValueError as err:  # a config value out of range (MuZeroConfig.__post_init__)
    raise flag_error(err, _field_names(default)) from err
  if args.iterations < 0:
    raise UsageError(f"--iterations must be >= 0 (the total to train to), got {args.iterations}")
  target = args.checkpoint_dir
  if target and os.path.exists(target) and not os.path.isdir(target):  # new or resumed: before any work
    raise UsageError(f"--checkpoint-dir {target} is a file, not a directory")
  # --eval-only saves no checkpoint: a read-only one is evaluated (a review: it was refused, naming a flag not given).
  for name in ("logdir",) if getattr(args, "eval_only", False) else ("checkpoint_dir", "logdir"):
    if getattr(args, name, None):
      check_writable(getattr(args, name), flag(name))
  if checkpoint is None:
    if target and holds_checkpoints(target):
      raise UsageError(
        f"--checkpoint-dir {args.checkpoint_dir} already holds checkpoints; continue them with --resume "
        f"{args.checkpoint_dir} or choose an empty directory"
      )
    return args, None
  if target and os.path.realpath(target) != os.path.realpath(directory) and holds_checkpoints(target):
    # An audit: the resumed run's saves collided with the other run's steps (a step already saved is not saved
    # again), so it exited 0 having saved nothing, and a later --resume there went on with the other run.
    raise UsageError(
      f"--checkpoint-dir {target} already holds checkpoints of another run; a resumed run saves into the "
      f"directory it resumes ({directory}, the default) or an empty one"
    )
  conflicts = _contradictions(args, default)
  if conflicts:
    # --env names the entry point the checkpoint was written by (read_checkpoint refuses another): not safe to
    # change, though a field of `Args` (an audit: the message listed it).
    safe = [f.name for f in dataclasses.fields(args_type) if f.name not in (*_CHECKED, "resume", "env")]
    safe += sorted(SAFE_CONFIG_FIELDS)
    raise UsageError(
      f"--resume {directory}: flag(s) contradict the checkpoint: {'; '.join(conflicts)}. Safe to change "
      f"on resume: {', '.join(flag(n) for n in safe)}"
    )
  return args, checkpoint


def check_training(args: RunArgs, env, pool) -> None:
  """What `muzero_jax.make_train` checks of the config against the environment (the value and reward supports, the
  network against the observation's shape, the replay, the expert), before any training or restoring: a failure
  is a usage error naming the flags (exit status 2), not a traceback."""
  try:
    muzero_jax.make_train(args.config, env, pool)
  except ValueError as err:
    raise flag_error(err, _field_names(args)) from err


def _field_names(args: RunArgs) -> list[str]:
  """The flags' field names of an entry point's `Args`: its own, its config's and its task's."""
  return [f.name for part in (args, args.config, args.task) for f in dataclasses.fields(part)]


def _contradictions(given: RunArgs, saved: RunArgs) -> list[str]:
  """`--flag value (checkpoint: value)` for every checked field where `given` differs from `saved`."""
  out = []
  if given.preset != saved.preset:
    out.append(f"--preset {given.preset} (checkpoint: {saved.preset})")
  pairs = [(given.config, saved.config, SAFE_CONFIG_FIELDS), (given.task, saved.task, frozenset())]
  for new, old, skip in pairs:
    for field in dataclasses.fields(new):
      a, b = getattr(new, field.name), getattr(old, field.name)
      if field.name not in skip and a != b:
        out.append(f"{flag(field.name)} {a} (checkpoint: {b})")
  return out
