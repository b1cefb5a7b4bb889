"""The quality benchmark's suites: scenarios, methods, sizes, evaluation cases and their run order.

`python -m experiments.benchmark quality --suite quick|full` runs, for each
evaluation cube (generator seeds `cube_env.EVAL_SEED_BASE + i`, never used in
training: `check_seed_split`), each method and each budget, the discovery
pipeline of `cube_env` (prepare once per cube, search under the budget,
confirm) and scores the confirmed findings against the planted truth
(`experiments.quality.runner`; docs/design.md, Discovery and confirmation).

Budgets are fractions of the exhaustive query count (every visitable cohort
to depth 3) of that cube; on the `large` space, where enumeration costs far
more than any budget, they are fixed counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import pandas as pd

import cube_env
from cube_env import synthetic
from experiments.launch.cube_presets import PRESETS

SUITE_SCENARIOS = ("marginal", "interactions", "masked", "mixed", "null", "confounded", "large")
TRUTHLESS = ("null", "confounded")  # every confirmed finding is false: family-wise error
SUITE_METHODS = ("exhaustive", "random", "greedy", "beam", "uct", "muzero", "pysubgroup-beam", "pysubgroup-dfs")
RECALL_TARGET = 0.9
FULL_BUDGET = ("exhaustive", "pysubgroup-beam", "pysubgroup-dfs")  # cheap per query: every budget in every suite


@dataclasses.dataclass(frozen=True, kw_only=True)
class Suite:
  """Sizes of one benchmark suite."""

  name: str
  scenarios: tuple[str, ...] = SUITE_SCENARIOS
  seeds: int = 1  # evaluation cubes per scenario
  n_rows: int = 8000  # rows per table (the search sees half): reduced schema `cube_env.TASK_SCHEMA`
  fractions: tuple[float, ...] = (0.01, 0.05, 0.2, 1.0)  # budgets, as fractions of the exhaustive count
  large_rows: int = 10000  # `large`: the full synthetic schema (15 filter columns, 9 measures)
  large_max_categories: int = 16  # ... with more categories kept (surgeon has about 75)
  large_budgets: tuple[int, ...] = (30, 100, 300)  # fixed query counts on `large`
  large_seeds: int | None = None  # cubes of `large` (default: `seeds`)
  methods: tuple[str, ...] = SUITE_METHODS
  max_depth: int = 3
  walker_max_fraction: float = 1.0  # budgets above this fraction run only for the methods in `FULL_BUDGET`


SUITES = {
  "tiny": Suite(
    name="tiny",
    scenarios=("mixed", "null"),
    n_rows=1200,
    fractions=(0.05, 1.0),
    methods=("exhaustive", "random", "beam", "pysubgroup-beam"),
    max_depth=2,
  ),
  # quick: about 14 minutes on 2 cores with 2 workers (every walker's read-off run at 100% dominates)
  "quick": Suite(name="quick", seeds=2, n_rows=2500, large_seeds=1),
  "full": Suite(
    name="full",
    seeds=5,
    n_rows=20000,
    fractions=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    large_rows=50000,
    large_max_categories=32,
    large_budgets=(200, 1000, 5000, 20000),
  ),
}


def check_seed_split() -> None:
  """Raises unless every training preset's cube seeds lie below the evaluation seeds."""
  most = max(p.task.num_train_cubes for p in PRESETS.values())
  if cube_env.TRAIN_SEED_BASE + most > cube_env.EVAL_SEED_BASE:
    raise RuntimeError(
      f"training seeds {cube_env.TRAIN_SEED_BASE}..{cube_env.TRAIN_SEED_BASE + most - 1} "
      f"reach the evaluation seeds from {cube_env.EVAL_SEED_BASE}"
    )


def check_request(
  method_names: Iterable[str] | None = None,
  scenarios: Iterable[str] | None = None,
  workers: int | None = None,
  seeds: int | None = None,
  time_limit_s: float | None = None,
) -> None:
  """Raises ValueError naming the flag of an unknown method or scenario or an out-of-range number."""
  for flag, given, known in (("--methods", method_names, SUITE_METHODS), ("--scenarios", scenarios, SUITE_SCENARIOS)):
    unknown = [name for name in given or () if name not in known]
    if unknown:
      raise ValueError(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
  for flag, value in (("--workers", workers), ("--seeds", seeds)):
    if value is not None and value < 1:
      raise ValueError(f"{flag} must be at least 1, got {value}")
  if time_limit_s is not None and time_limit_s < 0:
    raise ValueError(f"--time-limit-s must be >= 0, got {time_limit_s}")


def resize(
  suite: Suite,
  *,
  method_names: Iterable[str] | None = None,
  scenarios: Iterable[str] | None = None,
  seeds: int | None = None,
) -> Suite:
  """`suite` with a subset of methods or scenarios, or `seeds` cubes per scenario (`large` too)."""
  if method_names:
    suite = dataclasses.replace(suite, methods=tuple(method_names))
  if scenarios:
    suite = dataclasses.replace(suite, scenarios=tuple(scenarios))
  if seeds is not None:
    suite = dataclasses.replace(suite, seeds=seeds, large_seeds=None)
  return suite


@dataclasses.dataclass(frozen=True)
class Case:
  """One evaluation table and what the benchmark knows about it."""

  scenario: str
  seed: int  # generator seed (>= EVAL_SEED_BASE); also the row split's seed
  df: pd.DataFrame
  schema: cube_env.Schema
  truth: list
  adjust: tuple[str, ...]
  max_categories: int


def make_case(scenario: str, index: int, suite: Suite) -> Case:
  """Evaluation cube `index` of a scenario; planted effects sized for |z| ~ 8-10 in each half."""
  seed = cube_env.EVAL_SEED_BASE + index
  large = scenario == "large"
  n_rows = suite.large_rows if large else suite.n_rows
  scale = max(1.0, (20000 / (n_rows / 2)) ** 0.5)
  df, full_schema, truth = synthetic.make_cases("mixed" if large else scenario, seed, n_rows=n_rows, effect_scale=scale)
  return Case(
    scenario=scenario,
    seed=seed,
    df=df,
    schema=full_schema if large else cube_env.TASK_SCHEMA,
    truth=list(truth),
    adjust=synthetic.ADJUSTERS if scenario == "confounded" else (),
    max_categories=suite.large_max_categories if large else 12,
  )


def case_order(suite: Suite) -> list[tuple[str, int]]:
  """(scenario, seed index) in run order: `large` first (the longest case), then seed by seed across scenarios,
  so a suite cut short by a time limit still covers every scenario."""
  cases = [
    (scenario, i)
    for i in range(max(suite.seeds, suite.large_seeds or 0))
    for scenario in suite.scenarios
    if i < (suite.large_seeds or suite.seeds if scenario == "large" else suite.seeds)
  ]
  return sorted(cases, key=lambda c: c[0] != "large")
