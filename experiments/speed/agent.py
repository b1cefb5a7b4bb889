"""MuZero speed on the cube task of an `experiments.train` preset (`experiments.launch.cube_presets`): search, self-play, learner, training (docs/design.md).

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
    imitation_iterations=config.imitation_iterations,  # timed iterations may fall inside the warm start
    expert_prior=config.expert_prior,
  )
  return config, env, pool, tag


def search_rows(setup, batch_sizes) -> list[dict]:
  """mctx search simulations/s and the overhead ratio per search batch size."""
  config, env, pool, tag = setup
  return [
    dict(tag, bench="search", **r) for r in muzero_jax.benchmark_search(config, env, pool, batch_sizes=batch_sizes)
  ]


# Agent settings a preset held before this round's speed work, where they changed since: the `cpu` preset
# reanalysed a quarter of each batch until validation cubes chose none (2026-12-01, benchmarks/README.md).
BEFORE: dict[str, dict] = {"cpu": {"reanalyse_fraction": 0.25}}


def _as_before(setup, reference: bool):
  """(config, env, groupby) to measure: the preset's, or, with `reference`, as before this round's speed work.

  Before: today's environment step before the cell index (the dense `segment`
  group-by under a plain vmap, `experiments.speed.env_speed.REFERENCE`),
  XLA's own convolution gradients (`MuZeroConfig.conv_gradient="lax"`), which
  ran several times slower inside the learner's loops on a CPU, those loops
  in one compiled program (`MuZeroConfig.learner_loop="scan"`), and the
  preset's settings of then (`BEFORE`). Not undone: the learner's unrolled
  K-step loop (`muzero_jax.learner.loss_fn`) and its update loop that
  carries only priorities (`muzero_jax.trainer.learn_updates`), which the
  reference keeps, so its speed-up over the reference is a lower bound.
  """
  config, env, _, tag = setup
  if reference:
    before = dict(conv_gradient="lax", learner_loop="scan", **BEFORE.get(tag["preset"], {}))
    return config.replace(**before), reference_env(env), REFERENCE
  return config, env, env.groupby


def selfplay_rows(setup, num_envs, *, reference: bool = False) -> list[dict]:
  """Self-play moves/s per number of environments (`reference`: as before, see `_as_before`)."""
  config, env, groupby = _as_before(setup, reference)
  rows = muzero_jax.benchmark_selfplay(config, env, setup[2], num_envs=num_envs)
  return [dict(setup[3], bench="selfplay", groupby=groupby, reference=reference, **r) for r in rows]


def training_rows(
  setup, *, reference: bool = False, iterations: int = 20, learner_loop: str | None = None
) -> list[dict]:
  """Moves/s of training itself (self-play, replay and the learner's updates): the figure a run shows.

  `reference`: trained as before this round's speed work (`_as_before`).
  `learner_loop`: the preset's with this `MuZeroConfig.learner_loop` instead (not with `reference`).
  """
  config, env, groupby = _as_before(setup, reference)
  if learner_loop is not None:
    if reference:
      raise ValueError("training_rows: learner_loop is for the rows of now, not the reference")
    config = config.replace(learner_loop=learner_loop)
  row = muzero_jax.benchmark_training(config, env, setup[2], iterations=iterations)
  return [dict(setup[3], bench="training", groupby=groupby, reference=reference, **row)]


def learner_rows(setup, batch_sizes) -> list[dict]:
  """Learner updates/s per batch size."""
  config, env, pool, tag = setup
  return [
    dict(tag, bench="learner", **r) for r in muzero_jax.benchmark_learner(config, env, pool, batch_sizes=batch_sizes)
  ]
