"""One evaluation case of the quality benchmark: budgets, methods, search, confirmation and scoring.

Each case runs the discovery pipeline of `cube_env` (docs/design.md, Discovery and confirmation
report): `cube_env.prepare` once per case (split, adjustment, search space,
shared by the methods), `cube_env.search` under each budget (the ledger
refuses any query past it), `cube_env.confirm` (holdout re-test and the
discovery defaults' confirmation rules), then scores the confirmed
findings against the planted truth.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

import cube_env
from cube_env import worlds
from cube_env.discovery.methods import check_options
from cube_env.discovery.oracle import compile_enumeration
from cube_env.discovery.space import enumeration_rows, fitting_depth
from experiments import agent
from experiments.quality import pysubgroup_adapter  # noqa: F401 (registers the pysubgroup-* methods)
from experiments.quality.suite import (
  BUDGET_DEPENDENT,
  FIXED_FAMILIES,
  FULL_BUDGET,
  SUITE_SCENARIOS,
  Case,
  Suite,
  base_method,
  make_case,
  parse_variant,
  world_id,
)


@dataclasses.dataclass(frozen=True)
class PreparedCase:
  """`cube_env.prepare`'s output for a case, with the size of its search space."""

  prepared: cube_env.Prepared
  exhaustive_queries: int  # visitable cohorts to max_depth
  exhaustive_rows: int  # rows enumeration scans (one pass per column subset)


@dataclasses.dataclass(frozen=True)
class SuiteMethod:
  """A registered discovery method as the benchmark runs it."""

  search: Callable[..., cube_env.SearchResult]  # `cube_env` method signature, options bound
  agent: agent.PackagedAgent | None = None  # muzero: the agent it plays (its grid decides which cubes fit)


def prepare_case(case: Case, *, max_depth: int) -> PreparedCase:
  """`cube_env.prepare` with the discovery defaults and the case's adjusters, searched to `max_depth`."""
  config = cube_env.DiscoveryConfig(
    method="exhaustive", max_depth=max_depth, seed=case.seed, adjust=case.adjust, max_categories=case.max_categories
  )
  prepared = cube_env.prepare(case.df, case.schema, config)
  space = prepared.space
  return PreparedCase(prepared, int(sum(cube_env.count_cohorts(space))), enumeration_rows(space))


def build_methods(names: Iterable[str], checkpoint: str | None, options: Iterable = ()) -> dict[str, SuiteMethod]:
  """The registered methods by name (a sweep variant `beam@width=16` binds its options); `muzero` plays the agent in
  `checkpoint` (default the packaged one)."""
  out = {}
  for name in names:
    base, bound = parse_variant(name)
    bound = bound or dict(dict(options).get(name, ()))  # a plain name takes the suite's tuned settings
    if base == "muzero":
      bound = dict(bound)
      # once per name: every search of the suite plays it (a variant's own `muzero@checkpoint=F` first; None: the
      # packaged one; a path with ',' or '=' cannot be named so, as `parse_variant` splits on them)
      loaded = agent.load_agent(bound.pop("checkpoint", checkpoint))
      out[name] = SuiteMethod(functools.partial(cube_env.get_method(base), checkpoint=loaded, **bound), loaded)
    elif bound:
      out[name] = SuiteMethod(functools.partial(cube_env.get_method(base), **bound))
    else:
      out[name] = SuiteMethod(cube_env.get_method(name))
  return out


PROBE_ROWS = 3000  # rows of the world the settings a method is named with are tried on (the tiny suite's)


def check_methods(suite: Suite) -> dict[str, SuiteMethod]:
  """The suite's methods built (`build_methods`), or a ValueError naming `--methods` for a setting a method does not
  take or a value it refuses, or `--checkpoint` for an agent that does not load: before any world of the suite is
  drawn (each was a traceback from inside a case, after other rows had been written: an audit).

  A setting's name is checked against the method's signature (`cube_env`'s `check_options`), but only a search
  checks its value (`beam@width=0`): so each method named with settings searches one query of a small world of
  the suite's split, at the suite's depth. The agent of `--checkpoint` is loaded even where no method plays it.
  """
  for name in suite.methods:
    base = base_method(name)
    try:
      check_options(base, cube_env.get_method(base), suite.options(name))
    except ValueError as err:
      raise ValueError(f"--methods {name!r}: {str(err).removeprefix('method_options: ')}") from None
  methods = build_methods(suite.methods, suite.checkpoint, suite.method_options)  # loads the agents muzero plays
  if suite.checkpoint is not None and not any(m.agent for m in methods.values()):
    agent.load_agent(suite.checkpoint)
  named = [name for name in suite.methods if parse_variant(name)[1]]
  if named:
    case = make_case(SUITE_SCENARIOS[0], 0, dataclasses.replace(suite, n_rows=min(suite.n_rows, PROBE_ROWS)))
    space = prepare_case(case, max_depth=suite.max_depth).prepared.space
    for name in named:
      if not_applicable(name, methods[name], space) is None:  # an agent for other grids: its settings go untried
        try:
          methods[name].search(space, budget=1, seed=case.seed)
        except ValueError as err:
          raise ValueError(f"--methods {name!r}: {err}") from None
  return methods


def nominal_budgets(
  case: Case, prep: PreparedCase, suite: Suite, method: str = "exhaustive"
) -> dict[int, float | None]:
  """`{budget: the suite fraction it stands for}` (None on `large`, whose budgets are fixed query counts).

  Summaries group runs by this nominal fraction, not by budget / exhaustive
  count, which differs a little from seed to seed.
  """
  if case.scenario in FIXED_FAMILIES:
    return {b: None for b in suite.fixed_budgets if b <= prep.exhaustive_queries}
  out: dict[int, float | None] = {}
  for f in suite.fractions_for(method):
    out.setdefault(max(1, int(round(f * prep.exhaustive_queries))), f)
  return out


def budgets_for(case: Case, prep: PreparedCase, suite: Suite, method: str = "exhaustive") -> list[int]:
  """Query budgets of `method` on a case (fractions of its exhaustive count; fixed counts on `large`)."""
  return sorted(nominal_budgets(case, prep, suite, method))


def not_applicable(name: str, method: SuiteMethod, space: cube_env.Space) -> str | None:
  """Why a method cannot search this space (None when it can)."""
  if method.agent is None:
    return None
  try:
    agent.padded_env(method.agent, space)
  except ValueError as err:
    return f"{name}: {err}"
  return None


# The `score_findings` rule of the run rows (`scoring`): "other_side" from 2026-12-04, "other_side_share" from
# 2026-12-07 (rows without the field were scored before either; benchmarks/README.md, *The other side of a
# near-binary column*; `benchmarks/rescore.py`).
SCORING = cube_env.discovery.scoring.RULE

# The test of a confirmed finding, as a run row keeps it (beside the cohort's filters).
FINDING_FIELDS = ("protected", "group", "reference", "measure", "z", "new")


def finding_records(confirmed: pd.DataFrame) -> list[dict]:
  """The confirmed findings as a run row keeps them (`confirmed_findings`): the cohort's filters (labels) and the
  test, enough for `cube_env.score_findings` to score the run again under another rule without re-running its
  search (with the world's exploration half, drawn again from its seed: the other-side rule and false findings
  read its rows; `benchmarks/rescore.py`)."""
  out = []
  for r in confirmed.to_dict("records"):
    record = {"filters": {str(k): str(v) for k, v in dict(r["filters"]).items()}}
    for name in FINDING_FIELDS:
      if name in r:
        value = r[name]
        record[name] = bool(value) if name == "new" else float(value) if name == "z" else str(value)
    out.append(record)
  return out


def score(findings: pd.DataFrame, truth: list, cube, *, rule: str | None = SCORING) -> dict:
  """Recall, precision, counts and the indices of the planted effects recalled by `findings` under the scoring
  `rule` (a name of `scoring.RULES`, as run rows record it; None: the rule before any was recorded)."""
  options = {"other_side": False} if rule is None else cube_env.discovery.scoring.RULES[rule]
  s = cube_env.score_findings(findings, truth, cube=cube, **options)
  out = {k: s[k] for k in ("recall", "precision", "n_reported", "n_false")}
  out["recalled"] = [int(i) for i in np.nonzero(s["matched"]["recalled"].to_numpy(bool))[0]]
  return out


def each_search(suite: Suite, families: list[str], first: int, stop: int, methods: list[str]) -> Iterator[tuple]:
  """(family, world index, case, prepared, method name, budget, nominal budget, result) of every search a suite runs
  on worlds `first`..`stop`-1 of `families`, world by world (each method's budgets as `_results` runs them): for
  diagnoses that look at each run's candidates beside the benchmark (benchmarks/confirm_*.py)."""
  fns = build_methods(methods, None, suite.method_options)
  for index in range(first, stop):
    for family in families:
      case = make_case(family, index, suite)
      prep = prepare_case(case, max_depth=suite.depth(family))
      for name, fn in fns.items():
        nominal = nominal_budgets(case, prep, suite, name)
        for budget, result, _ in _results(name, fn, prep.prepared, sorted(nominal)):
          yield family, index, case, prep.prepared, name, budget, nominal[budget], result


def confirmation_checks(table: pd.DataFrame, config: cube_env.DiscoveryConfig) -> dict[str, np.ndarray]:
  """`[k]` bool per rule other than the multiple-testing step, read back from a `cube_env.confirm` table: `tested`
  (both sides large enough on the confirmation half), `same` (the exploration effect's sign), `big` (the relative
  difference), `new` (newness on the confirmation half) and `nomirror` (no other group's opposite gap explains it).
  A candidate is confirmed where all of them hold and the multiple-testing step rejects: what the diagnoses replay
  under other weights (benchmarks/confirm_*.py)."""
  return {
    "tested": ~table["reason"].str.startswith("not testable").to_numpy(bool),
    "same": np.sign(table["z"].fillna(0).to_numpy(float)) == np.sign(table["explore_z"].to_numpy(float)),
    "big": np.abs(np.nan_to_num(table["relative_diff"].to_numpy(float))) >= config.min_relative_diff,
    "new": table["confirm_new"].to_numpy(bool),
    "nomirror": table["mirror_of"].isna().to_numpy(bool),
  }


def _results(name: str, method: SuiteMethod, prepared: cube_env.Prepared, budgets: list[int]) -> Iterator[tuple]:
  """(budget, result, read off) per budget, each as soon as it is known."""
  if base_method(name) in BUDGET_DEPENDENT:  # their search depends on the budget: one run per budget
    for b in budgets:
      yield b, cube_env.search(prepared, method.search, budget=b), False
    return
  # walkers consult the budget only to stop: one run at the largest, read off at the others
  anytime = cube_env.Anytime(budgets)
  final = cube_env.search(prepared, method.search, budget=max(budgets), progress=anytime)
  for b, result in anytime.results(final).items():
    yield b, result, True


def warm_up(
  prepared: cube_env.Prepared, program: str, method: SuiteMethod, *, first: bool, max_budget: int = 0
) -> None:
  """Compiles, outside the timing, what a method's first timed run would: the env step (per cube shape; the agent's
  own grid for muzero), or enumeration's programs (per depth, for the depths `max_budget` queries reach, as
  `exhaustive` counts them), and on the `first` call the cohort tests of confirmation and of a search's finish."""
  space = prepared.space
  if first:
    for cube in (prepared.halves.explore, prepared.halves.confirm):
      root = np.full((1, len(cube.meta.filter_names)), -1, np.int32)
      cube_env.cohort_table(cube, root, **space.thresholds)
  if program == "enumeration":
    compile_enumeration(
      space.cube,
      max_depth=fitting_depth(space, max_budget)[0],
      min_group=space.min_group,
      min_cohort=float(space.params.min_cohort),
      z_screen=space.z_screen,
      new_z=space.new_z,
    )
  else:
    search = method.search if program == "agent" else cube_env.get_method("random")
    cube_env.search(prepared, search, budget=2)


def run_case(
  case: Case,
  suite: Suite,
  methods: dict[str, SuiteMethod],
  *,
  log: Callable[[str], None] = print,
  skip: frozenset | set = frozenset(),
) -> Iterator[dict]:
  """One `run` row per (method, budget) on one case; `skip` holds (scenario, seed, method, budget) already run."""
  t0 = time.perf_counter()
  depth = suite.depth(case.scenario)
  prep = prepare_case(case, max_depth=depth)
  prepared = prep.prepared
  base = dict(
    kind="run",
    suite=suite.name,
    scenario=case.scenario,
    family=case.scenario,
    split=case.split,
    seed=case.seed,
    max_depth=depth,
    budget_kind="fixed" if case.scenario in FIXED_FAMILIES else "fraction",
    exhaustive_rows=prep.exhaustive_rows,
    n_rows=len(case.df),
    explore_rows=prepared.halves.explore_rows,
    cells=prepared.halves.explore.num_cells,
    filter_columns=len(prepared.halves.explore.meta.filter_names),
    z_screen=prepared.space.z_screen,
    exhaustive_queries=prep.exhaustive_queries,
    n_truth=len(case.truth),
    adjusted=bool(case.adjust),
    worlds_version=worlds.VERSION,
    world_sha256=world_id(case),
  )  # each run row adds the method's settings (`options`), so a resumed file never mixes two settings of a method
  log(
    f"{case.scenario} seed {case.seed}: {base['cells']} cells, {prep.exhaustive_queries} cohorts to depth "
    f"{depth}, prepared in {time.perf_counter() - t0:.1f} s"
  )
  warm = set()
  for name, method in methods.items():
    nominal = nominal_budgets(case, prep, suite, name)
    budgets = [b for b in sorted(nominal) if (case.scenario, case.seed, name, b) not in skip]
    why = not_applicable(name, method, prepared.space)
    base_name = base_method(name)
    if base_name in ("exhaustive", "auto"):  # auto enumerates, or falls back to a walker
      programs = ["enumeration", "env"] if base_name == "auto" else ["enumeration"]
    else:
      programs = [] if base_name in FULL_BUDGET else ["agent" if method.agent is not None else "env"]
    if budgets and why is None:
      for program in programs:
        if program not in warm:
          warm_up(prepared, program, method, first=not warm, max_budget=max(budgets))
          warm.add(program)
    if not budgets:
      continue
    if why is not None:
      for budget in budgets:
        yield dict(
          base,
          method=name,
          budget=budget,
          budget_fraction=budget / prep.exhaustive_queries,
          nominal_fraction=nominal[budget],
          options=suite.options_row(name),
          applicable=False,
          note=why,
        )
      continue
    for budget, result, read_off in _results(name, method, prepared, budgets):
      t1 = time.perf_counter()
      findings = cube_env.confirm(result, prepared)
      seconds = result.seconds + time.perf_counter() - t1
      confirmed = findings[findings["confirmed"].astype(bool)]
      cand = score(result.candidates, case.truth, prepared.halves.explore)
      conf = score(confirmed, case.truth, prepared.halves.explore)
      out = dict(
        base,
        method=name,
        budget=budget,
        budget_fraction=budget / prep.exhaustive_queries,
        nominal_fraction=nominal[budget],
        options=suite.options_row(name),
        applicable=True,
        queries=int(result.queries),
        rows_scanned=int(result.rows_scanned),
        search_seconds=float(result.seconds),
        seconds=seconds,
        read_off=read_off,
        candidates=len(result.candidates),
        candidate_recall=cand["recall"],
        recall=conf["recall"],
        recalled=conf["recalled"],
        precision=conf["precision"],
        confirmed=len(confirmed),
        false_confirmed=conf["n_false"],
        confirmed_findings=finding_records(confirmed),
        scoring=SCORING,
        family_wise_error=bool(conf["n_false"] > 0),
        note=result.note,
      )
      log(
        f"  {case.scenario}/{case.seed} {name:16s} budget {budget:6d}: {out['queries']:6d} queries, "
        f"recall {out['recall']:.2f}, {out['confirmed']} confirmed ({out['false_confirmed']} false), "
        f"{seconds:.1f} s"
      )
      yield out
