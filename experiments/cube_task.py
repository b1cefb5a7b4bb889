"""Glue that lets a `muzero_jax` agent play `cube_env`: cube pools and evaluation.

Training and evaluation cubes come from disjoint generator seeds (the split is
`TRAIN_SEED_BASE` vs `EVAL_SEED_BASE`), so the evaluation measures transfer to
cubes the agent has never seen.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import cube_env
from cube_env import synthetic

TRAIN_SEED_BASE = 1000  # training cubes: seeds 1000, 1001, ...
EVAL_SEED_BASE = 5000  # held-out evaluation cubes: seeds 5000, 5001, ...
PLANTED = ("marginal", "interactions", "masked", "mixed")

# A reduced schema keeps a CPU step cheap; it holds every column the planted effects use.
TASK_SCHEMA = cube_env.Schema(
  dimensions=["procedure", "site", "asa_class", "anesthesia_type", "urgency"],
  protected=["race", "payer", "age_group", "sex"],
  measures=["case_minutes", "turnover_minutes", "pacu_minutes", "readmit_30d", "opioid_mme", "complication"],
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CubeTask:
  """Which cubes the agent trains and is evaluated on."""

  scenarios: tuple[str, ...] = PLANTED
  num_train_cubes: int = 8
  num_eval_cubes: int = 4
  n_rows: int = 6000
  horizon: int = 32
  max_depth: int = 3
  z_screen: str = "bonferroni"


@dataclasses.dataclass
class CubeSet:
  cubes: list
  truths: list
  seeds: list
  scenarios: list


def make_cubes(task: CubeTask, *, split: str) -> CubeSet:
  base = TRAIN_SEED_BASE if split == "train" else EVAL_SEED_BASE
  count = task.num_train_cubes if split == "train" else task.num_eval_cubes
  out = CubeSet([], [], [], [])
  for i in range(count):
    scenario = task.scenarios[i % len(task.scenarios)]
    # Planted effects are sized for |z| ~ 8-10 at 20,000 rows; scale them so
    # smaller training cubes keep that strength (z grows with sqrt(rows)).
    scale = max(1.0, (20000 / task.n_rows) ** 0.5)
    df, _, truth = synthetic.make_cases(scenario, base + i, n_rows=task.n_rows, effect_scale=scale)
    out.cubes.append(cube_env.build_cube(df, TASK_SCHEMA))
    out.truths.append(truth)
    out.seeds.append(base + i)
    out.scenarios.append(scenario)
  return out


def make_pool(task: CubeTask, cube_sets: list[CubeSet]):
  """One env and a params pool per cube set, all padded to one shape (so one compiled agent)."""
  all_cubes = [c for s in cube_sets for c in s.cubes]
  env, stacked = cube_env.make_env_pool(
    all_cubes, horizon=task.horizon, max_depth=task.max_depth, z_screen=task.z_screen
  )
  pools, start = [], 0
  for s in cube_sets:
    pools.append(jax.tree.map(lambda x, a=start, b=start + len(s.cubes): x[a:b], stacked))
    start += len(s.cubes)
  return env, pools


@functools.partial(jax.jit, static_argnames=("env", "num_steps"))
def random_walk(env, pool, key, *, num_steps: int):
  """Uniformly random legal actions, one episode per cube: returns [E] and actions [E, T]."""
  num = jax.tree.leaves(pool)[0].shape[0]
  obs, state = jax.vmap(env.reset)(jax.random.split(key, num), pool)

  def body(carry, k):
    state, alive, ret = carry
    mask = jax.vmap(env.action_mask)(state, pool)
    logits = jnp.where(mask, 0.0, -jnp.inf)
    action = jax.random.categorical(k, logits)
    _, state2, r, term, trunc, _ = jax.vmap(env.step)(jax.random.split(k, num), state, action, pool)
    ret = ret + jnp.where(alive, r, 0.0)
    return (state2, alive & ~(term | trunc), ret), jnp.where(alive, action, -1)

  (_, _, ret), actions = jax.lax.scan(
    body, (state, jnp.ones(num, bool), jnp.zeros(num)), jax.random.split(key, num_steps)
  )
  return ret, actions.T


def visited_cohorts(env, params_one, actions: np.ndarray) -> list[dict]:
  """Replays one episode's actions and returns the cohorts visited (labels need the cube's meta)."""
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


def cube_oracle(params_one, cube) -> pd.DataFrame:
  """Every new finding of a cube under the env's thresholds (run once per cube, shared by methods)."""
  return cube_env.enumerate_findings(
    cube, max_depth=int(params_one.max_depth), z_screen=float(params_one.z_screen), include_old=False
  )


def score_episode(env, params_one, cube, truth, actions, oracle) -> dict:
  """Findings reached by an episode (the oracle's new findings at visited cohorts) against truth."""
  f = len(cube.meta.filter_names)
  keys = {tuple(int(v) for v in codes[:f]) for codes in visited_cohorts(env, params_one, actions)}
  keys.add(tuple([-1] * f))  # the root is seen at reset
  codes = oracle["filters"].map(lambda d: tuple(cube_env.oracle.filters_to_codes(cube.meta, d)))
  reached = oracle[codes.isin(keys)]
  score = cube_env.score_findings(reached, truth, cube=cube)
  return {"found": len(reached), "recall": score["recall"], "precision": score["precision"]}


def evaluation_table(rows: list[dict]) -> pd.DataFrame:
  return pd.DataFrame(rows)
