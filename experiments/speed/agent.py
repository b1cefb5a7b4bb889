"""MuZero speed on the cube task of an `experiments.train` preset (`experiments.launch.cube_presets`): search, self-play, learner (docs/design.md).

Each function returns JSON-ready rows, every one tagged with the preset, the
device and the search settings (`agent_setup`), from the `muzero_jax.benchmark_*`
measurements.
"""

from __future__ import annotations

import jax

import cube_env
import muzero_jax
from experiments.launch.cube_presets import PRESETS
from experiments.speed.env_speed import REFERENCE, reference_env


def agent_setup(preset: str):
  """(config, env, pool, tag) of a preset's training task; `tag` holds what every speed row records."""
  task, config = PRESETS[preset].task, PRESETS[preset].config
  cubes = cube_env.make_cubes(task, split="train")
  env, (pool,) = cube_env.make_pool(task, [cubes])
  device = jax.devices()[0]
  tag = dict(
    preset=preset,
    device=device.device_kind,
    platform=device.platform,
    num_actions=env.num_actions,
    num_simulations=config.num_simulations,
    search=config.search,
  )
  return config, env, pool, tag


def search_rows(setup, batch_sizes) -> list[dict]:
  """mctx search simulations/s and the overhead ratio per search batch size."""
  config, env, pool, tag = setup
  return [
    dict(tag, bench="search", **r) for r in muzero_jax.benchmark_search(config, env, pool, batch_sizes=batch_sizes)
  ]


def selfplay_rows(setup, num_envs, *, reference: bool = False) -> list[dict]:
  """Self-play moves/s per number of environments.

  `reference=True` runs the same self-play on today's environment step
  before the cell index (the dense `segment` group-by under a plain vmap,
  `experiments.speed.env_speed.REFERENCE`), for the side-by-side figure.
  """
  config, env, pool, tag = setup
  groupby = env.groupby
  if reference:
    env, groupby = reference_env(env), REFERENCE
  rows = muzero_jax.benchmark_selfplay(config, env, pool, num_envs=num_envs)
  return [dict(tag, bench="selfplay", groupby=groupby, reference=reference, **r) for r in rows]


def learner_rows(setup, batch_sizes) -> list[dict]:
  """Learner updates/s per batch size."""
  config, env, pool, tag = setup
  return [
    dict(tag, bench="learner", **r) for r in muzero_jax.benchmark_learner(config, env, pool, batch_sizes=batch_sizes)
  ]
