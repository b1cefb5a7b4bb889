"""Discovery quality per query: every method at budgets from 1% to 100% of the exhaustive count.

`python -m experiments.benchmark quality --suite quick|full` runs, for each
evaluation cube (generator seeds `cube_task.EVAL_SEED_BASE + i`, never used in
training: `check_seed_split`), each method of `methods()` and each budget:

1. the split, search space and thresholds of `cube_env.run_discovery` (built
   once per cube and shared by the methods: `prepare`),
2. the method's search of the exploration half under the budget (the ledger
   refuses any query past it),
3. the same confirmation (`confirm`: holdout re-test, Benjamini-Hochberg, the
   relative-difference rule; case-mix adjustment on `confounded`),
4. scoring of the confirmed findings against the planted truth.

Budgets are fractions of the exhaustive query count (every visitable cohort
to depth 3) of that cube; on the `large` space, where enumeration costs far
more than any budget, they are fixed counts. The JSON lines hold one `run` row
per (scenario, seed, method, budget) and one `summary` row per (scenario,
method, budget) with the mean and standard deviation over seeds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

import cube_env
from cube_env import confirm as cf
from cube_env import holdout, synthetic
from cube_env.discovery import DiscoveryConfig, resolve_method
from cube_env.search import Anytime, count_cohorts, make_space
from experiments import cube_task

SCENARIOS = ("marginal", "interactions", "masked", "mixed", "null", "confounded", "large")
TRUTHLESS = ("null", "confounded")  # every confirmed finding is false: family-wise error
METHODS = ("exhaustive", "random", "greedy", "beam", "uct", "muzero", "pysubgroup-beam", "pysubgroup-dfs")
RECALL_TARGET = 0.9
FULL_BUDGET = ("exhaustive", "pysubgroup-beam", "pysubgroup-dfs")  # cheap per query: every budget in every suite


@dataclasses.dataclass(frozen=True, kw_only=True)
class Suite:
  """Sizes of one benchmark suite."""

  name: str
  scenarios: tuple[str, ...] = SCENARIOS
  seeds: int = 1  # evaluation cubes per scenario
  n_rows: int = 8000  # rows per table (the search sees half): reduced schema `cube_task.TASK_SCHEMA`
  fractions: tuple[float, ...] = (0.01, 0.05, 0.2, 1.0)  # budgets, as fractions of the exhaustive count
  large_rows: int = 10000  # `large`: the full synthetic schema (15 filter columns, 9 measures)
  large_max_categories: int = 16  # ... with more categories kept (surgeon has about 75)
  large_budgets: tuple[int, ...] = (30, 100, 300)  # fixed query counts on `large`
  large_seeds: int | None = None  # cubes of `large` (default: `seeds`)
  methods: tuple[str, ...] = METHODS
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
  from experiments.train import PRESETS  # noqa: PLC0415 (imports the agent library)

  most = max(p["task"]["num_train_cubes"] for p in PRESETS.values())
  if cube_task.TRAIN_SEED_BASE + most > cube_task.EVAL_SEED_BASE:
    raise RuntimeError(
      f"training seeds {cube_task.TRAIN_SEED_BASE}..{cube_task.TRAIN_SEED_BASE + most - 1} "
      f"reach the evaluation seeds from {cube_task.EVAL_SEED_BASE}"
    )


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
  seed = cube_task.EVAL_SEED_BASE + index
  large = scenario == "large"
  n_rows = suite.large_rows if large else suite.n_rows
  scale = max(1.0, (20000 / (n_rows / 2)) ** 0.5)
  df, full_schema, truth = synthetic.make_cases("mixed" if large else scenario, seed, n_rows=n_rows, effect_scale=scale)
  return Case(
    scenario=scenario,
    seed=seed,
    df=df,
    schema=full_schema if large else cube_task.TASK_SCHEMA,
    truth=list(truth),
    adjust=synthetic.ADJUSTERS if scenario == "confounded" else (),
    max_categories=suite.large_max_categories if large else 12,
  )


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What `run_discovery` builds before searching, built once per case."""

  config: DiscoveryConfig
  halves: holdout.Halves
  space: cube_env.Space
  exhaustive_queries: int  # visitable cohorts to max_depth


def prepare(case: Case, *, max_depth: int) -> Prepared:
  config = DiscoveryConfig(
    method="exhaustive", max_depth=max_depth, seed=case.seed, adjust=case.adjust, max_categories=case.max_categories
  )
  halves = holdout.split_cubes(
    case.df,
    case.schema,
    seed=config.seed,
    fraction=config.explore_fraction,
    adjusters=config.adjust,
    max_categories=config.max_categories,
  )
  space = make_space(halves.explore, max_depth=config.max_depth, min_group=config.min_group, z_screen=config.z_screen)
  return Prepared(config, halves, space, int(sum(count_cohorts(space))))


def confirm(result: cube_env.SearchResult, prep: Prepared) -> pd.DataFrame:
  """The confirmation step of `run_discovery`, with its arguments."""
  c = prep.config
  return cf.confirm_candidates(
    result.candidates,
    prep.halves.confirm,
    q=c.q,
    min_relative_diff=c.min_relative_diff,
    min_group=c.min_group,
    z_screen=prep.space.z_screen,
    max_depth=c.max_depth,
    raw_cube=prep.halves.confirm_raw if c.adjust else None,
    favorable=c.favorable,
  )


def budgets_for(case: Case, prep: Prepared, suite: Suite, method: str = "exhaustive") -> list[int]:
  """Query budgets of `method` on a case (fractions of its exhaustive count; fixed counts on `large`)."""
  return sorted(nominal_budgets(case, prep, suite, method))


def nominal_budgets(case: Case, prep: Prepared, suite: Suite, method: str = "exhaustive") -> dict[int, float | None]:
  """`{budget: the suite fraction it stands for}` (None on `large`, whose budgets are fixed query counts).

  Summaries group runs by this nominal fraction, not by budget / exhaustive
  count, which differs a little from seed to seed.
  """
  if case.scenario == "large":
    return {b: None for b in suite.large_budgets if b <= prep.exhaustive_queries}
  top = 1.0 if method in FULL_BUDGET else suite.walker_max_fraction
  out: dict[int, float | None] = {}
  for f in sorted(suite.fractions):
    if f <= top + 1e-9:
      out.setdefault(max(1, int(round(f * prep.exhaustive_queries))), f)
  return out


def methods(names: Iterable[str], checkpoint: str | None) -> dict[str, Callable]:
  """Method functions by name; `muzero` plays the agent in `checkpoint`."""
  out = {}
  for name in names:
    if name == "muzero":
      if checkpoint is None:
        raise ValueError("the muzero method needs --checkpoint (or let the benchmark train one)")
      from experiments import agent_search  # noqa: PLC0415

      out[name] = agent_search.muzero_method(checkpoint)
      out[name].agent = agent_search.load_agent(checkpoint)
    elif name.startswith("pysubgroup-"):
      from experiments import bench_pysubgroup  # noqa: PLC0415

      out[name] = bench_pysubgroup.pysubgroup_method(name.split("-", 1)[1])
    else:
      out[name] = resolve_method(name)[1]
  return out


def not_applicable(name: str, fn: Callable, space: cube_env.Space) -> str | None:
  """Why a method cannot search this space (None when it can)."""
  agent = getattr(fn, "agent", None)
  if agent is None:
    return None
  from experiments import agent_search  # noqa: PLC0415

  try:
    agent_search.agent_space(agent, space)
  except ValueError as err:
    return f"{name}: {err}"
  return None


def _score(findings: pd.DataFrame, truth: list, cube) -> dict:
  if len(findings) == 0:
    return {"recall": 0.0 if truth else math.nan, "precision": math.nan, "n_reported": 0, "n_false": 0, "recalled": []}
  s = cube_env.score_findings(findings, truth, cube=cube)
  out = {k: s[k] for k in ("recall", "precision", "n_reported", "n_false")}
  out["recalled"] = [int(i) for i in np.nonzero(s["matched"]["recalled"].to_numpy(bool))[0]]
  return out


def run_case(
  case: Case,
  suite: Suite,
  fns: dict[str, Callable],
  *,
  log: Callable[[str], None] = print,
  skip: frozenset | set = frozenset(),
) -> Iterator[dict]:
  """One `run` row per (method, budget) on one case."""
  t0 = time.perf_counter()
  prep = prepare(case, max_depth=suite.max_depth)
  base = dict(
    kind="run",
    suite=suite.name,
    scenario=case.scenario,
    seed=case.seed,
    n_rows=len(case.df),
    explore_rows=prep.halves.explore_rows,
    cells=prep.halves.explore.num_cells,
    filter_columns=len(prep.halves.explore.meta.filter_names),
    z_screen=prep.space.z_screen,
    exhaustive_queries=prep.exhaustive_queries,
    n_truth=len(case.truth),
    adjusted=bool(case.adjust),
  )
  log(
    f"{case.scenario} seed {case.seed}: {base['cells']} cells, {prep.exhaustive_queries} cohorts to depth "
    f"{suite.max_depth}, prepared in {time.perf_counter() - t0:.1f} s"
  )
  warm = set()
  for name, fn in fns.items():
    nominal = nominal_budgets(case, prep, suite, name)
    budgets = [b for b in sorted(nominal) if (case.scenario, case.seed, name, b) not in skip]
    why = not_applicable(name, fn, prep.space)
    program = "agent" if getattr(fn, "agent", None) is not None else "env" if name not in FULL_BUDGET else None
    if budgets and why is None and program and program not in warm:
      # compiles the env step (per cube shape; the agent's own grid for muzero) outside the timing
      (fn if program == "agent" else cube_env.METHODS["random"])(prep.space, budget=2, seed=case.seed)
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
          applicable=False,
          note=why,
        )
      continue
    if name in FULL_BUDGET:  # their search depends on the budget: one run per budget
      results = ((b, fn(prep.space, budget=b, seed=case.seed), False) for b in budgets)
    else:  # walkers consult the budget only to stop: one run at the largest, read off at the others
      anytime = Anytime(budgets)
      final = fn(prep.space, budget=max(budgets), seed=case.seed, progress=anytime)
      results = ((b, r, True) for b, r in anytime.results(final).items())
    for budget, result, read_off in results:
      if result.queries > budget:
        raise RuntimeError(f"{name} spent {result.queries} queries, over its budget {budget}")
      t1 = time.perf_counter()
      findings = confirm(result, prep)
      seconds = result.seconds + time.perf_counter() - t1
      confirmed = findings[findings["confirmed"].astype(bool)]
      cand = _score(result.candidates, case.truth, prep.halves.explore)
      conf = _score(confirmed, case.truth, prep.halves.explore)
      out = dict(
        base,
        method=name,
        budget=budget,
        budget_fraction=budget / prep.exhaustive_queries,
        nominal_fraction=nominal[budget],
        applicable=True,
        queries=int(result.queries),
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
        family_wise_error=bool(conf["n_false"] > 0),
        note=result.note,
      )
      log(
        f"  {case.scenario}/{case.seed} {name:16s} budget {budget:6d}: {out['queries']:6d} queries, "
        f"recall {out['recall']:.2f}, {out['confirmed']} confirmed ({out['false_confirmed']} false), "
        f"{seconds:.1f} s"
      )
      yield out


_WORKER_FNS: dict = {}


def _one_xla_thread() -> None:
  """Worker initializer (before JAX starts its backend): XLA's multi-threaded Eigen CPU kernels off, so the
  workers share the cores, and no preallocation of accelerator memory, so they share one GPU."""
  import os  # noqa: PLC0415

  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
  os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"


def _case_rows(
  scenario: str,
  index: int,
  suite: Suite,
  checkpoint: str | None,
  skip: frozenset,
  deadline: float | None = None,
  spill: str | None = None,
) -> list[dict]:
  """(started, rows) of `run_case` in a worker process (its methods are built once per process); (False, [])
  once `deadline` has passed.

  Each row is also appended to `spill` as it is made, so rows of a case cut
  short by a killed run are not lost (`run` merges them on its next call).
  """
  import json  # noqa: PLC0415
  import sys  # noqa: PLC0415

  if deadline is not None and time.time() >= deadline:
    return False, []
  key = (suite.methods, checkpoint)
  if key not in _WORKER_FNS:
    _WORKER_FNS[key] = methods(suite.methods, checkpoint)
  log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
  rows = []
  for row in run_case(make_case(scenario, index, suite), suite, _WORKER_FNS[key], log=log, skip=skip):
    rows.append(row)
    if spill:
      with open(spill, "a") as handle:  # one short append per row: whole lines from concurrent workers
        handle.write(json.dumps(row, sort_keys=True) + "\n")
  return True, rows


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


def run_suite(
  suite: Suite,
  fns: dict[str, Callable] | None,
  *,
  log: Callable[[str], None] = print,
  skip: frozenset | set = frozenset(),
  workers: int = 1,
  checkpoint: str | None = None,
  deadline: float | None = None,
  spill: str | None = None,
) -> Iterator[dict]:
  """`run_case` over the suite's scenarios and seeds; `skip` holds (scenario, seed, method, budget) already run.

  With `workers` > 1 the cases run in that many spawned processes (each
  builds its own methods from `suite.methods` and `checkpoint`; `fns` is then
  unused), and rows arrive case by case as they finish. Every query is still
  one sequential environment step inside its case; only whole cases overlap.
  `deadline` (a `time.time()`): no case starts after it; a started case runs
  to its end. `spill`: file the workers append each row to as they make it.
  """
  check_seed_split()
  cases = case_order(suite)
  if workers <= 1:
    for scenario, i in cases:
      if deadline is not None and time.time() >= deadline:
        log(f"time limit reached: {scenario} seed index {i} and the cases after it not run")
        return
      yield from run_case(make_case(scenario, i, suite), suite, fns, log=log, skip=skip)
    return
  import concurrent.futures as cf_  # noqa: PLC0415
  import multiprocessing  # noqa: PLC0415

  pool = cf_.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_xla_thread)
  not_started = 0
  try:
    futures = [
      pool.submit(_case_rows, scenario, i, suite, checkpoint, frozenset(skip), deadline, spill) for scenario, i in cases
    ]
    for future in cf_.as_completed(futures):
      started, rows = future.result()
      not_started += not started
      yield from rows
  finally:  # an error (or a closed generator) must not wait for every queued case
    pool.shutdown(wait=False, cancel_futures=True)
  if not_started:
    log(f"time limit reached: {not_started} of {len(cases)} cases not started")


def summarize(rows: list[dict]) -> list[dict]:
  """Mean and sample standard deviation (None for one seed) over seeds per (scenario, method, budget).

  A budget is the suite's nominal fraction of the exhaustive count (`large`:
  the fixed query count); `budget_fraction` is the seeds' mean actual one.
  """
  runs = pd.DataFrame([r for r in rows if r.get("kind") == "run"])
  if runs.empty:
    return []
  nominal = runs["nominal_fraction"] if "nominal_fraction" in runs else pd.Series(np.nan, index=runs.index)
  runs["nominal"] = nominal
  runs["budget_key"] = [
    f"f{f:g}" if pd.notna(f) else f"q{b}" if s == "large" else f"r{x:.2f}"  # older: no nominal
    for f, b, s, x in zip(nominal, runs["budget"], runs["scenario"], runs["budget_fraction"])
  ]
  if "recall" not in runs.columns:  # only not-applicable rows
    runs["recall"] = np.nan
  runs["recall_of_oracle"] = _recall_of_oracle(runs)
  out = []
  for (scenario, method, key), g in runs.groupby(["scenario", "method", "budget_key"], sort=False):
    ok = g[g["applicable"].astype(bool)]
    row = dict(
      kind="summary",
      suite=g["suite"].iloc[0],
      scenario=scenario,
      method=method,
      budget_key=key,
      budget_fraction=round(float(g["budget_fraction"].mean()), 4),
      budget=float(g["budget"].mean()),
      nominal_fraction=None if pd.isna(g["nominal"].iloc[0]) else float(g["nominal"].iloc[0]),
      seeds=int(len(g)),
      applicable=bool(len(ok)),
    )
    if len(ok):
      for col in (
        "recall",
        "recall_of_oracle",
        "precision",
        "confirmed",
        "false_confirmed",
        "queries",
        "seconds",
        "candidate_recall",
      ):
        v = pd.to_numeric(ok[col], errors="coerce").to_numpy(float)
        row[f"{col}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else None
        row[f"{col}_std"] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else None
      row["family_wise_error_rate"] = float(ok["family_wise_error"].astype(bool).mean())
    else:
      row["note"] = str(g["note"].iloc[0])
    out.append(row)
  return out


def _recall_of_oracle(runs: pd.DataFrame) -> np.ndarray:
  """Share of the planted effects that exhaustive search with the whole budget confirmed (same cube) that a run
  confirmed too; NaN where there is no such effect or no such exhaustive run."""
  if "recalled" not in runs.columns:
    return np.full(len(runs), np.nan)
  full = runs[(runs["method"] == "exhaustive") & (runs["budget_fraction"] >= 1.0) & runs["applicable"].astype(bool)]
  oracle = {(r.scenario, r.seed): set(r.recalled) for r in full.itertuples() if isinstance(r.recalled, list)}
  out = []
  for r in runs.itertuples():
    want = oracle.get((r.scenario, r.seed))
    got = r.recalled if isinstance(r.recalled, list) else None
    out.append(len(want & set(got)) / len(want) if want and got is not None else np.nan)
  return np.asarray(out, float)


def headline(summary: list[dict], *, metric: str = "recall_mean") -> pd.DataFrame:
  """Per scenario and method: the smallest measured budget fraction whose mean `metric` >= 0.9.

  `metric` is recall of the planted effects (`recall_mean`) or of those the
  exhaustive search confirms with the whole budget (`recall_of_oracle_mean`).

  Truthless scenarios (null, confounded) give instead the family-wise error
  rate over all their runs (share of runs with any confirmed finding).
  """
  table = pd.DataFrame(summary)
  if table.empty:
    return pd.DataFrame()
  cells: dict = {}
  for (scenario, method), g in table.groupby(["scenario", "method"], sort=False):
    g = g.sort_values("budget_fraction")
    if not g["applicable"].any():
      cells[(method, scenario)] = "n/a"
    elif scenario in TRUTHLESS:
      ok = g[g["applicable"]]
      fwer = float(np.average(ok["family_wise_error_rate"], weights=ok["seeds"]))
      cells[(method, scenario)] = f"FWER {fwer:.2f}"
    else:
      values = g[metric] if metric in g else pd.Series(np.nan, index=g.index)
      hit = g[g["applicable"] & (values.fillna(0) >= RECALL_TARGET)]
      best = float(values.max())
      cells[(method, scenario)] = (
        f"{hit['budget_fraction'].iloc[0]:.3g}" if len(hit) else f"> {g['budget_fraction'].max():.3g} (best {best:.2f})"
      )
  scenarios = _in_order(table["scenario"], SCENARIOS)
  rows = _in_order(table["method"], METHODS)
  return pd.DataFrame(
    [[cells.get((m, s), "") for s in scenarios] for m in rows], columns=scenarios, index=pd.Index(rows, name="method")
  )


def at_equal_budget(
  summary: list[dict], methods: Iterable[str] = ("muzero", "beam", "pysubgroup-beam", "pysubgroup-dfs")
) -> pd.DataFrame:
  """Mean recall (null/confounded: mean confirmed false findings) per scenario and budget, one column per method.

  "n/a": the method cannot search this cube; "-": not run at this budget (or nothing to score).
  """
  table = pd.DataFrame(summary)
  if table.empty:
    return pd.DataFrame()
  methods = [m for m in methods if m in set(table["method"])]
  out = []
  order = []
  for (scenario, _), g in table.groupby(["scenario", "budget_key"], sort=False):
    y = "false_confirmed" if scenario in TRUTHLESS else "recall"
    row = {"scenario": scenario, "budget": f"{g['budget_fraction'].mean():.3g} ({g['budget'].mean():.0f} q)"}
    for m in methods:
      h = g[g["method"] == m]
      if len(h) == 0:
        row[m] = "-"
      elif not bool(h["applicable"].iloc[0]):
        row[m] = "n/a"
      elif f"{y}_mean" not in h or pd.isna(h[f"{y}_mean"].iloc[0]):
        row[m] = "-"
      else:
        mean, std = h[f"{y}_mean"].iloc[0], h[f"{y}_std"].iloc[0]
        row[m] = f"{mean:.2f}" + (f" ± {std:.2f}" if int(h["seeds"].iloc[0]) > 1 and pd.notna(std) else "")
    out.append(row)
    order.append((SCENARIOS.index(scenario) if scenario in SCENARIOS else len(SCENARIOS), g["budget"].mean()))
  return pd.DataFrame([out[i] for i in sorted(range(len(out)), key=order.__getitem__)])


def _in_order(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
  """Distinct names, those in `order` first in its order, then the others as they come."""
  names = list(dict.fromkeys(names))
  return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), names.index(n)))


def markdown(table: pd.DataFrame, *, index: bool = False) -> str:
  """A pipe table (no tabulate dependency)."""
  frame = table.reset_index() if index else table
  cols = [str(c) for c in frame.columns]
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
  return "\n".join(lines)


def plot(summary: list[dict], path: str, *, title: str = "") -> None:
  """recall vs budget (one panel per scenario; null/confounded: confirmed false findings), a line per method."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  table = pd.DataFrame([r for r in summary if r["applicable"]])
  if table.empty:
    raise ValueError("nothing to plot: no applicable run")
  scenarios = _in_order(table["scenario"], SCENARIOS)
  cols = min(4, len(scenarios))
  rows = math.ceil(len(scenarios) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
  for ax, scenario in zip(axes.flat, scenarios):
    g = table[table["scenario"] == scenario]
    y = "false_confirmed_mean" if scenario in TRUTHLESS else "recall_mean"
    for method, h in g.groupby("method", sort=False):
      h = h.sort_values("budget_fraction")
      color = f"C{METHODS.index(method) % 10}" if method in METHODS else None  # one colour per method in every panel
      ax.plot(h["budget_fraction"], h[y], marker="o", label=method, color=color)
    ax.set_xscale("log")
    ax.set_title(scenario)
    ax.set_xlabel("budget / exhaustive queries")
    ax.set_ylabel("confirmed false findings" if scenario in TRUTHLESS else "recall (confirmed)")
    if scenario not in TRUTHLESS:
      ax.set_ylim(-0.03, 1.03)
      ax.axhline(RECALL_TARGET, color="grey", lw=0.5, ls="--")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(scenarios) :]:
    ax.axis("off")
  handles, labels = max((ax.get_legend_handles_labels() for ax in axes.flat), key=lambda hl: len(hl[1]))
  fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout(rect=(0, 0.06, 1, 0.96 if title else 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def ensure_checkpoint(
  checkpoint: str | None,
  *,
  directory: str = "checkpoints/bench-cpu",
  preset: str = "cpu",
  log: Callable[[str], None] = print,
) -> str:
  """`checkpoint`, or an agent trained with `python -m experiments.train --preset cpu` into `directory`.

  An agent already in `directory` is reused; training the `cpu` preset takes
  about 13 minutes on 2 CPU cores.
  """
  import os  # noqa: PLC0415
  import subprocess  # noqa: PLC0415
  import sys  # noqa: PLC0415

  if checkpoint is not None:
    return checkpoint
  if os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory)):
    log(f"muzero: reusing the agent in {directory}")
    return directory
  cmd = [sys.executable, "-m", "experiments.train", "--preset", preset, "--checkpoint-dir", directory, "--no-evaluate"]
  log(f"muzero: no --checkpoint given; training one: {' '.join(cmd[1:])}")
  subprocess.run(cmd, check=True)
  return directory


def read_rows(path: str | None) -> list[dict]:
  """JSON lines of an earlier (maybe interrupted) run of the command; [] when there is none."""
  import json  # noqa: PLC0415
  import os  # noqa: PLC0415

  if not path or not os.path.exists(path):
    return []
  with open(path) as handle:
    return [json.loads(line) for line in handle if line.strip()]


def check_request(
  method_names: Iterable[str] | None = None,
  scenarios: Iterable[str] | None = None,
  workers: int | None = None,
  seeds: int | None = None,
  time_limit_s: float | None = None,
) -> None:
  """Raises ValueError naming the flag of an unknown method or scenario or an out-of-range number."""
  for flag, given, known in (("--methods", method_names, METHODS), ("--scenarios", scenarios, SCENARIOS)):
    unknown = [name for name in given or () if name not in known]
    if unknown:
      raise ValueError(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
  for flag, value in (("--workers", workers), ("--seeds", seeds)):
    if value is not None and value < 1:
      raise ValueError(f"{flag} must be at least 1, got {value}")
  if time_limit_s is not None and time_limit_s < 0:
    raise ValueError(f"--time-limit-s must be >= 0, got {time_limit_s}")


def run(
  suite_name: str,
  *,
  checkpoint: str | None,
  method_names: tuple[str, ...] | None,
  plot_path: str | None,
  out: str | None,
  emit: Callable[[Iterable[dict], str | None], list[dict]],
  log: Callable[[str], None] | None = None,
  scenarios: tuple[str, ...] | None = None,
  workers: int | None = None,
  seeds: int | None = None,
  time_limit_s: float | None = None,
) -> list[dict]:
  """The `quality` command: run rows, then summary rows, the headline table and the plot.

  Run rows already in `out` (same suite) are kept and their (scenario, seed,
  method, budget) skipped, so an interrupted suite continues and methods can
  be added later; `out` is then rewritten as every run row, one `invocation`
  row per call (wall time, load) and fresh summary rows. `workers` (default:
  the CPU count, capped at 2, on a CPU backend; 1 on an accelerator, whose
  memory one process holds unless XLA_PYTHON_CLIENT_PREALLOCATE=false) is the
  number of cases run at once. `seeds` overrides the suite's number of cubes
  per scenario. `time_limit_s`: no case starts after this many seconds (cases
  go seed by seed across scenarios, so a cut suite still covers each one); the
  invocation row records how many cases ran.
  """
  import json  # noqa: PLC0415
  import os  # noqa: PLC0415
  import sys  # noqa: PLC0415

  import jax  # noqa: PLC0415

  check_request(method_names, scenarios, workers, seeds, time_limit_s)
  log = log or (lambda s: print(s, file=sys.stderr, flush=True))
  suite = SUITES[suite_name]
  if method_names:
    suite = dataclasses.replace(suite, methods=tuple(method_names))
  if scenarios:
    suite = dataclasses.replace(suite, scenarios=tuple(scenarios))
  if seeds is not None:
    suite = dataclasses.replace(suite, seeds=seeds, large_seeds=None)
  if "muzero" in suite.methods:
    checkpoint = ensure_checkpoint(checkpoint, log=log)
  spill = f"{out}.partial" if out else None

  def same_suite(r: dict) -> bool:  # a suite's sizes may change between versions: rows of other sizes are dropped
    size = suite.large_rows if r.get("scenario") == "large" else suite.n_rows
    return (
      r.get("suite") == suite.name
      and r.get("kind") in ("run", "invocation")
      and r.get("n_rows") == (suite.n_rows if r["kind"] == "invocation" else size)
    )

  earlier = [r for r in read_rows(out) if same_suite(r)]
  done = {(r["scenario"], r["seed"], r["method"], r["budget"]) for r in earlier if r["kind"] == "run"}
  kept = 0
  for r in read_rows(spill):  # rows the workers of a killed call made (its parent never wrote them to `out`)
    k = (r.get("scenario"), r.get("seed"), r.get("method"), r.get("budget"))
    if same_suite(r) and r["kind"] == "run" and k not in done:
      earlier.append(r)
      done.add(k)
      kept += 1
  if kept:
    log(f"kept {kept} rows that the workers of an interrupted call wrote to {spill}")
  device = jax.devices()[0]
  if workers is None:
    workers = min(2, os.cpu_count() or 1) if device.platform == "cpu" else 1
  fns = methods(suite.methods, checkpoint) if workers == 1 else None  # workers build their own
  load_before = os.getloadavg()
  t0 = time.perf_counter()
  deadline = None if time_limit_s is None else time.time() + time_limit_s
  rows = emit(
    (
      r
      for r in run_suite(
        suite, fns, log=log, skip=done, workers=workers, checkpoint=checkpoint, deadline=deadline, spill=spill
      )
    ),
    out,
  )
  cases = {(r["scenario"], r["seed"]) for r in rows}
  invocation = dict(
    kind="invocation",
    suite=suite.name,
    methods=list(suite.methods),
    wall_s=time.perf_counter() - t0,
    workers=workers,
    seeds=suite.seeds,
    n_rows=suite.n_rows,
    scenarios=list(suite.scenarios),
    cases_run=len(cases),
    cases_in_suite=len(case_order(suite)),
    time_limit_s=time_limit_s,
    device=device.device_kind,
    platform=device.platform,
    cpu_count=os.cpu_count(),
    load_average_before=load_before,
    load_average_after=os.getloadavg(),
    checkpoint=checkpoint,
  )
  runs = [r for r in earlier if r["kind"] == "run"] + rows
  invocations = [r for r in earlier if r["kind"] == "invocation"] + [invocation]
  summary = summarize(runs)
  if out:
    with open(out, "w") as handle:
      for r in runs + invocations + summary:
        handle.write(json.dumps(r, sort_keys=True) + "\n")
    if os.path.exists(spill):  # every row in it is in `out` now
      os.remove(spill)
  for r in summary:
    print(json.dumps(r, sort_keys=True), flush=True)
  wall = sum(r["wall_s"] for r in invocations)
  if not any(r["applicable"] for r in summary):
    log(f"no applicable run to summarize in suite {suite.name} ({len(runs)} rows)")
    return runs + invocations + summary
  table = headline(summary)
  log(
    f"\nfraction of exhaustive queries to reach recall {RECALL_TARGET} (null/confounded: family-wise error "
    f"rate), suite {suite.name}, {wall / 60:.1f} min in {len(invocations)} call(s) on {device.device_kind}:\n"
    f"{markdown(table, index=True)}\n\nthe same for recall of what exhaustive search confirms:\n"
    f"{markdown(headline(summary, metric='recall_of_oracle_mean'), index=True)}\n\nat equal budget (recall; null/confounded: confirmed false findings):\n"
    f"{markdown(at_equal_budget(summary))}"
  )
  path = plot_path or os.path.join(os.path.dirname(out) if out else ".", "recall_vs_budget.png")
  plot(
    summary,
    path,
    title=f"suite {suite.name} on {device.device_kind} ({os.cpu_count()} cores); mean over {suite.seeds} seed(s)",
  )
  log(f"plot: {path}")
  return runs + invocations + summary
