"""Pools of synthetic cubes to train and evaluate an agent on, padded to one shape.

Training and evaluation cubes come from disjoint generator seeds (the split is
`TRAIN_SEED_BASE` vs `EVAL_SEED_BASE`), and no held-out cube plants an effect at
a cohort (other than the root) where a training cube of the task planted one
(`synthetic.make_cases`' `avoid`), so the evaluation measures transfer to cubes
and positions the agent has never seen. Every cube of a task is padded to one
`EnvShape`, so one compiled agent plays them all (`params` stacked `[E, ...]`).
"""

from __future__ import annotations

import dataclasses
import operator

import jax

from cube_env.data import synthetic
from cube_env.data.ingest import Cube, build_cube
from cube_env.data.schema import Schema
from cube_env.environment.env import CubeEnv, make_env_pool
from cube_env.environment.params import EnvParams

TRAIN_SEED_BASE = 1000  # training cubes: seeds 1000, 1001, ...
EVAL_SEED_BASE = 5000  # held-out evaluation cubes: seeds 5000, 5001, ...
TASK_SCENARIOS = ("marginal", "interactions", "masked", "mixed")  # generator scenarios with planted effects

# A reduced schema keeps a CPU step cheap; it holds every column the planted effects use.
TASK_SCHEMA = Schema(
  dimensions=["procedure", "site", "asa_class", "anesthesia_type", "urgency"],
  protected=["race", "payer", "age_group", "sex"],
  measures=["case_minutes", "turnover_minutes", "pacu_minutes", "readmit_30d", "opioid_mme", "complication"],
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CubeTask:
  """Which cubes the agent trains and is evaluated on.

  With `families` empty the cubes come from the synthetic generator's `scenarios`
  (`make_cubes` here); with families named they are random worlds of those
  families (`cube_env.worlds.make_task_cubes`), `n_rows` rows each.
  """

  scenarios: tuple[str, ...] = TASK_SCENARIOS
  """Generator scenarios cycled through: marginal, interactions, masked, mixed (null and confounded plant none)."""
  families: tuple[str, ...] = ()
  """Random-world families (cube_env.worlds: standard, masked, wide, deep, ...) instead of the scenarios."""
  num_train_cubes: int = 8
  """Cubes the agent trains on (generator seeds of the training split)."""
  num_eval_cubes: int = 4
  """Held-out cubes it is evaluated on (seeds never used in training)."""
  n_rows: int = 6000
  """Rows (cases) of each cube's table."""
  horizon: int = 32
  """Queries an episode may spend (the agent's episode length)."""
  max_depth: int = 3
  """Most filters a cohort may have."""
  z_screen: str = "bonferroni"
  """|z| a gap needs to count as a finding: a number, or bonferroni (over every test in the space)."""

  def __post_init__(self):
    """Refuses a value no run could use, naming the field. (`families` are checked where the worlds are made,
    `cube_env.worlds`, which imports this module, and by the training CLI.)"""
    for name in ("num_train_cubes", "n_rows", "horizon", "max_depth"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
    if self.num_eval_cubes < 0:
      raise ValueError(f"num_eval_cubes must be >= 0, got {self.num_eval_cubes}")
    unknown = [s for s in self.scenarios if s not in synthetic.SCENARIOS]
    if unknown or not (self.scenarios or self.families):
      raise ValueError(f"scenarios must be one or more of {', '.join(synthetic.SCENARIOS)}, got {self.scenarios}")
    self.z_value()  # raises on a bad z_screen

  def z_value(self) -> float | str:
    """`z_screen` as `make_params` takes it: "bonferroni", or the positive number it spells."""
    if self.z_screen == "bonferroni":
      return self.z_screen
    try:
      z = float(self.z_screen)
    except (TypeError, ValueError):
      z = float("nan")
    if not 0.0 < z < float("inf"):
      raise ValueError(f"z_screen must be a positive number or bonferroni, got {self.z_screen!r}")
    return z


@dataclasses.dataclass
class CubeSet:
  """Cubes of one split with what made them (index i of each list is cube i)."""

  cubes: list[Cube]
  truths: list[list[synthetic.PlantedEffect]]  # planted effects of each cube
  seeds: list[int]  # generator seeds
  scenarios: list[str]


def make_cubes(task: CubeTask, *, split: str) -> CubeSet:
  """The task's cubes of `split` ("train" or "eval"): scenarios in turn, seeds from the split's base."""
  if split not in ("train", "eval"):
    raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
  if task.families:
    raise ValueError("a task of random worlds (families set) is built by cube_env.make_cubes (worlds.make_task_cubes)")
  base = TRAIN_SEED_BASE if split == "train" else EVAL_SEED_BASE
  count = task.num_train_cubes if split == "train" else task.num_eval_cubes
  if split == "train" and count > EVAL_SEED_BASE - TRAIN_SEED_BASE:  # an audit: seed 5000 was both
    raise ValueError(
      f"num_train_cubes must be at most {EVAL_SEED_BASE - TRAIN_SEED_BASE}: training seeds from {TRAIN_SEED_BASE} "
      f"would reach the held-out seeds from {EVAL_SEED_BASE}"
    )
  # Held out means new positions too: the drawn dimensions hold a few hundred cohorts of depth 0-2 and their row
  # counts favour few, so 11 of the 18 held-out plants of the main job's preset sat at a cohort planted in one of its
  # 8 training cubes (a cold audit, 2026-12-07), where remembering a position paid.
  avoid = []
  if split == "eval":
    avoid = [e.cohort for _, _, truth in _cases(task, TRAIN_SEED_BASE, task.num_train_cubes) for e in truth]
  out = CubeSet([], [], [], [])
  for i, (scenario, df, truth) in enumerate(_cases(task, base, count, avoid=avoid)):
    out.cubes.append(build_cube(df, TASK_SCHEMA))
    out.truths.append(truth)
    out.seeds.append(base + i)
    out.scenarios.append(scenario)
  return out


def _cases(task: CubeTask, base: int, count: int, *, avoid=()):
  """(scenario, table, planted effects) of the task's cubes of seeds base, base + 1, ... (scenarios in turn)."""
  for i in range(count):
    scenario = task.scenarios[i % len(task.scenarios)]
    # Planted effects are sized for |z| ~ 8-10 at 20,000 rows; scale them so
    # smaller training cubes keep that strength (z grows with sqrt(rows)).
    scale = max(1.0, (20000 / task.n_rows) ** 0.5)
    df, _, truth = synthetic.make_cases(scenario, base + i, n_rows=task.n_rows, effect_scale=scale, avoid=avoid)
    yield scenario, df, truth


def make_pool(task: CubeTask, cube_sets: list[CubeSet]) -> tuple[CubeEnv, list[EnvParams]]:
  """One env and a params pool `[len(set.cubes), ...]` per cube set, all padded to one shape (one compiled agent)."""
  all_cubes = [c for s in cube_sets for c in s.cubes]
  env, stacked = make_env_pool(all_cubes, horizon=task.horizon, max_depth=task.max_depth, z_screen=task.z_value())
  pools, start = [], 0
  for s in cube_sets:
    stop = start + len(s.cubes)
    pools.append(jax.tree.map(operator.itemgetter(slice(start, stop)), stacked))
    start = stop
  return env, pools
