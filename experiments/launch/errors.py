"""How a training entry point fails: a usage error (exit status 2) or an interruption (130)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import muzero_jax

__all__ = [
  "UsageError",
  "UsageExit",
  "exit_usage",
  "flag_error",
  "holds_checkpoints",
  "nearest_existing",
  "path_flag",
  "prepare_out",
  "run_command",
]


class UsageError(ValueError):
  """A flag or path the user gave is wrong (printed as `error: ...`, exit status 2)."""


class UsageExit(SystemExit):
  """Exit status 2 (a bad flag, as tyro's and `run_command`'s) whose text is the message (`raise SystemExit("...")`
  exits 1, an audit)."""

  def __init__(self, message: str):
    super().__init__(2)
    self.message = message

  def __str__(self) -> str:
    return self.message


def exit_usage(message: str) -> UsageExit:
  """Prints `error: message` to stderr and returns the `UsageExit` to raise."""
  message = message if message.startswith("error: ") else f"error: {message}"
  print(message, file=sys.stderr)
  return UsageExit(message)


def flag_error(err: Exception, fields: Iterable[str]) -> UsageError:
  """`err` (a config's or the library's check) as a usage error that names flags, not fields: `MuZeroConfig.name`,
  and a field written as the subject of a setting (`name=`, `name >=`, `name (`, `name must`), become `--name`
  (underscores as dashes), so `support_size >= 10` reads `--support-size >= 10`."""
  text = str(err)
  for name in sorted(set(fields), key=len, reverse=True):
    pattern = rf"(?<![\w.-])(?:MuZeroConfig\.)?{re.escape(name)}\b(?=\s*(?:=|>=|<=|\(|must\b))"
    text = re.sub(pattern, "--" + name.replace("_", "-"), text)
  return UsageError(text)


def nearest_existing(path: str) -> str:
  """`path`, or the deepest folder above it that exists (`.` for a relative path none of whose parts does): where
  a folder at `path` would be made, and whose kind and permissions decide whether it can be."""
  existing = path
  while existing and not os.path.exists(existing):
    existing = os.path.dirname(existing.rstrip(os.sep)) or "."
  return existing


def prepare_out(path: str, flag: str) -> None:
  """Makes the folder of output file `path` (named by `flag`) now, before any long work, so that a path that cannot
  be written fails first, a `ValueError` naming `flag` (an audit: a missing folder was a traceback at the save, after
  the whole run)."""
  if os.path.isdir(path):
    raise ValueError(f"{flag} {path!r} is a directory: name the file to write")
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as err:
    blocker = nearest_existing(folder)  # a file where a folder must be (the usual cause) is named, not "File exists"
    why = f"{blocker!r} is a file" if os.path.isfile(blocker) else err.strerror or str(err)
    raise ValueError(f"{flag} {path!r}: cannot make its folder {folder!r}: {why}") from None
  if not os.access(folder, os.W_OK | os.X_OK):
    raise ValueError(f"{flag} {path!r}: its folder {folder!r} is not writable")


def holds_checkpoints(directory: str) -> bool:
  """Whether `directory` exists and holds at least one checkpoint step."""
  if not os.path.isdir(directory):
    return False
  ckpt = muzero_jax.Checkpointer(directory, create=False)
  try:
    return bool(ckpt.all_steps())
  finally:
    ckpt.close()


def path_flag(err: OSError, paths: Mapping[str, str | None]) -> str:
  """`--flag PATH: ` for the flag of `paths` (`{flag name: path given}`) whose path the failed file (`err.filename`)
  is at or under, else "" (a CLI audit: `--logdir` naming a file read only "Not a directory: 'afile/events...'")."""
  if not err.filename:
    return ""
  failed = os.path.abspath(os.fsdecode(err.filename))
  holding = [
    (len(os.path.abspath(given)), name, given)
    for name, given in paths.items()
    if given and (failed == os.path.abspath(given) or failed.startswith(os.path.join(os.path.abspath(given), "")))
  ]
  if not holding:
    return ""
  _, name, given = max(holding)  # the closest: --logdir runs/a/tb under --checkpoint-dir runs/a (a review)
  return f"--{name.replace('_', '-')} {given}: "


def run_command(
  run: Callable[[], Any],
  *,
  program: str,
  checkpoint_dir: str | None,
  logdir: str | None = None,
  resumable: Callable[[str], bool] = holds_checkpoints,
  paths: Mapping[str, str | None] | None = None,
) -> int:
  """Calls `run()` and turns its outcome into an exit status, printing errors to stderr.

  `UsageError`, `FileNotFoundError` and `NotADirectoryError`: `error: ...`, status 2. `KeyboardInterrupt` (Ctrl-C
  or SIGTERM, after the driver saved a checkpoint): status 130 and, where `resumable(checkpoint_dir)` (default: it
  holds a training checkpoint; an audit: the command was printed for an empty directory too), the command that
  continues the run from it, with its `--logdir` (not saved in the checkpoint) so its curves continue where they
  were. A checkpoint that could not be written (`muzero_jax.CheckpointSaveError`: a full disk, say): `error: ...`
  and, likewise, the command that continues, status 1. A path's error names the flag that gave the path
  (`path_flag`; `paths`, default `--checkpoint-dir` and `--logdir`).
  """
  paths = {"checkpoint_dir": checkpoint_dir, "logdir": logdir} if paths is None else paths
  try:
    run()
  except (UsageError, FileNotFoundError, NotADirectoryError) as err:
    print(f"error: {path_flag(err, paths) if isinstance(err, OSError) else ''}{err}", file=sys.stderr)
    return 2
  except muzero_jax.CheckpointSaveError as err:
    # A disk that filled or a folder that became read-only during training: the cause and the steps kept, not
    # Orbax's traceback (a checkpoint audit), and the command that resumes once there is room.
    print(f"error: {path_flag(err, paths)}{err}", file=sys.stderr)
    if checkpoint_dir and resumable(checkpoint_dir):
      _continue_with(program, checkpoint_dir, logdir)
    return 1
  except KeyboardInterrupt as err:
    kept = bool(checkpoint_dir) and resumable(checkpoint_dir)
    # A second Ctrl-C stops at once with no message of its own: what an earlier save kept is still there (a
    # checkpoint audit: "nothing saved" beside two saved steps).
    said = str(err) or (
      f"stopped at once; the checkpoints saved before are kept in {checkpoint_dir}" if kept else "nothing saved"
    )
    print(f"\ninterrupted: {said}", file=sys.stderr)
    if kept:
      _continue_with(program, checkpoint_dir, logdir)
    return 130
  return 0


def _continue_with(program: str, checkpoint_dir: str, logdir: str | None) -> None:
  """Prints the command that resumes the run from `checkpoint_dir`, with its `--logdir`."""
  more = f" --logdir {logdir}" if logdir else ""
  print(f"continue with: python -m {program} --resume {checkpoint_dir}{more}", file=sys.stderr)
