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
   margin (`TIME_MARGIN`), stopping early once it cannot fit. Enumeration reuses
   the probe's subsets and stops at the limit between column subsets; a fallback
   is charged the probe's cohorts as queries.
3. Otherwise the fallback method (`FALLBACK`, chosen on the benchmark's training
   worlds: `python -m experiments.benchmark quality --split train`, see
   benchmarks/README.md) searches with the budget and time that are left.

The choice and its reason lead the result's `note`, which every report prints.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from cube_env.discovery import oracle
from cube_env.discovery.methods import enumerate_space, get_method, register_method
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
  probe_queries: int  # cohorts the time probe visited (enumeration reuses them: `probed`)
  reason: str
  probed: dict = dataclasses.field(default_factory=dict)  # {subset: oracle.subset_findings(...)} of the probe


@dataclasses.dataclass(frozen=True)
class Probe:
  """`enumeration_seconds`' result."""

  seconds: float  # estimated seconds to enumerate the space (compilation and the probed subsets included)
  remaining: float  # of those, the seconds left once the probed subsets are reused (enumeration's own cost now)
  queries: int  # cohorts the probe visited
  elapsed: float  # seconds the probe took
  found: dict  # {subset: (cohorts, finding rows)}: what it computed, for the enumeration to reuse
  planned: int = 1  # distinct column subsets the probe meant to time (fewer where the level has fewer)

  @property
  def estimated(self) -> bool:
    """Whether `seconds` is an estimate: one timed subset of several is mostly compilation, and times the count of
    subsets it was some hundred times too high (a cold audit: 1.02e+04 s where two subsets gave 108 s)."""
    return len(self.found) > 1 or len(self.found) == self.planned


def enumeration_seconds(
  space: Space, *, probe: int = PROBE_SUBSETS, seed: int = 0, time_left: float | None = None
) -> Probe:
  """Enumeration's own code (`oracle.subset_findings`, with `oracle.enumeration_params`) timed on up to `probe`
  distinct random column subsets of the deepest level (an audit: drawn with repeats, one subset of a table with
  one was timed five times and charged as 90 cohorts of its 48), the first one's excess over the others' mean
  counted once (compilation), the mean for every subset of every depth. It stops early once enumeration
  provably cannot fit `time_left` (an audit: a 0.001 s limit probed for 12 s): the probe's own time past it, or,
  after two subsets, what enumeration would still take (`Probe.remaining`) past what is left, with the margin."""
  meta = space.cube.meta
  num_f = len(meta.filter_names)
  depth = min(space.max_depth, num_f)
  every = math.comb(num_f, depth)
  rng = np.random.default_rng([seed, 7])
  subsets: list[tuple[int, ...]] = []
  while len(subsets) < min(probe, every):  # distinct subsets (a few draws: `every` is far above `probe` or small)
    subset = tuple(sorted(int(f) for f in rng.choice(num_f, size=depth, replace=False)))
    if subset not in subsets:
      subsets.append(subset)
  params = oracle.enumeration_params(
    space.cube,
    max_depth=space.max_depth,
    min_group=space.min_group,
    min_cohort=float(space.params.min_cohort),
    z_screen=space.z_screen,
    new_z=space.new_z,
  )
  start = time.perf_counter()
  times, found, probed = [], {}, 0
  for subset in subsets:
    t0 = time.perf_counter()
    found[subset] = oracle.subset_findings(params, meta, subset, include_old=False)
    times.append(time.perf_counter() - t0)
    probed += found[subset][0]
    steady = float(np.mean(times[1:])) if len(times) > 1 else times[0]
    # What enumeration would still take, reusing the probed subsets (a review: the whole estimate, compilation and
    # the probed subsets included, was set against the time left after them), and the time left now.
    remaining = steady * (column_subsets(space) - len(found))
    left = None if time_left is None else time_left - (time.perf_counter() - start)
    if left is not None and (left < 0 or (len(times) > 1 and remaining * TIME_MARGIN > left)):
      break
  seconds = max(times[0] - steady, 0.0) + steady * column_subsets(space)
  return Probe(seconds, remaining, probed, time.perf_counter() - start, found, len(subsets))


def plan(space: Space, *, budget: int, time_left: float | None = None, fallback: str = FALLBACK) -> Plan:
  """Enumerate or search (module docstring); `time_left` None: no time limit."""
  t0 = time.perf_counter()
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
  # The time left after counting (an audit: the whole limit was compared, the counting's seconds left out).
  left = time_left - (time.perf_counter() - t0)
  probe = enumeration_seconds(space, time_left=left)
  left -= probe.elapsed
  fits = probe.remaining * TIME_MARGIN <= left
  if not probe.estimated:  # the probe's first subset, which compiles, used the time: no estimate to give
    fits = False
    reason = (
      f"{what} fit the budget of {budget:,} queries; enumeration's time not estimated: the time probe's first "
      f"column subset ({probe.queries:,} cohorts, counted as queries; its time mostly compilation) took "
      f"{probe.elapsed:.3g} s, leaving {max(left, 0.0):.3g} s"
    )
    return Plan(fallback, total, exact, None, probe.queries, reason, probe.found)
  reason = (
    f"{what} fit the budget of {budget:,} queries; enumeration estimated at {probe.seconds:.3g} s, "
    f"{probe.remaining:.3g} s of it after a time probe of {probe.queries:,} cohorts in {probe.elapsed:.3g} s "
    + ("(enumeration reuses them), fits" if fits else "(counted as queries), exceeds")
    + f" the {max(left, 0.0):.3g} s left (x{TIME_MARGIN} margin)"
  )
  return Plan("exhaustive" if fits else fallback, total, exact, probe.seconds, probe.queries, reason, probe.found)


def auto(
  space: Space, *, budget: int, seed: int, progress: Progress | None = None, fallback: str = FALLBACK, **options
) -> SearchResult:
  """Enumerates when the space fits the budget and the time limit (if any), else runs `fallback` (with `options`).

  The time limit is read from a `TimeLimit` in the `progress` chain. Enumeration reuses the time probe's subsets
  (counted once) and begins no column subset after the limit (the probe's estimate can be off twofold; the
  cohorts of the subsets finished are kept, `stopped_by` the time limit); a fallback is charged the probe's cohorts, which never leaves it under 1 query (the probe's
  subsets are of the deepest level, so it visits fewer cohorts than enumeration's, which fit the budget).
  """
  Ledger(space, budget)  # validates the budget
  t0 = time.perf_counter()
  limit = time_limit_of(progress)
  chosen = plan(space, budget=budget, time_left=limit, fallback=fallback)
  if chosen.method == "exhaustive":
    deadline = None if limit is None else t0 + limit
    result = enumerate_space(space, budget=budget, progress=progress, done=chosen.probed, deadline=deadline)
    charged = 0
  else:
    if limit is not None:
      progress = TimeLimit(max(limit - (time.perf_counter() - t0), 1e-3), progress)
    fn = get_method(chosen.method)
    result = fn(space, budget=budget - chosen.probe_queries, seed=seed, progress=progress, **options)
    charged = chosen.probe_queries
  return dataclasses.replace(
    result,
    method="auto",
    budget=budget,
    queries=result.queries + charged,
    seconds=time.perf_counter() - t0,
    note=f"auto chose {chosen.method}: {chosen.reason}" + (f"; {result.note}" if result.note else ""),
  )


register_method("auto", auto)
