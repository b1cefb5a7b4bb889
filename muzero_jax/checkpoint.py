"""Orbax checkpoints of the whole training state: verified, atomic, with fallback.

Each step directory ``DIR/<step>/`` holds four Orbax items:

* ``state``: the full :class:`~muzero_jax.TrainState` pytree (parameters,
  optimiser state, replay contents and priorities, actor/environment states,
  PRNG key, counters), restored against a template state;
* ``params``: the network variables alone, so inference loads only them
  (:func:`load_params`, no template, no replay read);
* ``config``: the :class:`~muzero_jax.MuZeroConfig` as JSON;
* ``meta``: JSON: format version, step, counters, the environment's identity
  (class, observation shape, number of actions) and plain settings (its
  dataclass fields: another horizon restores with a warning), a BLAKE2b digest of every
  leaf of ``state`` and of ``params``, the caller's ``extra`` dict (e.g. the
  task that regenerates the environment pool) and the time the save took.

Arrays are written by Orbax's ``StandardSave`` (TensorStore/OCDBT files and
JSON metadata): nothing is pickled. Orbax writes a step into a temporary
directory and renames it when complete, so a process killed mid-save leaves
no step directory, only a temporary one that the next :class:`Checkpointer`
removes (with a warning). Saves are asynchronous: ``save`` returns once the
arrays are copied to host memory; the files are written in a background
thread while training continues.

Restoring walks the steps newest first. A step that cannot be read (missing
item, truncated or missing file) or whose restored values do not match the
digests written at save time is reported with a :class:`CheckpointWarning`
naming the step and the cause, and the previous step is tried. With
``quarantine=True`` (what resuming a run does) a damaged step directory is
renamed ``<step>.damaged`` so later saves of that step are not blocked and
the evidence is kept. A checkpoint made for another environment or with a
contradicting config is not "damaged": it is a clear ``ValueError``.

The env params pool is not saved: it is an input of training (regenerate it
from its seeds; ``extra`` is the place to record them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import time
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from muzero_jax.config import MuZeroConfig
from muzero_jax.selfplay import pool_size
from muzero_jax.trainer import make_train

__all__ = [
  "Checkpointer",
  "CheckpointSaveError",
  "CheckpointWarning",
  "Restored",
  "SAFE_CONFIG_FIELDS",
  "env_spec",
  "load_params",
  "restore",
  "save",
]

# The training state's layout: 2 (2026-12-07, e1ebc3f) the replay records `truncation_value`; 3 (2026-12-07,
# d6ece73) also `truncated` (d6ece73 still wrote 2, so format 2 names two layouts: both refused). A checkpoint of
# another format is refused by name on resume (it is not damaged, and is never quarantined); its parameters still
# load. Every change of the state's pytree must raise it: a state that does not fit the template reads as damaged
# (an audit: format-2 steps resumed by d6ece73 were renamed *.damaged).
FORMAT_VERSION = 3
ITEMS = ("state", "params", "config", "meta")
# Fields that may differ between a checkpoint's config and the config resuming it.
SAFE_CONFIG_FIELDS = frozenset({"checkpoint_every", "checkpoints_to_keep"})
_TMP_MARK = ".orbax-checkpoint-tmp"
_DAMAGED_SUFFIX = ".damaged"


class CheckpointWarning(UserWarning):
  """A checkpoint step was skipped (damaged), an unfinished save was discarded, or a checkpoint was taken as made
  for this run though it differs in a way that may matter (another pool of one size, a class of the same name)."""


class CheckpointSaveError(OSError):
  """Writing a checkpoint step failed (the disk filled, the directory became read-only or went away, ...): an
  error of the operating system or of the storage's (TensorStore's status); any other error of the save (a state
  Orbax cannot write) is raised as it is.

  The steps saved before it are complete and kept; the unfinished step's temporary directory is discarded when the
  directory is next opened by a :class:`Checkpointer`. The message names the directory, the step, the cause and
  the steps kept; the cause (Orbax's or the operating system's error) is chained as ``__cause__``.
  """


@dataclasses.dataclass(frozen=True)
class Restored:
  """What :meth:`Checkpointer.restore` found."""

  state: Any  # the TrainState (or whatever pytree was saved), committed to one device
  config: MuZeroConfig  # the config saved with it
  meta: dict  # the ``meta`` item (env identity, counters, digests, extra)
  step: int  # the step restored
  skipped: tuple[tuple[int, str], ...] = ()  # newer steps found damaged: (step, reason)


IDENTITY = ("env", "observation_shape", "num_actions")  # what `env_spec` records that a checkpoint must match


def _plain(value: Any) -> bool:
  """A setting JSON keeps as it is: a number, text, a bool, None, or a list or tuple of them."""
  if isinstance(value, list | tuple):
    return all(_plain(v) for v in value)
  return value is None or isinstance(value, bool | int | float | str) and not isinstance(value, np.generic)


def env_settings(env) -> dict:
  """An environment object's own settings: its dataclass fields (else its instance attributes) whose values are
  plain (numbers, text, bools, None, lists of them), by name; nested objects and arrays are left out (the params
  pool's digest covers the data)."""
  if dataclasses.is_dataclass(env):
    items = {f.name: getattr(env, f.name) for f in dataclasses.fields(env)}
  else:
    items = {k: v for k, v in getattr(env, "__dict__", {}).items() if not k.startswith("_")}
  return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(items.items()) if _plain(v)}


def env_spec(env) -> dict:
  """The identity of an environment that a checkpoint must match (`IDENTITY`), and its settings (`env_settings`),
  which a restore compares with a warning: a checkpoint of the same class configured otherwise (another horizon,
  say) restores, but the run is not the one saved."""
  cls = type(env)
  return {
    "env": f"{cls.__module__}.{cls.__qualname__}",
    "observation_shape": [int(d) for d in env.observation_shape],
    "num_actions": int(env.num_actions),
    "settings": env_settings(env),
  }


def _script_class(want: dict, have: dict) -> bool:
  """Two differing identities of one class: one defined in a script run as ``__main__``, the other imported from it
  by name, with the same observation shape and actions (an RL audit: a checkpoint trained from ``python train.py``
  could not be restored from another script)."""
  if any(want[k] != have[k] for k in ("observation_shape", "num_actions")):
    return False
  a, b = want["env"], have["env"]
  return (
    a.startswith("__main__.")
    and b.endswith("." + a[len("__main__.") :])
    or (b.startswith("__main__.") and a.endswith("." + b[len("__main__.") :]))
  )


def pool_spec(pool) -> dict:
  """The size (leading axis) and digest of an env params pool, as a checkpoint records it."""
  return {"size": pool_size(pool), "digest": tree_digest(pool)}


def check_pool(meta: dict, pool, *, directory: str, step: int) -> None:
  """A pool of another size than the checkpoint's is refused (its saved slots index the pool); one of the same size
  but other contents gets a ``CheckpointWarning`` (the run goes on, but not as the saved one would have)."""
  have = meta.get("pool")
  if pool is None or have is None:
    return
  want = pool_spec(pool)
  if want["size"] != have["size"]:
    raise ValueError(
      f"checkpoint {directory}/{step} was trained on an env params pool of {have['size']} instances; this run "
      f"passes {want['size']} (the saved environment slots index the pool): pass the pool it trained on"
    )
  if want["digest"] != have["digest"]:
    warnings.warn(
      f"checkpoint {directory}/{step} was trained on another env params pool of the same size (digest "
      f"{have['digest'][:12]}, this one {want['digest'][:12]}): the resumed run will not be the one it continues",
      CheckpointWarning,
      stacklevel=3,
    )


def tree_digest(tree: Any) -> str:
  """BLAKE2b over every leaf's path, dtype, shape and bytes (host copy)."""
  h = hashlib.blake2b(digest_size=16)
  leaves, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
  for path, leaf in leaves:
    arr = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.view(np.uint8).reshape(-1).data if arr.size else b"")
  return h.hexdigest()


def _counters(state: Any) -> dict:
  out = {}
  for name in ("iteration", "updates", "moves", "episodes", "skipped_updates"):
    if hasattr(state, name):
      out[name] = int(getattr(state, name))
  return out


def _abstract(tree: Any, sharding=None) -> Any:
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)


def check_compatible(
  meta: dict, saved: MuZeroConfig, *, directory: str, step: int, env=None, config: MuZeroConfig | None = None
) -> None:
  """Raises ``ValueError`` when the checkpoint was made for another env or a contradicting config."""
  if env is not None:
    spec, have = env_spec(env), meta.get("env")
    want = {k: spec[k] for k in IDENTITY}
    if have is not None and want != {k: have.get(k) for k in IDENTITY}:
      if not _script_class(want, have):
        raise ValueError(
          f"checkpoint {directory}/{step} was made for environment {have['env']} with observation "
          f"shape {tuple(have['observation_shape'])} and {have['num_actions']} actions; this run has "
          f"{want['env']} with observation shape {tuple(want['observation_shape'])} and "
          f"{want['num_actions']} actions"
        )
      warnings.warn(
        f"checkpoint {directory}/{step} was made for environment {have['env']}; this run has {want['env']} of the "
        "same name, observation shape and actions: taken as the same class (one defined in a script run as "
        "__main__)",
        CheckpointWarning,
        stacklevel=3,
      )
    saved_settings = (have or {}).get("settings")  # checkpoints before the settings were recorded have none
    if saved_settings is not None and saved_settings != spec["settings"]:
      names = sorted(set(saved_settings) | set(spec["settings"]))
      what = ", ".join(
        f"{k}={spec['settings'].get(k, '(none)')!r} (checkpoint has {saved_settings.get(k, '(none)')!r})"
        for k in names
        if saved_settings.get(k, "(none)") != spec["settings"].get(k, "(none)")
      )
      warnings.warn(
        f"checkpoint {directory}/{step} was made for {have['env']} configured otherwise: {what}; it restores, but "
        "the run is not the one saved",
        CheckpointWarning,
        stacklevel=3,
      )
  if config is not None:
    a, b = saved.to_dict(), config.to_dict()
    diff = {k: (a[k], b[k]) for k in a if k not in SAFE_CONFIG_FIELDS and a[k] != b[k]}
    if diff:
      what = ", ".join(f"{k}={new!r} (checkpoint has {old!r})" for k, (old, new) in sorted(diff.items()))
      raise ValueError(
        f"config contradicts the checkpoint in {directory}: {what}; only "
        f"{sorted(SAFE_CONFIG_FIELDS)} may change on resume"
      )


class Checkpointer:
  """``ocp.CheckpointManager`` over the four items, keeping the newest ``max_to_keep`` steps."""

  def __init__(
    self, directory: str | os.PathLike, *, max_to_keep: int = 3, async_save: bool = True, create: bool = True
  ) -> None:
    self.directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      # Checked here, not at the first save: Orbax's failed background save there left threads that kept the
      # process from exiting.
      raise NotADirectoryError(f"checkpoint directory {self.directory} is a file, not a directory")
    if not create and not os.path.isdir(self.directory):
      raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
    self._discard_unfinished()
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, create=create, cleanup_tmp_directories=False, enable_async_checkpointing=async_save
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
    self.last_save_seconds = float("nan")  # blocking part of the newest save
    self._writing: int | None = None  # the step being written in the background, if any
    foreign = [s for s in self._manager.all_steps() if not any(os.path.exists(self._item_dir(s, i)) for i in ITEMS)]
    if foreign:  # a library audit: a resume renamed one `5.damaged`, and Orbax would delete it under max_to_keep
      self._manager.close()
      raise FileExistsError(
        f"checkpoint directory {self.directory} holds folder(s) named as steps that no save wrote "
        f"({', '.join(map(str, foreign))}: none of {list(ITEMS)} in them); Orbax would take them for checkpoints "
        "(skipping saves of those steps, deleting them as old ones): move them or choose another directory"
      )

  def _item_dir(self, step: int, item: str) -> str:
    return os.path.join(self.directory, str(step), item)

  # ------------------------------------------------------------------ saving
  def save(
    self,
    step: int,
    state,
    *,
    config: MuZeroConfig,
    env=None,
    extra: dict | None = None,
    force: bool = False,
    pool=None,
  ) -> bool:
    """Saves ``state``, its params, ``config`` and the meta at ``step``; a step already saved is skipped.

    ``pool``, the env params pool trained on, is recorded by its size and digest (``pool_spec``), which a
    restore given a pool checks.

    Returns once the arrays are on the host; the files are written in the
    background (call :meth:`wait` to block until the step is on disk).
    """
    if step in self._manager.all_steps():
      return False
    t0 = time.perf_counter()
    self.wait()  # as Orbax's save does first, here so that the previous step's failure is named as that step's
    meta = {
      "format": FORMAT_VERSION,
      "step": int(step),
      "counters": _counters(state),
      "env": env_spec(env) if env is not None else None,
      "pool": pool_spec(pool) if pool is not None else None,
      "digest": {"state": tree_digest(state), "params": tree_digest(state.params)},
      "extra": extra or {},
      "saved_at": time.time(),
    }
    items = {
      "state": ocp.args.StandardSave(state),
      "params": ocp.args.StandardSave(state.params),
      "config": ocp.args.JsonSave(config.to_dict()),
      "meta": ocp.args.JsonSave(meta),
    }
    with self._write_failures(step):
      saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    self._writing = step if saved else None
    self.last_save_seconds = time.perf_counter() - t0
    return saved

  def wait(self) -> None:
    """Blocks until asynchronous saves have finished.

    Raises:
      CheckpointSaveError: the step written in the background failed.
    """
    writing, self._writing = self._writing, None
    with self._write_failures(writing):
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the manager (also when the pending save failed, which it then raises)."""
    try:
      self.wait()
    finally:
      self._manager.close()

  @contextlib.contextmanager
  def _write_failures(self, step: int | None):
    """Raises the system's or the storage's failure to write `step` as a `CheckpointSaveError` (`_save_failed`);
    any other error as it is (a review: a state Orbax cannot write was told to free space)."""
    try:
      yield
    except Exception as err:
      if _os_reason(err) is None and not _STORE_FAILURE.search(str(err)):
        raise
      raise self._save_failed(step, err) from err

  def _save_failed(self, step: int | None, err: Exception) -> CheckpointSaveError:
    """A failed write as a `CheckpointSaveError` naming the step, the cause and the complete steps kept (a
    checkpoint audit: a disk that filled during training ended in Orbax's traceback, the steps kept unsaid)."""
    kept = self._complete_steps()
    which = f"step {step}" if step is not None else "a step"
    reason = _os_reason(err)
    return CheckpointSaveError(
      f"writing checkpoint {which} in {self.directory} failed: "
      + (f"{reason} ({_short(err)}); " if reason else f"{_short(err, 300)}; ")
      + (f"the steps saved before ({', '.join(map(str, kept))}) are complete and kept" if kept else "no step is saved")
      + ": free space or make the directory writable, then resume"
      + (" from it" if kept else "")
    )

  def _complete_steps(self) -> list[int]:
    """The step directories on disk that hold every item (a listing, not Orbax's cached steps)."""
    try:
      names = os.listdir(self.directory)
    except OSError:
      return []
    return sorted(int(n) for n in names if n.isdigit() and all(os.path.isdir(self._item_dir(int(n), i)) for i in ITEMS))

  # ----------------------------------------------------------------- reading
  def latest_step(self) -> int | None:
    """Newest saved step (not checked), or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Saved steps, oldest first."""
    return sorted(self._manager.all_steps())

  def read_meta(self, step: int | None = None) -> tuple[MuZeroConfig, dict]:
    """The config and meta saved at ``step`` (default newest); cheap (two JSON files)."""
    step = self._latest_or(step)
    out = self._manager.restore(
      step, args=ocp.args.Composite(config=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore())
    )
    return MuZeroConfig.from_dict(out["config"]), dict(out["meta"])

  def newest_readable_meta(self, steps: list[int] | None = None) -> tuple[int, MuZeroConfig, dict]:
    """``(step, config, meta)`` of the newest step (of ``steps``, default all) whose JSON items read.

    Its arrays are not checked (``restore`` does that).

    Raises:
      FileNotFoundError: no step, or none with a readable config and meta.
    """
    steps = sorted(self.all_steps() if steps is None else steps)
    if not steps:
      self._latest_or(None)  # raises the "no checkpoint" error
    for s in steps[::-1]:
      try:
        return (s, *self.read_meta(s))
      except Exception:  # noqa: BLE001 (restore() reports the damaged step)
        continue
    raise FileNotFoundError(f"no checkpoint with a readable config in {self.directory} (steps {steps})")

  def restore_config(self, step: int | None = None) -> MuZeroConfig:
    """The config saved at ``step`` (default newest)."""
    return self.read_meta(step)[0]

  def restore(
    self,
    template_state,
    *,
    step: int | None = None,
    env=None,
    config: MuZeroConfig | None = None,
    fallback: bool = True,
    quarantine: bool = False,
    pool=None,
  ) -> Restored:
    """The newest good checkpoint (or ``step``), with the structure of ``template_state``.

    Args:
      template_state: a state (or ``jax.eval_shape`` of one) giving the pytree
        structure, shapes and dtypes; only its shapes are used.
      step: restore exactly this step (no fallback).
      env, config: when given, the checkpoint must have been made for the same
        environment identity and a config equal outside ``SAFE_CONFIG_FIELDS``
        (``ValueError`` otherwise).
      fallback: try older steps when the newest is damaged (with a warning).
      quarantine: rename damaged step directories ``<step>.damaged``.
      pool: the env params pool to continue on (``check_pool``: another size is refused, other contents warned).

    Raises:
      FileNotFoundError: no (good) checkpoint in the directory.
      ValueError: the checkpoint contradicts ``env``, ``config`` or the size of ``pool``.
    """
    steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory} (it holds no step directory written by a MuZero run)")
    if step is not None and not os.path.isdir(os.path.join(self.directory, str(step))):  # (was a raw rename error)
      raise FileNotFoundError(
        f"no step {step} in {self.directory} (its steps: {sorted(self._manager.all_steps()) or 'none'})"
      )
    abstract = _abstract(template_state)
    skipped = []
    for s in steps:
      found = self._try_step(s, abstract, env=env, config=config)
      if isinstance(found, Restored):
        check_pool(found.meta, pool, directory=self.directory, step=s)
        if skipped:
          warnings.warn(
            f"resuming from step {s} of {self.directory} instead of newer damaged step(s) {[k for k, _ in skipped]}",
            CheckpointWarning,
            stacklevel=2,
          )
        return dataclasses.replace(found, skipped=tuple(skipped))
      reason = found
      skipped.append((s, reason))
      note = ""
      if quarantine:
        note = f"; moved to {self._quarantine(s)}"
      warnings.warn(
        f"checkpoint step {s} in {self.directory} is damaged: {reason}{note}", CheckpointWarning, stacklevel=2
      )
      if not fallback:
        break
    raise FileNotFoundError(
      f"no good checkpoint in {self.directory}: " + "; ".join(f"step {s}: {r}" for s, r in skipped)
    )

  def restore_params(self, template_params=None, step: int | None = None, *, verify: bool = True):
    """Only the network variables at ``step`` (default newest): no replay is read.

    Without ``template_params`` the variables come back as nested dicts of
    arrays (what a Flax ``apply`` takes). With ``verify`` they are checked
    against the digest written at save time (``ValueError`` on mismatch).
    """
    step = self._latest_or(step)
    restore_args = ocp.args.StandardRestore(_abstract(template_params) if template_params is not None else None)
    out = self._manager.restore(step, args=ocp.args.Composite(params=restore_args, meta=ocp.args.JsonRestore()))
    params = out["params"]
    if verify and tree_digest(params) != out["meta"].get("digest", {}).get("params"):
      raise ValueError(
        f"parameters of checkpoint {self.directory}/{step} do not match the digest written "
        f"at save time (a data file was changed)"
      )
    return params

  # ---------------------------------------------------------------- internal
  def _latest_or(self, step: int | None) -> int:
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory} (it holds no step directory written by a MuZero run)")
    return step

  def _try_step(self, step: int, abstract, *, env, config) -> Restored | str:
    """The verified state at ``step``, or why it is damaged (``ValueError`` if incompatible)."""
    missing = [item for item in ITEMS if not os.path.isdir(self._item_dir(step, item))]
    if missing:
      return f"item(s) {missing} missing"
    try:
      saved_config, meta = self.read_meta(step)
    except Exception as err:  # noqa: BLE001 (any read failure means a damaged step)
      return f"config/meta unreadable ({_short(err)})"
    if meta.get("format") != FORMAT_VERSION:  # before the config's check: the clearer reason (a review)
      raise ValueError(
        f"checkpoint {self.directory}/{step} holds a training state of format {meta.get('format')!r}, written by "
        f"another version of muzero_jax; this one resumes format {FORMAT_VERSION} (format 3 records the "
        "replay's truncations; every format-2 checkpoint, of either of that day's two layouts, is refused too): "
        "finish that run with the version that wrote it, or start a new one (its parameters load with "
        "muzero_jax.load_params)"
      )
    check_compatible(meta, saved_config, directory=self.directory, step=step, env=env, config=config)
    try:
      state = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    except Exception as err:  # as above: an unreadable state is a damaged step (unless it is of other shapes)
      differ = self._other_shapes(step, abstract)
      if differ:  # a sound step of another run's shapes: the caller's mistake, not damage (nothing is moved)
        raise ValueError(
          f"checkpoint {self.directory}/{step} holds a state of other shapes than this run's ({differ}): it was "
          "made for an environment or config of other sizes (a CubeEnv's horizon sizes its state, for one)"
        ) from err
      return f"state unreadable ({_short(err)})"
    if tree_digest(state) != meta.get("digest", {}).get("state"):
      return "state does not match the digest written at save time (a data file was changed)"
    return Restored(state=state, config=saved_config, meta=meta, step=step)

  def _other_shapes(self, step: int, abstract) -> str:
    """The leaves whose shape or dtype, as the step's own metadata records them, differ from ``abstract``'s (at most
    five named); "" where none differ or the metadata is unreadable (then the step is damaged). A cold audit: a
    sound checkpoint restored for an environment of another horizon was renamed `.damaged`, step after step."""
    try:
      stored = ocp.StandardCheckpointer().metadata(self._item_dir(step, "state"))
      stored = getattr(stored, "item_metadata", stored)  # a StepMetadata holding the tree (Orbax 0.11 on)
    except Exception:  # noqa: BLE001 (no readable metadata: nothing to compare)
      return ""

    def leaves(tree) -> dict:  # by simple path ("actor.env_state.visited": a dataclass's and a dict's alike)
      flat = jax.tree_util.tree_flatten_with_path(tree)[0]
      return {
        jax.tree_util.keystr(p, simple=True, separator="."): (tuple(x.shape), np.dtype(x.dtype).name)
        for p, x in flat
        if hasattr(x, "shape")
      }

    have, want = leaves(stored), leaves(abstract)
    differ = [
      f"{k} {have[k][0]} {have[k][1]}, this run {want[k][0]} {want[k][1]}"
      for k in want
      if have.get(k, want[k]) != want[k]
    ]
    return "; ".join(differ[:5]) + (f"; and {len(differ) - 5} more" if len(differ) > 5 else "")

  def _quarantine(self, step: int) -> str:
    src = os.path.join(self.directory, str(step))
    dst = src + _DAMAGED_SUFFIX
    k = 1
    while os.path.exists(dst):
      dst = f"{src}{_DAMAGED_SUFFIX}{k}"
      k += 1
    os.rename(src, dst)
    self._manager.reload()
    return dst

  def _discard_unfinished(self) -> None:
    """Removes (with a warning) the temporary directories of saves that never finished.

    Done here, synchronously, rather than by Orbax's own clean-up thread, so
    that two checkpointers opened one after the other on a directory never
    delete the same files at once. One process writes a directory at a time.
    """
    if not os.path.isdir(self.directory):
      return
    for name in sorted(os.listdir(self.directory)):
      if _TMP_MARK in name:
        path = os.path.join(self.directory, name)
        warnings.warn(
          f"discarding unfinished save {path} (the process stopped, or the write failed, before it was complete)",
          CheckpointWarning,
          stacklevel=3,
        )
        shutil.rmtree(path, ignore_errors=True)


def _short(err: BaseException, limit: int = 200) -> str:
  text = f"{type(err).__name__}: {err}".replace("\n", " ")
  return text if len(text) <= limit else text[:limit] + "..."


# TensorStore's status of a failed read or write of the storage (its errors are ValueErrors, `_os_reason` reads the
# system's reason where it quotes one).
_STORE_FAILURE = re.compile(r"\b(RESOURCE_EXHAUSTED|PERMISSION_DENIED|UNAVAILABLE|DATA_LOSS|ABORTED)\b")


def _os_reason(err: BaseException) -> str | None:
  """The operating system's reason for a failed write, from an ``OSError`` in ``err``'s chain or the error code
  TensorStore quotes (``[os_error_code='28']``: "No space left on device"), else None."""
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, OSError) and err.strerror:
      return err.strerror
    code = re.search(r"os_error_code='(\d+)'", str(err))
    if code:
      return os.strerror(int(code.group(1)))
    err = err.__cause__ or err.__context__
  return None


# -------------------------------------------------------------- library face
def save(
  directory: str | os.PathLike,
  state,
  config: MuZeroConfig,
  *,
  env=None,
  pool=None,
  extra: dict | None = None,
  max_to_keep: int | None = None,
) -> int:
  """Saves ``state`` at step ``state.iteration`` in ``directory`` and waits until it is on disk.

  ``env`` and ``pool`` (the env params pool trained on) are recorded so that ``restore`` can check them: a
  checkpoint saved without ``pool`` is restored onto any pool unchecked (its saved slots index the pool).

  Raises:
    FileExistsError: ``directory`` already holds that step (a state changed without a new iteration, such as
      fine-tuned parameters): nothing is overwritten (it returned as if saved; a library audit).
  """
  ckpt = Checkpointer(directory, max_to_keep=max_to_keep or config.checkpoints_to_keep)
  try:
    step = int(state.iteration)
    if not ckpt.save(step, state, config=config, env=env, extra=extra, force=True, pool=pool):
      raise FileExistsError(
        f"{directory} already holds a checkpoint of step {step} (state.iteration): nothing saved; save into "
        "another directory"
      )
  finally:
    ckpt.close()
  return step


def restore(
  directory: str | os.PathLike,
  env,
  env_params_pool,
  *,
  config: MuZeroConfig | None = None,
  step: int | None = None,
  quarantine: bool = False,
) -> Restored:
  """The newest good training state in ``directory``, ready for ``trainer.iteration``.

  The template is built from the saved config (or ``config``, which must not
  contradict it) with ``jax.eval_shape``: nothing is initialised twice.
  """
  ckpt = Checkpointer(directory, create=False)
  try:
    if config is None:
      config = ckpt.newest_readable_meta(None if step is None else [step])[1]
    trainer = make_train(config, env, env_params_pool)
    template = jax.eval_shape(trainer.init)
    return ckpt.restore(template, step=step, env=env, config=config, quarantine=quarantine, pool=env_params_pool)
  finally:
    ckpt.close()


def load_params(directory: str | os.PathLike, *, step: int | None = None) -> tuple[Any, MuZeroConfig, dict]:
  """Parameters, config and meta for inference: reads neither the replay nor the optimiser state.

  Without ``step``, the newest step whose parameters match their digest
  (older ones are tried after a :class:`CheckpointWarning`).
  """
  ckpt = Checkpointer(directory, create=False)
  try:
    steps = [ckpt._latest_or(step)] if step is not None else ckpt.all_steps()[::-1]
    if not steps:
      ckpt._latest_or(None)
    problems = []
    for s in steps:
      try:
        config, meta = ckpt.read_meta(s)
        return ckpt.restore_params(step=s), config, meta
      except Exception as err:
        if step is not None:
          raise
        problems.append(f"step {s}: {_short(err)}")
        warnings.warn(
          f"checkpoint step {s} in {ckpt.directory} is damaged: {_short(err)}", CheckpointWarning, stacklevel=2
        )
    raise FileNotFoundError(f"no good checkpoint in {ckpt.directory}: " + "; ".join(problems))
  finally:
    ckpt.close()
