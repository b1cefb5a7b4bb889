"""Whole episodes over a pool of cubes: jitted random and greedy baselines, the cohorts visited, scores against truth.

An episode is scored by the findings it reached: the oracle's new findings
(`cube_oracle`, computed once per cube) at the cohorts it visited, the root
included, against the planted truth (`scoring.score_findings`). Used to
compare a trained agent's episodes with uniformly random ones and greedy
search's on held-out cubes (`environment.pools`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from cube_env.data.ingest import Cube, filters_to_codes
from cube_env.discovery.oracle import enumerate_findings
from cube_env.discovery.scoring import score_findings
from cube_env.environment.env import CubeEnv
from cube_env.environment.params import EnvParams


def _random_move(env: CubeEnv, key, obs, state, pool, mask):
  del env, obs, state, pool
  return jax.random.categorical(key, jnp.where(mask, 0.0, -jnp.inf))


def _greedy_move(env: CubeEnv, key, obs, state, pool, mask):
  del key
  return jnp.argmax(jnp.where(mask, jax.vmap(env.expert_logits)(obs, state, pool), -jnp.inf), axis=-1)


@functools.partial(jax.jit, static_argnames=("env", "num_steps", "move"))
def _rollouts(env: CubeEnv, pool: EnvParams, key: jax.Array, *, num_steps: int, move):
  """One episode per cube of `pool` (`[E, ...]`), `move(env, key, obs, state, pool, mask) -> [E]` choosing each step."""
  num = jax.tree.leaves(pool)[0].shape[0]
  obs, state = jax.vmap(env.reset)(jax.random.split(key, num), pool)

  def body(carry, k):
    obs, state, alive, ret = carry
    mask = jax.vmap(env.action_mask)(state, pool)
    action = move(env, k, obs, state, pool, mask)
    obs, state2, r, term, trunc, _ = jax.vmap(env.step)(jax.random.split(k, num), state, action, pool)
    ret = ret + jnp.where(alive, r, 0.0)
    return (obs, state2, alive & ~(term | trunc), ret), jnp.where(alive, action, -1)

  (_, _, _, ret), actions = jax.lax.scan(
    body, (obs, state, jnp.ones(num, bool), jnp.zeros(num)), jax.random.split(key, num_steps)
  )
  return ret, actions.T


def random_rollouts(env: CubeEnv, pool: EnvParams, key: jax.Array, *, num_steps: int):
  """One episode of uniformly random legal actions per cube of `pool` (`[E, ...]`).

  Returns:
    (returns `[E]` float32, actions `[E, num_steps]` int32, -1 after the episode ended).
  """
  return _rollouts(env, pool, key, num_steps=num_steps, move=_random_move)


def greedy_rollouts(env: CubeEnv, pool: EnvParams, key: jax.Array, *, num_steps: int):
  """One episode of greedy search's move per cube of `pool`: each step the legal target with the strongest |z|.

  The argmax of `CubeEnv.expert_logits` over the legal actions (ties to the lowest action; |z| as the
  observation holds it, clipped, visited targets last):
  the baseline a learned agent has to beat at the same budget, in the same episodes.
  Returns as `random_rollouts`.
  """
  return _rollouts(env, pool, key, num_steps=num_steps, move=_greedy_move)


def visited_cohorts(env: CubeEnv, params_one: EnvParams, actions: np.ndarray) -> list[np.ndarray]:
  """Replays one episode's actions (stopping at -1); returns the `[F]` filter codes of each cohort reached."""
  step = _jit_step(env)
  _, state = _jit_reset(env)(jax.random.PRNGKey(0), params_one)
  out = []
  for a in actions:
    if a < 0:
      break
    _, state, *_ = step(jax.random.PRNGKey(0), state, int(a), params_one)
    out.append(np.asarray(state.filters).copy())
  return out


@functools.cache
def _jit_step(env):
  return jax.jit(env.step)


@functools.cache
def _jit_reset(env):
  return jax.jit(env.reset)


def cube_oracle(params_one: EnvParams, cube: Cube) -> pd.DataFrame:
  """Every new finding of a cube under the env's thresholds, its smallest group and cohort too (run once per cube,
  shared by methods; they fell back to the defaults, so an env of another `min_group` was scored against findings
  of other cohorts than it visits)."""
  return enumerate_findings(
    cube,
    max_depth=int(params_one.max_depth),
    min_group=float(params_one.min_group),
    min_cohort=float(params_one.min_cohort),
    z_screen=float(params_one.z_screen),
    new_z=float(params_one.new_z),
    include_old=False,
  )


def score_episode(
  env: CubeEnv, params_one: EnvParams, cube: Cube, truth, actions: np.ndarray, oracle: pd.DataFrame
) -> dict:
  """Findings reached by an episode (`oracle`'s rows at visited cohorts) against `truth`: found, recall, precision."""
  f = len(cube.meta.filter_names)
  keys = {tuple(int(v) for v in codes[:f]) for codes in visited_cohorts(env, params_one, actions)}
  keys.add(tuple([-1] * f))  # the root is seen at reset
  codes = oracle["filters"].map(lambda d: tuple(filters_to_codes(cube.meta, d)))
  reached = oracle[codes.isin(keys)]
  score = score_findings(reached, truth, cube=cube)
  return {"found": len(reached), "recall": score["recall"], "precision": score["precision"]}
