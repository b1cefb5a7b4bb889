"""`auto`: enumerate when the space fits the budget, otherwise the best search method measured on training worlds.

An analyst does not know in advance whether a table is small enough to look
at every cohort. `auto` answers that from the space itself, before spending a
query:

1. Queries. The cohorts to `max_depth` (`fitting_depth`, exact, depth by
   depth until the count passes the budget, when the column subsets are few
   enough to count in seconds: `EXACT_COUNT_SUBSETS`; otherwise the upper
   bound `cohort_bound`). Enumeration (`exhaustive`) is
   chosen when they fit the query budget.
2. Time. When the search runs under a `TimeLimit` (`discover --time-limit`),
   enumeration must also fit the time left: a probe runs enumeration's own code
   (`oracle.subset_findings`) on `PROBE_SUBSETS` random column subsets of the
   deepest level (the first compiles) and extrapolates to every subset with a
   margin (`TIME_MARGIN`). The probe's cohorts are counted as queries.
3. Otherwise the fallback method (`FALLBACK`, chosen on the benchmark's training
   worlds: `python -m experiments.benchmark quality --split train`, see
   benchmarks/README.md) searches with the budget and time that are left.

The choice and its reason lead the result's `note`, which every report prints.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from cube_env.discovery import oracle
from cube_env.discovery.methods import get_method, register_method
from cube_env.discovery.space import (
  Ledger,
  Progress,
  SearchResult,
  Space,
  TimeLimit,
  cohort_bound,
  column_subsets,
  fitting_depth,
  time_limit_of,
)

# best method at small budgets on the training worlds (0.5-5% and 300-1,000 queries, 6 worlds each of standard, wide,
# deep and masked; benchmarks/quality_ranker_train_cpu.jsonl): learned (the packaged ranker) 0.91 mean recall,
# frontier 0.86, greedy 0.82 (earlier, on 2 worlds each: frontier 0.875, greedy 0.72, beam width 32 0.66;
# benchmarks/quality_sweep_frontier_train_cpu.jsonl)
FALLBACK = "learned"
EXACT_COUNT_SUBSETS = 20_000  # count cohorts exactly up to this many column subsets (~1 ms each at 50,000 cells)
PROBE_SUBSETS = 5  # column subsets timed by the probe (the first one's time is mostly compilation)
TIME_MARGIN = 1.5  # enumeration is chosen under a time limit only if its estimate x this fits


@dataclasses.dataclass(frozen=True)
class Plan:
  """What `auto` decided before searching."""

  method: str
  cohorts: int  # cohorts to max_depth: exact, or (`exact` False) a bound: upper, or lower once over the budget
  exact: bool
  estimated_seconds: float | None  # enumeration's, when a time limit asked for it
  probe_queries: int
  reason: str


def enumeration_seconds(space: Space, *, probe: int = PROBE_SUBSETS, seed: int = 0) -> tuple[float, int]:
  """(estimated seconds to enumerate the space, cohorts the probe visited): enumeration's own code timed on
  `probe` random column subsets of the deepest level, the first one's excess over the others' mean counted once
  (compilation), the mean for every subset of every depth."""
  meta = space.cube.meta
  num_f = len(meta.filter_names)
  rng = np.random.default_rng([seed, 7])
  times, probed = [], 0
  for _ in range(probe):
    subset = tuple(sorted(int(f) for f in rng.choice(num_f, size=min(space.max_depth, num_f), replace=False)))
    t0 = time.perf_counter()
    n, _ = oracle.subset_findings(space.params, meta, subset, include_old=False)
    times.append(time.perf_counter() - t0)
    probed += n
  steady = float(np.mean(times[1:])) if len(times) > 1 else times[0]
  return max(times[0] - steady, 0.0) + steady * column_subsets(space), probed


def plan(space: Space, *, budget: int, time_left: float | None = None, fallback: str = FALLBACK) -> Plan:
  """Enumerate or search (module docstring); `time_left` None: no time limit."""
  if column_subsets(space) <= EXACT_COUNT_SUBSETS:
    # depth by depth, stopping once over the budget: a wide table's deep levels are never counted
    depth, total, over = fitting_depth(space, budget)
    if over is not None:
      depth, total = depth + 1, over
    exact = depth == space.max_depth
    what = (
      f"{total:,} cohorts to depth {space.max_depth}"
      if exact
      else f"more than {total:,} cohorts (counted to depth {depth} of {space.max_depth})"
    )
  else:
    exact, total = False, cohort_bound(space)
    what = f"{total:,} cohorts to depth {space.max_depth} (upper bound)"
  if total > budget:
    return Plan(fallback, total, exact, None, 0, f"enumeration needs {what}, over the budget of {budget:,} queries")
  if time_left is None:
    return Plan("exhaustive", total, exact, None, 0, f"{what} fit the budget of {budget:,} queries")
  seconds, probed = enumeration_seconds(space)
  if probed + total > budget:
    reason = f"enumeration ({what}) and its time probe ({probed} cohorts) exceed the budget of {budget:,} queries"
    return Plan(fallback, total, exact, seconds, probed, reason)
  fits = seconds * TIME_MARGIN <= time_left
  reason = (
    f"{what} fit the budget of {budget:,} queries; enumeration estimated at {seconds:.1f} s "
    + ("fits" if fits else "exceeds")
    + f" the {time_left:.1f} s left (x{TIME_MARGIN} margin)"
  )
  return Plan("exhaustive" if fits else fallback, total, exact, seconds, probed, reason)


def auto(
  space: Space, *, budget: int, seed: int, progress: Progress | None = None, fallback: str = FALLBACK, **options
) -> SearchResult:
  """Enumerates when the space fits the budget and the time limit (if any), else runs `fallback` (with `options`).

  The time limit is read from a `TimeLimit` in the `progress` chain.
  """
  Ledger(space, budget)  # validates the budget
  t0 = time.perf_counter()
  limit = time_limit_of(progress)
  chosen = plan(space, budget=budget, time_left=limit, fallback=fallback)
  fn = get_method(chosen.method)
  left = budget - chosen.probe_queries
  if chosen.method != "exhaustive" and limit is not None:
    progress = TimeLimit(max(limit - (time.perf_counter() - t0), 1e-3), progress)
  result = fn(space, budget=left, seed=seed, progress=progress, **({} if chosen.method == "exhaustive" else options))
  return dataclasses.replace(
    result,
    method="auto",
    budget=budget,
    queries=result.queries + chosen.probe_queries,
    seconds=time.perf_counter() - t0,
    note=f"auto chose {chosen.method}: {chosen.reason}" + (f"; {result.note}" if result.note else ""),
  )


register_method("auto", auto)
