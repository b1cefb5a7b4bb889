"""What every discovery method shares: the search space, the query ledger and the result.

Cost unit (docs/design.md, Discovery and confirmation): one *query* is one group-by pass over the
cube, which is one environment `reset` or `step`; it reveals the cohort
reached (its new significant findings) and the observation pixels of every
cohort one action away. A method is handed a `Space` and a budget; the
`Ledger` counts every step it takes and refuses the step past the budget, so
no method can exceed it. The root (the environment's reset) costs one query.

Rows scanned (the cost on a database, `scan_rows`): a query at cohort c
yields every neighbour's statistics from group-by passes whose WHERE clauses
are c itself (neighbours that add a filter) and c without each of its filters
a (neighbours that change or drop filter a, and c's own parents, which its
newness needs), so it touches rows(c) + sum over a of rows(c without a).
Enumeration (`exhaustive`) runs one pass per set of at most `max_depth`
columns over every row (SQL's GROUPING SETS). Both count the searched
(exploration) half's rows.

The environment is compiled once per padded shape: cubes are padded to a
power-of-two number of cells and the env carries no metadata, so cubes of one
schema share the compiled step; small tables of as many values share one shape
(`bucketed_shape`'s small-table floor).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from cube_env.data.disclosure import SMALL_CELL, redact_counts
from cube_env.data.ingest import Cube, codes_to_filters, cohort_label
from cube_env.discovery import cohorts
from cube_env.discovery.journal import in_chain, journal_of
from cube_env.environment.env import CubeEnv, EnvState, make_env
from cube_env.environment.params import EnvParams, EnvShape, bucketed_shape, resolve_z, subset_products

Progress = Callable[[int], None]  # called with the number of queries spent so far


class BudgetSpent(Exception):
  """Raised by `Ledger.step` when the budget is used up (methods stop on it)."""


# Why a search stopped (`SearchResult.stopped_by`): its queries reached the budget (or, for `exhaustive`, the next
# depth would not fit it), its `TimeLimit` passed, or the method had no cohort left to visit. "" where unknown (a
# result put together by hand).
STOPPED_BUDGET, STOPPED_TIME, STOPPED_DONE = "budget", "time limit", "nothing left"


@dataclasses.dataclass(frozen=True)
class Space:
  """A cube ready to search: the environment, its params and the thresholds."""

  cube: Cube
  env: CubeEnv  # meta-free, padded; horizon SEARCH_HORIZON (walkers count their own steps)
  params: EnvParams
  max_depth: int
  min_group: float
  z_screen: float  # a number (Bonferroni already resolved)
  new_z: float  # heterogeneity z for newness under a parent with the same gap (`make_params`)

  @property
  def thresholds(self) -> dict:
    """`make_space` / `make_env`'s threshold arguments as this space has them: what an environment rebuilt for the
    same cube on another shape or horizon passes, so none is dropped (one was: an agent's env counted new findings
    at `z_screen`, not `new_z`)."""
    return dict(max_depth=self.max_depth, min_group=self.min_group, z_screen=self.z_screen, new_z=self.new_z)


SEARCH_HORIZON = 8  # env horizon of a search space (walkers count their own steps); fixed so depths share code


def make_space(
  cube: Cube,
  *,
  max_depth: int = 3,
  min_group: float = SMALL_CELL,
  z_screen: float | str = "bonferroni",
  new_z: float | None = None,
  shape: EnvShape | None = None,
  horizon: int | None = None,
) -> Space:
  """Environment and thresholds for searching `cube`.

  Raises:
    ValueError: bad thresholds, or an empty cohort space (no cohort below
      the root has `2 * min_group` rows).
  """
  if max_depth < 1:
    raise ValueError(f"max_depth must be at least 1, got {max_depth}")
  z = resolve_z(cube, z_screen, max_depth)
  env, params = make_env(
    cube,
    max_depth=max_depth,
    horizon=horizon or max(SEARCH_HORIZON, max_depth + 1),
    min_group=min_group,
    z_screen=z,
    new_z=new_z,
    shape=shape or bucketed_shape(cube),
  )
  env = dataclasses.replace(env, meta=None)
  space = Space(
    cube=cube,
    env=env,
    params=params,
    max_depth=max_depth,
    min_group=float(min_group),
    z_screen=z,
    new_z=float(params.new_z),
  )
  # Rows of every one-filter cohort are in the root grid (the payload's last entry, summed over groups);
  # padding columns and values (a larger `shape`) are not cohorts.
  child_rows = np.asarray(params.root[..., -1].sum(axis=-1).max(axis=-1))  # [F, C]
  real = np.arange(child_rows.shape[1])[None, :] < np.asarray(params.n_cats)[:, None]
  if not np.any(real & (child_rows >= float(params.min_cohort))):
    advice = (
      f"lower min_group (at least {SMALL_CELL}) or use more rows"
      if min_group > SMALL_CELL
      else "use more rows"
      + (f" (min_group is already the small-cell rule's smallest, {SMALL_CELL})" if min_group == SMALL_CELL else "")
    )
    raise ValueError(
      f"empty cohort space: no cohort below the root has at least {2 * min_group:g} rows "
      + redact_counts(f"(the searched table has {cube.meta.n_rows} rows); ", SMALL_CELL)
      + advice
    )
  return space


def _column_sizes(codes: np.ndarray) -> list[int]:
  """The radix of each column in `_subset_keys`: its largest code + 1."""
  return [int(codes[:, f].max(initial=0)) + 1 for f in range(codes.shape[1])]


def _subset_keys(codes: np.ndarray, subset: tuple[int, ...], sizes: list[int] | None = None) -> np.ndarray:
  """One int64 key per cell for its values in the columns of `subset` (codes are >= 0 in a cube), in the mixed
  radix `sizes` (default `_column_sizes(codes)`): keys range over the product of the subset's sizes."""
  if not subset:
    return np.zeros(len(codes), np.int64)
  sizes = _column_sizes(codes) if sizes is None else sizes
  key = codes[:, subset[0]].astype(np.int64)
  for f in subset[1:]:
    key = key * sizes[f] + codes[:, f]
  return key


def visitable_cohorts(space: Space, depth: int) -> np.ndarray:
  """`[K, F]` codes of every cohort with exactly `depth` filters and >= min_cohort rows (column order)."""
  codes = np.asarray(space.cube.codes)
  rows = np.asarray(space.cube.rows, np.float64)
  num_f = codes.shape[1]
  min_rows = float(space.params.min_cohort)
  out = []
  for subset in itertools.combinations(range(num_f), depth):
    if not subset:
      out.append(np.full((1, num_f), -1, np.int32))
      continue
    _, first, inverse = np.unique(_subset_keys(codes, subset), return_index=True, return_inverse=True)
    sums = np.bincount(inverse, weights=rows, minlength=len(first))
    keep = codes[first[sums >= min_rows]][:, subset]  # integer keys sort as the codes' rows do
    block = np.full((len(keep), num_f), -1, np.int32)
    block[:, subset] = keep
    out.append(block)
  return np.concatenate(out) if out else np.zeros((0, num_f), np.int32)


DENSE_KEYS_PER_CELL, DENSE_KEYS_MIN = 4, 1 << 16  # `cohorts_at_depth`: when a subset's key space is small enough


def count_cohorts(space: Space) -> list[int]:
  """Visitable cohorts per depth 0..max_depth (the oracle's cost is their sum).

  Equals `len(visitable_cohorts(space, d))` per depth, counted from one
  integer key per cell and subset (about 1 ms per column subset at 50,000 cells).
  """
  return [cohorts_at_depth(space, d) for d in range(space.max_depth + 1)]


def cohorts_at_depth(space: Space, depth: int) -> int:
  """Visitable cohorts with exactly `depth` filters (`count_cohorts` of one depth)."""
  if depth == 0:
    return 1
  codes = np.asfortranarray(space.cube.codes)  # each column contiguous: the keys read columns, once per subset
  rows = np.asarray(space.cube.rows, np.float64)
  min_rows = float(space.params.min_cohort)
  sizes = _column_sizes(codes)
  dense = max(DENSE_KEYS_PER_CELL * len(codes), DENSE_KEYS_MIN)  # key spaces this small: a bincount over every key
  total = 0
  for subset in itertools.combinations(range(codes.shape[1]), depth):
    key, size = _subset_keys(codes, subset, sizes), math.prod(sizes[f] for f in subset)
    if min_rows > 0 and size <= dense:  # a key no cell has sums to 0 rows: never counted
      sums = np.bincount(key, weights=rows, minlength=size)
    else:  # a sparse key space: only the keys present
      sums = np.bincount(np.unique(key, return_inverse=True)[1], weights=rows)
    total += int(np.count_nonzero(sums >= min_rows))
  return total


def fitting_depth(space: Space, budget: int) -> tuple[int, int, int | None]:
  """(the deepest depth whose visitable cohorts to it all fit in `budget`, the cohorts to that depth, the cohorts
  to the next depth when it was counted and passed the budget, else None), counted level by level
  (`cohorts_at_depth`): a wide table's deeper levels are never counted once one passes the budget."""
  depth, total = 0, 1
  while depth < space.max_depth:
    more = cohorts_at_depth(space, depth + 1)
    if total + more > budget:
      return depth, total, total + more
    depth, total = depth + 1, total + more
  return depth, total, None


def cohort_bound(space: Space) -> int:
  """An upper bound on the cohorts to max_depth: sums of products of category counts (`subset_products`).

  Costs microseconds where `count_cohorts` costs a pass per column subset (tens of seconds on 60 columns at depth 3).
  """
  return int(sum(subset_products([len(c) for c in space.cube.meta.categories], space.max_depth)))


def column_subsets(space: Space, max_depth: int | None = None) -> int:
  """Sets of at most `max_depth` (default the space's) filter columns: enumeration's group-by passes."""
  depth = space.max_depth if max_depth is None else max_depth
  num_f = len(space.cube.meta.filter_names)
  return sum(math.comb(num_f, k) for k in range(depth + 1))


def enumeration_rows(space: Space, max_depth: int | None = None) -> int:
  """Rows enumeration to `max_depth` scans: one pass over every row per set of at most that many columns."""
  rows = round(float(np.sum(np.asarray(space.cube.rows, np.float64))))
  return int(column_subsets(space, max_depth) * rows)


class RowCounter:
  """Rows matching filter codes in a space's cube, with one cached equality mask per (column, value)."""

  def __init__(self, cube: Cube):
    self.codes = np.asarray(cube.codes)
    self.rows = np.asarray(cube.rows, np.float64)
    self.total = float(self.rows.sum())
    self.masks: dict[tuple[int, int], np.ndarray] = {}

  def _mask(self, f: int, v: int) -> np.ndarray:
    if (f, v) not in self.masks:
      self.masks[(f, v)] = self.codes[:, f] == v
    return self.masks[(f, v)]

  def rows_of(self, filters) -> float:
    """Rows of the cohort `filters` (codes per column, -1 = all; columns past the cube's are padding)."""
    items = [(f, int(v)) for f, v in enumerate(filters[: self.codes.shape[1]]) if int(v) >= 0]
    if not items:
      return self.total
    mask = self._mask(*items[0])
    for f, v in items[1:]:
      mask = mask & self._mask(f, v)
    return float(self.rows[mask].sum())

  def scan_rows(self, filters) -> int:
    """Rows one query at cohort `filters` touches: rows(c) + sum over its filters a of rows(c without a)."""
    filters = [int(v) for v in filters]
    total = self.rows_of(filters)
    for f, v in enumerate(filters[: self.codes.shape[1]]):
      if v >= 0:
        total += self.rows_of(filters[:f] + [-1] + filters[f + 1 :])
    return int(round(total))


@functools.partial(jax.jit, static_argnames=("env",))
def _step(env: CubeEnv, state: EnvState, action, params: EnvParams):
  obs, state, _, _, _, info = env.step(jax.random.PRNGKey(0), state, action, params)
  return obs, state, info["new_findings"]


def _before_root(env: CubeEnv, params: EnvParams) -> EnvState:
  """A state from which "clear column 0" lands on the root exactly as `reset` would.

  The root is observed with the step function, so a search compiles one
  program, not two (reset and step share `_observe`).
  """
  num_f = env.shape.num_filters
  return EnvState(
    filters=jnp.full((num_f,), -1, jnp.int32),
    t=jnp.int32(-1),
    visited=jnp.full((env.horizon + 1, num_f), -2, jnp.int32),
    mask=jnp.ones((env.num_actions,), bool),
    rows=params.total_rows,
    found=jnp.int32(0),
  )


def target(filters: tuple, action: int, num_values: int) -> tuple:
  """The filters `action` leads to from `filters` (no legality check)."""
  f, v = divmod(int(action), num_values + 1)
  out = list(filters)
  out[f] = -1 if v == num_values else v
  return tuple(out)


def drill_down_actions(filters: tuple, mask: np.ndarray, num_values: int) -> np.ndarray:
  """Legal actions that add a filter on an unfiltered column."""
  legal = np.nonzero(mask)[0]
  f, v = np.divmod(legal, num_values + 1)
  free = np.asarray(filters)[f] < 0
  return legal[(v < num_values) & free]


class Ledger:
  """Counts the queries of one search and records the distinct cohorts reached.

  Mutable, local to one method call. `visits` rows: query (index of the first
  query that reached the cohort), filters (codes tuple), parent (query index
  of the cohort it was first reached from; -1 for the root), n_new.

  A `journal.Journal` as `progress` (or in its chain of wrappers) makes the search resumable: the
  ledger answers queries from it while it has them, records every live one,
  and saves it when the search ends (`result`).
  """

  def __init__(self, space: Space, budget: int, progress: Progress | None = None):
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
      raise ValueError(f"the budget must be a whole number of group-by queries >= 1, got {budget!r}")
    self.space, self.budget, self.progress = space, int(budget), progress
    self.used = 0
    self.rows_scanned = 0  # `RowCounter.scan_rows` of every query
    self.rows = RowCounter(space.cube)
    self.index: dict[tuple, int] = {}
    self.visits: list[tuple] = []
    self.t0 = time.perf_counter()
    limit = time_limit_of(progress)
    self.deadline = None if limit is None else self.t0 + limit
    self.journal = journal_of(progress)
    self.timed_out = False  # set when the time limit, not the budget, refused a query (`stopped_by`)
    anytime = in_chain(progress, Anytime)
    if anytime is not None:
      anytime.bind(self)

  @property
  def out_of_time(self) -> bool:
    return self.deadline is not None and time.perf_counter() >= self.deadline

  @property
  def left(self) -> int:
    """Queries left: 0 once the budget is spent or a `TimeLimit` has passed."""
    if self.used and self.used < self.budget and self.out_of_time:
      self.timed_out = True
      return 0
    return self.budget - self.used

  def _record(self, filters: tuple, parent: tuple | None, n_new: int) -> None:
    if filters not in self.index:
      self.index[filters] = len(self.visits)
      self.visits.append((filters, -1 if parent is None else self.index[parent], n_new))

  def _spend(self) -> None:
    if self.used >= self.budget:
      raise BudgetSpent()
    if self.used and self.out_of_time:  # the root is always observed
      self.timed_out = True
      raise BudgetSpent()
    self.used += 1
    if self.progress is not None:
      self.progress(self.used)

  def root(self, env: CubeEnv | None = None, params: EnvParams | None = None):
    """Observes the root (one query). Returns (obs `[channels, F, C + 1]` numpy, state, n_new)."""
    env, params = env or self.space.env, params or self.space.params
    return self._query(_before_root(env, params), env.shape.num_values, env, params, parent=None)

  def step(self, state: EnvState, action: int, *, env: CubeEnv | None = None, params: EnvParams | None = None):
    """One environment step (one query). Returns (obs numpy, new state, n_new of the cohort reached)."""
    before = tuple(int(v) for v in np.asarray(state.filters))
    return self._query(state, action, env or self.space.env, params or self.space.params, parent=before)

  def _query(self, state, action, env, params, *, parent):
    self._spend()
    answer = None if self.journal is None else self.journal.replay(state, int(action))
    if answer is None:
      obs, after, n_new = _step(env, state, np.int32(action), params)  # a host scalar: no device array to build
      obs, n_new = np.asarray(obs), int(n_new)
      if self.journal is not None:
        self.journal.record(state, int(action), obs, after, n_new)
    else:
      obs, after, n_new = answer
    filters = tuple(int(v) for v in np.asarray(after.filters))
    self.rows_scanned += self.rows.scan_rows(filters)
    self._record(filters, parent, n_new)
    return obs, after, n_new

  def result(self, method: str, *, note: str = "") -> SearchResult:
    if self.journal is not None:
      self.journal.save()
    return finish(
      self.space,
      method,
      budget=self.budget,
      queries=self.used,
      visits=self.visits,
      seconds=time.perf_counter() - self.t0,
      note=note,
      rows_scanned=self.rows_scanned,
      stopped_by=self.stopped_by,
    )

  @property
  def stopped_by(self) -> str:
    """Why the search stopped, as far as the ledger saw (`STOPPED_*`): a method that stops by itself while queries
    and time are left had no cohort left to visit. The time limit is named whenever a method found it passed, so a
    method reads the time left (`left`) only with a cohort left to visit (uct and frontier read it before they
    learned that, and a limit that passed during the last query was named: a review)."""
    if self.used >= self.budget:
      return STOPPED_BUDGET
    return STOPPED_TIME if self.timed_out else STOPPED_DONE


class TimeLimit:
  """A progress that stops a search after `seconds` of wall time from its ledger's start (`Ledger.left` -> 0).

  Wraps another progress (called as usual); may itself be wrapped by `Anytime`.
  A time-limited search is not reproducible query for query (the cut depends on the machine's speed).
  """

  def __init__(self, seconds: float, progress: Progress | None = None):
    if not seconds > 0:
      raise ValueError(f"a time limit must be a positive number of seconds, got {seconds!r}")
    self.seconds, self.progress = float(seconds), progress

  def __call__(self, used: int) -> None:
    if self.progress is not None:
      self.progress(used)


def time_limit_of(progress) -> float | None:
  """The seconds of the first `TimeLimit` in a chain of progress wrappers, or None."""
  limit = in_chain(progress, TimeLimit)
  return None if limit is None else limit.seconds


class Anytime:
  """Results of one search at several smaller budgets, read off a single run.

  Pass an instance as a method's `progress` and run the method at the
  largest budget; `results(final)` then gives, for every budget b, the result
  the method had after its first b queries (its visits then, the wall time
  then, and the candidate statistics of those visits). This equals a
  separate run at budget b exactly when the method consults its budget only
  to stop (`Ledger.left`, `BudgetSpent`), which holds for every walker in
  `cube_env.discovery.methods` and `frontier` (tested against direct runs for
  random, greedy, beam, uct and frontier) and, by reading its code, for the agent of `experiments.agent`;
  it does not hold for `exhaustive`, which picks its depth from the budget.
  The snapshot is taken when query b + 1 is asked for, so its `seconds`
  include the method's choice of that query (one decision, e.g. one MCTS
  search), and the result's `note` is the final run's.
  """

  def __init__(self, budgets, progress: Progress | None = None):
    self.budgets = sorted({int(b) for b in budgets})
    self.progress = progress
    self.ledger: Ledger | None = None
    self.snapshots: dict[int, tuple[list, float]] = {}

  def bind(self, ledger: Ledger) -> None:
    if self.ledger is not None:
      raise RuntimeError("an Anytime progress serves one search")
    self.ledger = ledger

  def __call__(self, used: int) -> None:
    done = used - 1  # called before query `used` runs: `done` queries are recorded
    if done in self.budgets:
      ledger = self.ledger
      self.snapshots[done] = (list(ledger.visits), time.perf_counter() - ledger.t0, ledger.rows_scanned)
    if self.progress is not None:
      self.progress(used)

  def results(self, final: SearchResult) -> dict[int, SearchResult]:
    """`{budget: SearchResult}`; a budget the search never reached (it stopped early) gets the final result."""
    if self.ledger is None:
      raise RuntimeError("the method never created a Ledger with this progress")
    out = {}
    for b in self.budgets:
      if b in self.snapshots and b < final.queries:
        visits, seconds, rows = self.snapshots[b]
        out[b] = finish(
          self.ledger.space,
          final.method,
          budget=b,
          queries=b,
          visits=visits,
          seconds=seconds,
          note=final.note,
          rows_scanned=rows,
          stopped_by=STOPPED_BUDGET,
        )
      else:
        stopped = STOPPED_BUDGET if final.queries >= b else final.stopped_by
        out[b] = dataclasses.replace(final, budget=b, stopped_by=stopped)
    return out


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """What a search found on the exploration half.

  Attributes:
    method: its name.
    budget: queries allowed; queries: queries spent (<= budget).
    seconds: wall time of the search (the candidates' statistics included).
    visits: one row per distinct cohort reached: query, cohort, depth,
      parent, n_new, filters (dict of labels).
    candidates: the new significant findings at the cohorts reached
      (`cohorts.COLUMNS`), with `query` and `path` (labels from the root).
    z_screen: the |z| threshold used.
    note: anything the method wants the report to say.
    rows_scanned: rows the search's group-by passes touched (module docstring).
    stopped_by: why it stopped: `STOPPED_BUDGET`, `STOPPED_TIME` or `STOPPED_DONE` ("" where unknown).
  """

  method: str
  budget: int
  queries: int
  seconds: float
  visits: pd.DataFrame
  candidates: pd.DataFrame
  z_screen: float
  note: str = ""
  rows_scanned: int = 0
  stopped_by: str = ""


def drill_path(visits: pd.DataFrame, query: int) -> list[str]:
  """Cohort labels from the root to visit `query`: the drill-downs that led there, each cohort holding the next.

  It follows first-reached parents back to the root and keeps the cohorts whose filters are a part of the next kept
  one's: a walker that rolled up or switched a filter on its way (greedy's walk may pass through 100 cohorts)
  shows the ancestors it drilled through, not its whole walk (an audit). With `filters` absent, the whole chain."""
  path = []
  parents = visits["parent"].to_numpy()
  labels = visits["cohort"].to_numpy()
  filters = visits["filters"].to_numpy() if "filters" in visits.columns else None
  q, kept = int(query), None
  while q >= 0 and len(path) <= len(visits):
    mine = None if filters is None else set(filters[q].items())
    if kept is None or mine is None or mine <= kept:
      path.append(str(labels[q]))
      kept = mine
    q = int(parents[q])
  return path[::-1]


def finish(
  space: Space,
  method: str,
  *,
  budget: int,
  queries: int,
  visits: list[tuple],
  seconds: float,
  note: str = "",
  rows_scanned: int = 0,
  stopped_by: str = "",
) -> SearchResult:
  """Builds the result: statistics of the new findings at every cohort reached with n_new > 0."""
  t0 = time.perf_counter()
  meta = space.cube.meta
  num_f = len(meta.filter_names)
  filt = [codes_to_filters(meta, f[:num_f]) for f, _, _ in visits]
  table = pd.DataFrame(
    {
      "query": np.arange(len(visits), dtype=int),
      "cohort": [cohort_label(f) for f in filt],
      "depth": [len(f) for f in filt],
      "parent": [p for _, p, _ in visits],
      "n_new": [n for _, _, n in visits],
      "filters": filt,
    }
  )
  hits = table[table["n_new"] > 0]
  codes = np.asarray([visits[q][0][:num_f] for q in hits["query"]], np.int32).reshape(-1, num_f)
  cand = cohorts.cohort_table(
    space.cube,
    codes,
    **space.thresholds,
    only_new=True,
    params=space.params,
  )
  if len(cand):
    cand["query"] = hits["query"].to_numpy()[cand["cohort_index"].to_numpy()]
    cand["path"] = [" > ".join(drill_path(table, q)) for q in cand["query"]]
  else:
    cand["query"], cand["path"] = pd.Series(dtype=int), pd.Series(dtype=object)
  cand = cand.drop(columns=["cohort_index"])
  return SearchResult(
    method=method,
    budget=budget,
    queries=queries,
    visits=table,
    candidates=cand,
    seconds=seconds + time.perf_counter() - t0,
    z_screen=space.z_screen,
    note=note,
    rows_scanned=int(rows_scanned),
    stopped_by=stopped_by,
  )
