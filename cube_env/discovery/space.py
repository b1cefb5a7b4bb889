"""What every discovery method shares: the search space, the query ledger and the result.

Cost unit (docs/design.md, Discovery and confirmation): one *query* is one group-by pass over the
cube, which is one environment `reset` or `step`; it reveals the cohort
reached (its new significant findings) and the observation pixels of every
cohort one action away. A method is handed a `Space` and a budget; the
`Ledger` counts every step it takes and refuses the step past the budget, so
no method can exceed it. The root (the environment's reset) costs one query.

The environment is compiled once per padded shape: cubes are padded to a
power-of-two number of cells and the env carries no metadata, so cubes of one
schema share the compiled step.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from cube_env.data.disclosure import SMALL_CELL
from cube_env.data.ingest import Cube, codes_to_filters, cohort_label
from cube_env.discovery import cohorts
from cube_env.environment.env import CubeEnv, EnvState, make_env
from cube_env.environment.params import EnvParams, EnvShape, bucketed_shape, resolve_z

Progress = Callable[[int], None]  # called with the number of queries spent so far


class BudgetSpent(Exception):
  """Raised by `Ledger.step` when the budget is used up (methods stop on it)."""


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
    raise ValueError(
      f"empty cohort space: no cohort below the root has at least {2 * min_group:g} rows "
      f"(the searched table has {cube.meta.n_rows} rows); lower min_group or use more rows"
    )
  return space


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
    keys, inverse = np.unique(codes[:, subset], axis=0, return_inverse=True)
    sums = np.bincount(inverse.reshape(-1), weights=rows, minlength=len(keys))
    keep = keys[sums >= min_rows]
    block = np.full((len(keep), num_f), -1, np.int32)
    block[:, subset] = keep
    out.append(block)
  return np.concatenate(out) if out else np.zeros((0, num_f), np.int32)


def count_cohorts(space: Space) -> list[int]:
  """Visitable cohorts per depth 0..max_depth (the oracle's cost is their sum)."""
  return [len(visitable_cohorts(space, d)) for d in range(space.max_depth + 1)]


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
  """

  def __init__(self, space: Space, budget: int, progress: Progress | None = None):
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
      raise ValueError(f"the budget must be a whole number of group-by queries >= 1, got {budget!r}")
    self.space, self.budget, self.progress = space, int(budget), progress
    self.used = 0
    self.index: dict[tuple, int] = {}
    self.visits: list[tuple] = []
    self.t0 = time.perf_counter()
    if isinstance(progress, Anytime):
      progress.bind(self)

  @property
  def left(self) -> int:
    return self.budget - self.used

  def _record(self, filters: tuple, parent: tuple | None, n_new: int) -> None:
    if filters not in self.index:
      self.index[filters] = len(self.visits)
      self.visits.append((filters, -1 if parent is None else self.index[parent], n_new))

  def _spend(self) -> None:
    if self.used >= self.budget:
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
    obs, state, n_new = _step(env, state, jnp.int32(action), params)
    filters = tuple(int(v) for v in np.asarray(state.filters))
    n_new = int(n_new)
    self._record(filters, parent, n_new)
    return np.asarray(obs), state, n_new

  def result(self, method: str, *, note: str = "") -> SearchResult:
    return finish(
      self.space,
      method,
      budget=self.budget,
      queries=self.used,
      visits=self.visits,
      seconds=time.perf_counter() - self.t0,
      note=note,
    )


class Anytime:
  """Results of one search at several smaller budgets, read off a single run.

  Pass an instance as a method's `progress` and run the method at the
  largest budget; `results(final)` then gives, for every budget b, the result
  the method had after its first b queries (its visits then, the wall time
  then, and the candidate statistics of those visits). This equals a
  separate run at budget b exactly when the method consults its budget only
  to stop (`Ledger.left`, `BudgetSpent`), which holds for every walker in
  `cube_env.discovery.methods` (tested against direct runs for random, greedy,
  beam and uct) and, by reading its code, for the agent of `experiments.agent`;
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
      self.snapshots[done] = (list(self.ledger.visits), time.perf_counter() - self.ledger.t0)
    if self.progress is not None:
      self.progress(used)

  def results(self, final: SearchResult) -> dict[int, SearchResult]:
    """`{budget: SearchResult}`; a budget the search never reached (it stopped early) gets the final result."""
    if self.ledger is None:
      raise RuntimeError("the method never created a Ledger with this progress")
    out = {}
    for b in self.budgets:
      if b in self.snapshots and b < final.queries:
        visits, seconds = self.snapshots[b]
        out[b] = finish(
          self.ledger.space, final.method, budget=b, queries=b, visits=visits, seconds=seconds, note=final.note
        )
      else:
        out[b] = dataclasses.replace(final, budget=b)
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
  """

  method: str
  budget: int
  queries: int
  seconds: float
  visits: pd.DataFrame
  candidates: pd.DataFrame
  z_screen: float
  note: str = ""


def drill_path(visits: pd.DataFrame, query: int) -> list[str]:
  """Cohort labels from the root to visit `query`, following first-reached parents."""
  path = []
  parents = visits["parent"].to_numpy()
  labels = visits["cohort"].to_numpy()
  q = int(query)
  while q >= 0 and len(path) <= len(visits):
    path.append(str(labels[q]))
    q = int(parents[q])
  return path[::-1]


def finish(
  space: Space, method: str, *, budget: int, queries: int, visits: list[tuple], seconds: float, note: str = ""
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
    min_group=space.min_group,
    z_screen=space.z_screen,
    new_z=space.new_z,
    max_depth=space.max_depth,
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
  )
