"""The quality benchmark's suites: world families, methods, sizes, evaluation worlds and their run order.

`python -m experiments.benchmark quality --suite quick|standard|full` runs, for
each evaluation world (`cube_env.worlds.make_world`, seeds from
`worlds.EVAL_SEED_BASE`, schemas drawn from the other half of the name
vocabulary: `check_seed_split`), each method and each budget, the discovery
pipeline of `cube_env` (prepare once per world, search under the budget,
confirm) and scores the confirmed findings against the planted truth
(`experiments.quality.runner`; docs/design.md, Discovery and confirmation).

Families (issue 17): `standard` (8-16 filter columns, planted depth drawn from 0-3; at the suites' 10,000
rows a depth-3 plant rarely survives calibration, whose failure draws the depth again: 2 of 42 plants of 10
training and 10 evaluation worlds were at depth 3, none of the evaluation's, a cold audit of 2026-12-06) and
`masked` (checkerboards over 2-3 columns), where enumeration to depth 3 is
feasible: budgets are fractions of its query count (`FRACTIONS`); `wide`
(>= 40 filter columns) and `deep` (planted depth 4, searched to depth 4), where
it is not: fixed query counts (`FIXED_BUDGETS`), enumeration's count recorded
beside them; `null` and `confounded` (adjusted), where every confirmed finding
is false (family-wise error).

Settings of the methods (`Suite.method_options`: beam width, UCT constant,
pysubgroup's beam width and depth) come from a sweep on training worlds only
(`--split train --sweep`, `SWEEP`), never on evaluation worlds.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Iterable

import pandas as pd

import cube_env
from cube_env import worlds
from cube_env.discovery import ranking
from experiments import agent

SUITE_SCENARIOS = ("standard", "wide", "deep", "masked", "null", "confounded")  # world families
SWEEP_ON_TRAIN = "--sweep tunes method settings: it runs on training worlds only (--split train)"
VALIDATION_WORLDS = worlds.VALIDATION_WORLDS  # training-split indices 0-19 validate (`--split train`); ranker from 20
TRUTHLESS = ("null", "confounded")  # every confirmed finding is false: family-wise error
FIXED_FAMILIES = ("wide", "deep")  # enumeration infeasible: fixed query budgets
SUITE_METHODS = (
  "exhaustive",
  "auto",
  "random",
  "greedy",
  "beam",
  "uct",
  "frontier",
  "learned",
  "muzero",
  "pysubgroup-beam",
  "pysubgroup-dfs",
)
RECALL_TARGET = 0.9
LEARNED = "learned"  # the learned search (issue 18) ...
LEARNED_SEARCHES = (LEARNED, "muzero")  # ... and the agent on top of it: each compared with the best heuristic
RANKER_ID = "weights_sha256"  # options-row key of the learned ranking's weights file (its content hash)
AGENT_ID = "agent_sha256"  # options-row key of muzero's agent (`experiments.agent.agent_id`)
HEURISTICS = ("greedy", "beam", "uct", "pysubgroup-beam", "pysubgroup-dfs")  # ... and what it must beat
FRACTIONS = (0.001, 0.005, 0.01, 0.05, 0.2, 1.0)  # of enumeration's query count (1.0: enumeration itself)
FIXED_BUDGETS = (100, 300, 1000, 3000)  # queries, on FIXED_FAMILIES
FULL_BUDGET = ("exhaustive", "pysubgroup-beam", "pysubgroup-dfs")  # their search depends on the budget: a run each
BUDGET_DEPENDENT = FULL_BUDGET + ("auto",)  # a run per budget (auto plans from it); the walkers are read off one run
DEEP_DEPTH = 4  # search depth on `deep` worlds (planted at depth 4)
# Method settings tried on training worlds (`--sweep`); the winners go into the suites' `method_options`.
SWEEP = {
  "beam": [(("width", w),) for w in (4, 8, 16, 32)],
  "uct": [(("exploration", c),) for c in (0.25, 0.5, 1.0, 2.0)],
  "pysubgroup-beam": [(("width", w), ("depth", d)) for w in (10, 20, 40) for d in (2, 3)],
  "pysubgroup-dfs": [(("depth", d),) for d in (2, 3)],
  "frontier": [(("lift", x),) for x in (0.0, 0.5, 1.0)],
  "muzero": [(("refine", r),) for r in (0.5, 1.0, 2.0, 8.0)]
  + [(("mode", "episodes"),), (("simulations", 32),), (("backup", "max"), ("simulations", 32))],
}
# Chosen on training worlds (`summary.best_settings`: the best mean recall at 0.5-5% and 300-1,000 query budgets):
# beam width 32 and frontier's lift 0.5 (its default) on 2 training worlds each of standard, wide, deep and masked
# (benchmarks/quality_sweep_frontier_train_cpu.jsonl; an earlier sweep on 2 standard and 1 masked world had chosen
# width 16); pysubgroup's DFS to depth 2 (benchmarks/quality_sweep_train_cpu.jsonl); uct and pysubgroup's beam
# search keep their defaults (tied or best).
TUNED: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = (
  ("beam", (("width", 32),)),
  ("pysubgroup-dfs", (("depth", 2),)),
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Suite:
  """Sizes of one benchmark suite."""

  name: str
  scenarios: tuple[str, ...] = SUITE_SCENARIOS  # world families
  seeds: int = 3  # worlds per family
  n_rows: int = 20_000  # rows per world (its planted effects are calibrated to |z| 6.5-10 at any size)
  fractions: tuple[float, ...] = FRACTIONS
  fixed_budgets: tuple[int, ...] = FIXED_BUDGETS
  # muzero plays the packaged agent (or `--checkpoint`); an agent with dense heads is "n/a" on worlds its grid
  # does not fit.
  methods: tuple[str, ...] = SUITE_METHODS
  max_depth: int = 3  # search depth (DEEP_DEPTH on `deep`)
  walker_max_fraction: float = 0.2  # budgets above this fraction run only for the methods in `above_walkers`
  # methods run at every fraction (their search depends on the budget); `auto` at 100% enumerates
  above_walkers: tuple[str, ...] = BUDGET_DEPENDENT
  split: str = "eval"  # "train" for the settings sweep
  method_options: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = TUNED
  checkpoint: str | None = None  # the agent muzero plays (`--checkpoint`; None: the packaged one), hashed into its rows

  def __post_init__(self):
    stray = [m for m in self.above_walkers if m not in BUDGET_DEPENDENT]
    if stray:
      raise ValueError(f"suite {self.name}: above_walkers takes {BUDGET_DEPENDENT}, not {stray}")

  def options(self, method: str) -> dict:
    """The settings bound to `method`: a sweep variant's own (`beam@width=16`), else the suite's tuned ones."""
    return parse_variant(method)[1] or dict(dict(self.method_options).get(method, ()))

  def options_row(self, method: str) -> list[list]:
    """The settings `method` runs with (its signature's defaults, then `options`), as a run row stores them: sorted
    [key, value] pairs, so that a stored row run with other settings (or under other defaults) is told apart; for
    `learned`, `muzero` and an `auto` that falls back to `learned`, also the content hash of the ranker's weights
    (`RANKER_ID`), and for `muzero` that of its agent (`AGENT_ID`), so rows of a refitted ranker or a retrained agent
    are not mistaken for the old one's; and for those three the learned value's `depth` preference (None: by the
    space's depth, `ranking.default_depth`; a change of that rule must change how it is recorded, or resumed rows
    would pass for the new rule's)."""
    effective = {**default_options(base_method(method)), **self.options(method)}
    if base_method(method) in LEARNED_SEARCHES or effective.get("fallback") == LEARNED:  # the ranker's identity too
      effective[RANKER_ID] = ranking.weights_id(effective.get("weights"))
      effective.setdefault("depth", default_options(LEARNED)["depth"])  # and its depth preference (`auto` passes it)
    if base_method(method) == "muzero":  # and the agent's
      effective[AGENT_ID] = agent.agent_id(effective.get("checkpoint") or self.checkpoint)
    return [[k, v] for k, v in sorted(effective.items())]

  def method_options_row(self) -> list[list]:
    """`method_options` as an invocation row stores it ([method, [[key, value], ...]] lists, as JSON reads back)."""
    return [[m, list(map(list, o))] for m, o in self.method_options]

  def fractions_for(self, method: str) -> tuple[float, ...]:
    """The fractions of enumeration's queries `method` runs at: the walkers' (to `walker_max_fraction`), every one
    for the methods in `above_walkers` whose search depends on the budget, and 100% (enumeration) for `auto`."""
    base = base_method(method)
    walker = tuple(f for f in sorted(self.fractions) if f <= self.walker_max_fraction + 1e-9)
    if base not in self.above_walkers:
      return walker
    return walker + (1.0,) if base == "auto" else tuple(sorted(self.fractions))

  def depth(self, family: str) -> int:
    return DEEP_DEPTH if family == "deep" else self.max_depth


_CPU = Suite(
  name="quick",
  seeds=3,
  n_rows=10_000,
  walker_max_fraction=0.05,
  above_walkers=("exhaustive",),
  fixed_budgets=(100, 300, 1000),
)
SUITES = {
  "tiny": Suite(
    name="tiny",
    scenarios=("standard", "null"),
    seeds=1,
    n_rows=3000,
    fractions=(0.01, 1.0),
    methods=("exhaustive", "auto", "greedy", "pysubgroup-beam"),
    max_depth=2,
  ),
  # quick: about 30 minutes on 2 cores with 2 workers (29.5 measured; it was 14.2 before issue 17): 10,000 rows (a world's cube has about one cell per
  # exploring row, so a query costs in proportion to rows); every method but enumeration to 5% of enumeration's
  # queries (auto enumerates at 100%: enumeration's own run stands for it; tests check auto's choice), fixed budgets
  # to 1,000 (a walker's 3,000 queries on a wide world take about a minute here)
  "quick": _CPU,
  # standard: about 90 minutes here (85.6 measured in three calls); 10 worlds per family at quick's sizes and budgets. Fixed budgets stop at 1,000
  # as in quick: with 3,000 one world of each family took 9.3 minutes here (wide and deep 3,000-query runs are
  # about half of it), so 10 worlds would take about 93; 3,000 queries are in `full`
  "standard": dataclasses.replace(_CPU, name="standard", seeds=10),
  "full": Suite(name="full", seeds=20, n_rows=50_000),  # for a GPU
}


def check_seed_split(suite: Suite | None = None) -> None:
  """Raises unless training and evaluation worlds are disjoint in seeds and in schemas (column-name halves), and
  the suite's worlds are of its split."""
  train, test = worlds.world_seeds("train", 1)[0], worlds.world_seeds("eval", 1)[0]
  if worlds.split_of(train) != "train" or worlds.split_of(test) != "eval":
    raise RuntimeError("world seeds: the train and eval ranges overlap")
  if suite is not None and suite.seeds and worlds.split_of(case_seed(suite, suite.seeds - 1)) != suite.split:
    raise RuntimeError(f"suite {suite.name}: its last world is not a {suite.split} world")


def case_seed(suite: Suite, index: int) -> int:
  """World seed of the suite's `index`-th world of any family (its split's range)."""
  return worlds.world_seeds(suite.split, index + 1)[index]


def check_request(
  method_names: Iterable[str] | None = None,
  scenarios: Iterable[str] | None = None,
  workers: int | None = None,
  seeds: int | None = None,
  time_limit_s: float | None = None,
  *,
  suite: str | None = None,
  split: str | None = None,
  checkpoint: str | None = None,
  sweep: bool = False,
) -> None:
  """Raises ValueError naming the flag of an unknown suite, method, scenario (or one the suite's worlds are too small
  for: `tiny`'s) or split, a scenario given twice, a missing agent, or an out-of-range number."""
  if suite is not None and suite not in SUITES:
    raise ValueError(f"--suite must be one of {', '.join(SUITES)}, got {suite!r}")
  scenarios = None if scenarios is None else list(scenarios)
  twice = sorted({name for name in scenarios or () if scenarios.count(name) > 1})
  if twice:  # each of its worlds would run again and count as another world (narrower intervals: an audit)
    raise ValueError(f"--scenarios: {', '.join(map(repr, twice))} given twice; name each family once")
  for flag, given, known in (("--methods", method_names, SUITE_METHODS), ("--scenarios", scenarios, SUITE_SCENARIOS)):
    unknown = [name for name in given or () if base_method(name) not in known]
    if unknown:
      raise ValueError(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
  held = SUITES[suite].scenarios if suite is not None else SUITE_SCENARIOS
  beyond = [name for name in scenarios or () if name not in held]
  if beyond:  # tiny's 3,000-row worlds: the other families' effects need more rows to be drawn
    raise ValueError(f"--scenarios: the {suite} suite's worlds hold only {', '.join(held)}, not {', '.join(beyond)}")
  if split is not None and split not in worlds.SPLITS:
    raise ValueError(f"--split must be one of {', '.join(worlds.SPLITS)}, got {split!r}")
  if sweep and split != "train":
    raise ValueError(SWEEP_ON_TRAIN)
  count = seeds if seeds is not None else SUITES[suite].seeds if suite is not None else 0
  if split == "train" and count > VALIDATION_WORLDS:
    raise ValueError(
      f"--seeds: training worlds from index {VALIDATION_WORLDS} on train the packaged ranker (and the agent); "
      f"a run on --split train validates on the first {VALIDATION_WORLDS} at most, got {count}"
    )
  if checkpoint is not None and not os.path.exists(checkpoint):
    raise ValueError(f"--checkpoint {checkpoint!r}: no such file or directory")
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
  split: str | None = None,
  sweep: bool = False,
  checkpoint: str | None = None,
) -> Suite:
  """`suite` with a subset of methods or families, `seeds` worlds per family, another split, the agent `checkpoint`
  muzero plays; `sweep` adds every variant of `SWEEP` (named `method@key=value,...`) beside the suite's methods
  (training worlds only)."""
  if checkpoint is not None:
    suite = dataclasses.replace(suite, checkpoint=checkpoint)
  if method_names:
    suite = dataclasses.replace(suite, methods=tuple(method_names))
  if scenarios:
    suite = dataclasses.replace(suite, scenarios=tuple(scenarios))
  if seeds is not None:
    suite = dataclasses.replace(suite, seeds=seeds)
  if split is not None:
    suite = dataclasses.replace(suite, split=split)
  if sweep:
    if suite.split != "train":
      raise ValueError(SWEEP_ON_TRAIN)
    variants = [variant_name(m, o) for m in suite.methods if m in SWEEP for o in SWEEP[m]]
    suite = dataclasses.replace(suite, methods=tuple(suite.methods) + tuple(variants), method_options=())
  return suite


def default_options(method: str) -> dict:
  """Keyword defaults of a registered method's signature (JSON scalars only; the search's own arguments left out)."""
  try:
    signature = inspect.signature(cube_env.get_method(method))
  except ValueError:  # not registered (a plug-in not imported): nothing to record
    return {}
  # The search's arguments, observers and code hooks, not settings (`frontier`'s `refiner`, None by default, came
  # after its rows were recorded: its runs without one are the same search).
  own = {"space", "budget", "seed", "progress", "watch", "refiner"}
  return {
    name: p.default
    for name, p in signature.parameters.items()
    if name not in own and p.default is not p.empty and isinstance(p.default, (bool, int, float, str, type(None)))
  }


def variant_name(method: str, options: Iterable[tuple[str, object]]) -> str:
  """`beam@width=16`: a method with settings, as the sweep names it."""
  return f"{method}@" + ",".join(f"{k}={v}" for k, v in options)


def base_method(name: str) -> str:
  """The registered method a name runs: `beam` for `beam@width=16` (and for `beam`)."""
  return name.partition("@")[0]


def parse_variant(name: str) -> tuple[str, dict]:
  """(method, options) of a name from `variant_name` (numbers parsed, anything else a string: `learned@weights=F`);
  a plain name has no options."""
  method, _, rest = name.partition("@")
  options: dict = {}
  for item in filter(None, rest.split(",")):
    key, _, value = item.partition("=")
    for kind in (int, float, str):
      try:
        options[key] = kind(value)
        break
      except ValueError:
        continue
  return method, options


@dataclasses.dataclass(frozen=True)
class Case:
  """One evaluation world and what the benchmark knows about it."""

  scenario: str  # the world family
  seed: int  # world seed (its split's range); also the row split's seed
  df: pd.DataFrame
  schema: cube_env.Schema
  truth: list
  adjust: tuple[str, ...]
  max_categories: int
  split: str = "eval"


def make_case(scenario: str, index: int, suite: Suite) -> Case:
  """World `index` of a family in the suite's split (`cube_env.worlds.make_world` at the suite's rows)."""
  seed = case_seed(suite, index)
  world = worlds.make_world(seed, scenario, rows=suite.n_rows)
  return Case(
    scenario=scenario,
    seed=seed,
    df=world.df,
    schema=world.schema,
    truth=list(world.truth),
    adjust=tuple(world.schema.adjusters),
    max_categories=worlds.MAX_CATEGORIES,
    split=world.split,
  )


def world_id(case: Case) -> str:
  """Content hash of a case's world (`worlds.content_id`): its table and its planted truth.

  Up to worlds version 2 two machines could draw different tables for one seed (benchmarks/README.md, *The same
  seed, another table*); run rows record this hash (`world_sha256`) so that such rows are told apart.
  """
  return worlds.content_id(case.df, case.truth)


def case_order(suite: Suite) -> list[tuple[str, int]]:
  """(family, world index) in run order: world by world across families, so a suite cut short by a time limit
  covers every family equally; within a world index the fixed-budget families first (the longest cases)."""
  cases = [(family, i) for i in range(suite.seeds) for family in suite.scenarios]
  return sorted(cases, key=lambda c: (c[1], c[0] not in FIXED_FAMILIES))
