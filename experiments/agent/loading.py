"""A trained agent loaded for inference: parameters, config and the grid it was trained on (docs/design.md)."""

from __future__ import annotations

import dataclasses
import os

import cube_env
import muzero_jax

# The environment identity `muzero_jax.save` records for the cube (module and class); checkpoints written before
# cube_env was grouped into subpackages record the old module path.
ENV_CLASS = f"{cube_env.CubeEnv.__module__}.{cube_env.CubeEnv.__qualname__}"
CUBE_ENV_CLASSES = (ENV_CLASS, "cube_env.env.CubeEnv")


@dataclasses.dataclass(frozen=True)
class PackagedAgent:
  """A trained agent loaded from a checkpoint directory."""

  params: object
  config: muzero_jax.MuZeroConfig
  num_filters: int  # F of the grid it was trained on
  num_values: int  # C (the grid has C + 1 columns)
  horizon: int  # episode length it was trained with
  directory: str


def load_agent(directory: str) -> PackagedAgent:
  """Loads parameters and checks the checkpoint was made on `cube_env` (ValueError naming `--checkpoint`)."""
  if not os.path.isdir(directory):
    raise ValueError(f"--checkpoint {directory!r}: no such directory")
  try:
    params, config, meta = muzero_jax.load_params(directory)
  except Exception as err:  # noqa: BLE001 (any unreadable checkpoint is the user's input problem)
    raise ValueError(f"--checkpoint {directory!r}: cannot load an agent ({type(err).__name__}: {err})") from None
  env = meta.get("env") or {}
  if env.get("env") not in CUBE_ENV_CLASSES:
    raise ValueError(f"--checkpoint {directory!r} holds an agent for {env.get('env')!r}, not {ENV_CLASS}")
  _, num_f, width = env["observation_shape"]
  task = (meta.get("extra") or {}).get("task") or {}
  horizon = int(task.get("horizon", config.max_episode_steps))
  return PackagedAgent(
    params=params,
    config=config,
    num_filters=int(num_f),
    num_values=int(width) - 1,
    horizon=horizon,
    directory=str(directory),
  )
