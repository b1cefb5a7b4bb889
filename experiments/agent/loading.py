"""A trained agent loaded for inference: parameters, config and the grid it was trained on (docs/design.md).

An agent comes from a checkpoint directory (`python -m experiments.train
--checkpoint-dir DIR`) or from an exported `.npz` file (`export_agent`): the
parameters alone, a few hundred kB, with the config and the trained grid as
JSON inside, no pickle. `PACKAGED` is the agent shipped with the package, made
by `python -m experiments.agent.export` (see its docstring) from random
training worlds only; `load_agent(None)` reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

import cube_env
import muzero_jax
from cube_env.discovery import ranking

# The environment identity `muzero_jax.save` records for the cube (module and class); checkpoints written before
# cube_env was grouped into subpackages record the old module path.
ENV_CLASS = f"{cube_env.CubeEnv.__module__}.{cube_env.CubeEnv.__qualname__}"
CUBE_ENV_CLASSES = (ENV_CLASS, "cube_env.env.CubeEnv")
PACKAGED = os.path.join(os.path.dirname(__file__), "pretrained.npz")
EXPORT_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class PackagedAgent:
  """A trained agent loaded from a checkpoint directory or an exported file."""

  params: object
  config: muzero_jax.MuZeroConfig
  num_filters: int  # F of the grid it was trained on
  num_values: int  # C (the grid has C + 1 columns)
  horizon: int  # episode length it was trained with
  directory: str  # where it was read from (a directory or an .npz file)
  any_grid: bool = False  # fully convolutional policy: the same parameters play a grid of any size
  source: str = ""  # what made it (the exported file's record: preset, task, iteration)


def _any_grid(config: muzero_jax.MuZeroConfig, num_filters: int, num_values: int) -> bool:
  shape = (len(cube_env.CHANNELS), num_filters, num_values + 1)
  return muzero_jax.uses_conv_policy(config, num_filters * (num_values + 1), shape)


def _check_params(
  flat: dict, config: muzero_jax.MuZeroConfig, num_filters: int, num_values: int, path: str, flag: str = "--checkpoint"
) -> None:
  """ValueError naming `flag` unless the exported arrays are the parameters of the network the file's config
  and grid make, every one finite (an audit: a missing or misshapen array was a Flax traceback at the first query,
  NaN parameters a "non-finite score" error that named no file)."""
  shape = (len(cube_env.CHANNELS), num_filters, num_values + 1)
  network = muzero_jax.make_network(config, num_filters * (num_values + 1), shape)
  want = traverse_util.flatten_dict(
    jax.eval_shape(network.init, jax.random.PRNGKey(0), jnp.zeros((1, *shape)), jnp.zeros((1,), jnp.int32)), sep="/"
  )
  where = f"{flag} {path!r}: not the parameters of its config's network"
  missing, extra = sorted(set(want) - set(flat)), sorted(set(flat) - set(want))
  if missing or extra:
    raise ValueError(f"{where} ({len(missing)} missing, e.g. {missing[:2]}; {len(extra)} unknown, e.g. {extra[:2]})")
  wrong = [k for k in want if tuple(flat[k].shape) != tuple(want[k].shape)]
  if wrong:
    k = wrong[0]
    raise ValueError(f"{where} ({len(wrong)} arrays of the wrong shape, e.g. {k} {flat[k].shape}, not {want[k].shape})")
  bad = [k for k, v in flat.items() if not np.all(np.isfinite(v))]
  if bad:
    raise ValueError(f"{flag} {path!r}: {len(bad)} parameter arrays hold NaN or infinite values, e.g. {bad[0]}")


EXPECTED = (
  "a checkpoint directory (python -m experiments.train --checkpoint-dir) or an exported agent .npz "
  "(python -m experiments.agent.export)"
)


def load_agent(directory: str | None = None, *, flag: str = "--checkpoint") -> PackagedAgent:
  """The agent in a checkpoint directory or exported `.npz` (default `PACKAGED`); ValueError naming `flag` (the
  option or argument that gave the path) unless the path holds one."""
  if directory is None or (str(directory).endswith(".npz") and not os.path.isdir(directory)):
    return _load_exported(directory or PACKAGED, flag)
  if os.path.exists(directory) and not os.path.isdir(directory):  # an audit: it read "no such directory"
    raise ValueError(f"{flag} {directory!r} is a file, not {EXPECTED}")
  if not os.path.isdir(directory):
    raise ValueError(f"{flag} {directory!r}: no such directory; give {EXPECTED}")
  try:
    params, config, meta = muzero_jax.load_params(directory)
  except Exception as err:  # noqa: BLE001 (any unreadable checkpoint is the user's input problem)
    raise ValueError(f"{flag} {directory!r}: cannot load an agent ({type(err).__name__}: {err})") from None
  env = meta.get("env") or {}
  if env.get("env") not in CUBE_ENV_CLASSES:
    raise ValueError(f"{flag} {directory!r} holds an agent for {env.get('env')!r}, not {ENV_CLASS}")
  _, num_f, width = env["observation_shape"]
  extra = meta.get("extra") or {}
  task = extra.get("task") or {}
  horizon = int(task.get("horizon", config.max_episode_steps))
  source = json.dumps(
    {"checkpoint": str(directory), "preset": extra.get("preset"), "task": task, "counters": meta.get("counters")}
  )
  return PackagedAgent(
    params=params,
    config=config,
    num_filters=int(num_f),
    num_values=int(width) - 1,
    horizon=horizon,
    directory=str(directory),
    any_grid=_any_grid(config, int(num_f), int(width) - 1),
    source=source,
  )


def agent_id(path: str | None = None) -> str:
  """`sha256:` and 12 hex digits of the agent's bytes (default the packaged file; a directory: all its files, by
  relative path): what a benchmark row records, so that rows of a retrained agent are told apart from the old one's."""
  path = path or PACKAGED
  if not os.path.exists(path):
    raise ValueError(f"--checkpoint {path!r}: no such file or directory")
  digest = hashlib.sha256()
  files = (
    [path]
    if os.path.isfile(path)
    else sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
  )
  for name in files:
    digest.update(os.path.relpath(name, path).encode())
    with open(name, "rb") as handle:
      digest.update(handle.read())
  return "sha256:" + digest.hexdigest()[:12]


def export_agent(agent: PackagedAgent, path: str, *, flag: str = "--out") -> None:
  """Writes the agent's parameters, config and grid to an `.npz` file (atomically); a write that fails (a full disk)
  leaves no partial file and is a ValueError naming `flag` (a checkpoint audit: a traceback and a stray .tmp.npz)."""
  flat = traverse_util.flatten_dict(jax.device_get(agent.params), sep="/")
  record = {
    "format": EXPORT_FORMAT,
    "config": agent.config.to_dict(),
    "num_filters": agent.num_filters,
    "num_values": agent.num_values,
    "horizon": agent.horizon,
    "source": agent.source,
  }
  tmp = f"{path}.tmp.npz"
  try:
    np.savez_compressed(tmp, __agent__=np.asarray(json.dumps(record)), **{k: np.asarray(v) for k, v in flat.items()})
    os.replace(tmp, path)
  except OSError as err:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise ValueError(f"{flag} {path!r}: the agent could not be written ({err.strerror or err})") from None


def _load_exported(path: str, flag: str = "--checkpoint") -> PackagedAgent:
  where = "the packaged agent" if path == PACKAGED else f"{flag} {path!r}"
  if not os.path.exists(path):
    raise ValueError(f"{where}: no such file (make one with python -m experiments.agent.export)")
  # An audit: a text file named .npz was numpy's hint to load it with allow_pickle. It is never unpickled.
  if not zipfile.is_zipfile(path):
    raise ValueError(
      f"{where}: cannot load an agent: not an exported agent (not an .npz archive; "
      "python -m experiments.agent.export writes one)"
    )
  try:
    with np.load(path, allow_pickle=False) as z:
      text = str(z["__agent__"]) if "__agent__" in z.files else None
      flat = {k: z[k] for k in z.files if k != "__agent__"}
  except Exception as err:  # noqa: BLE001 (a damaged file is the user's input problem)
    raise ValueError(f"{where}: cannot load an agent ({ranking.unreadable(err)})") from None
  if text is None:
    raise ValueError(
      f"{where}: cannot load an agent: not an exported agent (no __agent__ record; "
      "python -m experiments.agent.export writes one)"
    )
  try:
    record = json.loads(text)
    if record.get("format") != EXPORT_FORMAT:
      raise ValueError(f"format {record.get('format')!r}, this code reads {EXPORT_FORMAT}")
    config = muzero_jax.MuZeroConfig.from_dict(record["config"])
    num_f, num_v, horizon = int(record["num_filters"]), int(record["num_values"]), int(record["horizon"])
  except Exception as err:  # noqa: BLE001 (a damaged file is the user's input problem)
    raise ValueError(f"{where}: cannot load an agent ({type(err).__name__}: {err})") from None
  _check_params(flat, config, num_f, num_v, path, flag)
  return PackagedAgent(
    params=traverse_util.unflatten_dict(flat, sep="/"),
    config=config,
    num_filters=num_f,
    num_values=num_v,
    horizon=horizon,
    directory=str(path),
    any_grid=_any_grid(config, num_f, num_v),
    source=str(record.get("source", "")),
  )
