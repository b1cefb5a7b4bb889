"""The external peer: pysubgroup's beam search and DFS as discovery methods.

pysubgroup (Lemmerich & Becker 2018, https://github.com/flemmerich/pysubgroup)
searches conjunctions of selectors (`column == value`) for subgroups of high
quality. Here it searches the same exploration half as every other method:

* Data: one pysubgroup row per cell of the exploration cube (every row of a
  cell has the same filter values, so a selector covers a cell exactly when
  it covers its rows); the cell's sufficient statistics (count, sum, sum of
  squares per measure, on the test scale: log where the cube marks the
  measure log-scale) give exact group and rest statistics.
* Selectors: every value (MISSING and OTHER included) of every dimension and
  protected column, dimensions first.
* Quality (`DisparityQF`, pysubgroup's plug-in interface for a numeric
  target, one run per measure): a subgroup with exactly one protected
  selector `p == g` and dimension selectors C stands for "group g versus the
  rest of cohort C"; its quality is the |z| of that comparison (Welch t as a
  normal equivalent; pooled two-proportion z for a binary measure). Any other
  subgroup has quality -inf. The search depth is max_depth + 1 (option `depth`: fewer filters; the
  protected selector is not a filter of the cohort).
* Cost, in the unit of every other method (group-by queries): the number of
  distinct cohorts C whose group statistics the quality function computed
  (one group-by over C yields every group and measure). Cohorts under
  `min_cohort` rows are rejected free, as the environment's mask does. The
  per-measure runs share one ledger; run i may bring the total to
  `budget * (i + 1) / M`, after which every subgroup on an unpaid cohort gets
  quality and optimistic estimate -inf (pysubgroup then prunes it): the
  search is cut off exactly at its budget.
* Optimistic estimate (used by DFS): with dimensions ordered before protected
  columns, refinements only append later columns, so a subgroup that already
  holds a protected selector has no refinement of finite quality (its bound is
  its own quality); one without, and short enough to gain one, is unbounded
  (+inf: no pruning); one too deep or too small, -inf.
* Output: pysubgroup's result set (DFS: every subgroup with quality >=
  z_screen; beam: the final beam of `width`), mapped to (cohort, protected,
  group, measure) and re-tested with `cube_env` statistics on the same
  exploration cube; the ones that are new significant findings there are the
  candidates, confirmed by the same holdout confirmation as every method.

Importing this module registers the methods `pysubgroup-beam` and
`pysubgroup-dfs` with `cube_env` (pysubgroup itself is imported when one
runs). See docs/design.md, Discovery and confirmation.
"""

from __future__ import annotations

import collections
import functools
import itertools
import time
from importlib import metadata

import numpy as np
import pandas as pd
from scipy import special

import cube_env
from cube_env import STOPPED_BUDGET, STOPPED_DONE, Progress, SearchResult, Space, codes_to_filters, cohort_label
from cube_env.discovery.space import RowCounter

ALGORITHMS = ("beam", "dfs")
QStats = collections.namedtuple("QStats", ("size_sg", "quality", "estimate"))


class CohortLedger:
  """Distinct cohorts whose statistics were computed; refuses new ones past the current cap."""

  def __init__(self, budget: int, progress: Progress | None = None):
    self.budget, self.cap, self.progress = int(budget), int(budget), progress
    self.order: dict[tuple, int] = {}
    self.coarser: set[tuple] = set()  # every paid cohort with any of its filters dropped (itself included)
    self.evaluations = 0  # subgroup qualities computed (pysubgroup's own unit)
    self.refused = False  # whether the cap turned a cohort away (`stopped_by`: the budget, not an empty search)

  @property
  def used(self) -> int:
    return len(self.order)

  def full(self) -> bool:
    return self.used >= min(self.cap, self.budget)

  def _refuse(self) -> bool:
    self.refused = True
    return False

  def affordable(self, key: tuple) -> bool:
    return key in self.order or not self.full() or self._refuse()

  def reachable(self, key: tuple) -> bool:
    """Whether a cohort refining `key` (or `key` itself) can still be paid for or is paid."""
    return not self.full() or key in self.coarser or self._refuse()

  def pay(self, key: tuple) -> bool:
    """True when `key` is paid for (already, or now within the cap)."""
    if key in self.order:
      return True
    if self.full():
      return self._refuse()
    self.order[key] = self.used
    kept = [f for f, v in enumerate(key) if v != -1]
    for r in range(len(kept) + 1):
      for drop in itertools.combinations(kept, r):
        self.coarser.add(tuple(-1 if f in drop else v for f, v in enumerate(key)))
    if self.progress is not None:
      self.progress(self.used)
    return True


class DisparityQF:
  """pysubgroup quality: |z| of group versus the rest of the cohort for one measure (see module docstring).

  Implements pysubgroup's interestingness-measure protocol
  (`calculate_constant_statistics`, `calculate_statistics`, `evaluate`,
  `optimistic_estimate`); subclassed from `ps.BoundedInterestingnessMeasure` at
  run time so that this module imports without pysubgroup.
  """

  def __init__(self, cells: CellData, measure: int, ledger: CohortLedger, *, depth: int):
    self.cells, self.measure, self.ledger, self.depth = cells, measure, ledger, depth
    self.has_constant_statistics = False
    self.required_stat_attrs = QStats._fields

  def calculate_constant_statistics(self, data, target):  # noqa: ARG002 (pysubgroup's signature)
    self.has_constant_statistics = True

  def calculate_statistics(self, subgroup, target=None, data=None, statistics=None):  # noqa: ARG002 (pysubgroup's signature)
    sels = () if isinstance(subgroup, slice) else tuple(subgroup.selectors)
    dims, prot = self.cells.split(sels)
    key = self.cells.key(dims)
    dead = QStats(0.0, -np.inf, -np.inf)
    if -2 in key or len(dims) > self.depth - 1:
      return dead  # two values of one column, or a cohort deeper than max_depth
    if len(prot) != 1:
      if prot or len(sels) >= self.depth or not self.ledger.reachable(key):
        return dead  # no refinement can be a paid, testable one-group subgroup
      cohort, rows = self.cells.cohort(dims)
      return QStats(rows, -np.inf, np.inf if rows >= self.cells.min_cohort else -np.inf)
    if not self.ledger.affordable(key):
      return dead
    cohort, rows = self.cells.cohort(dims)
    if rows < self.cells.min_cohort or not self.ledger.pay(key):
      return dead  # too small: rejected free, as the environment's action mask does
    self.ledger.evaluations += 1
    z = self.cells.abs_z(cohort, prot[0], self.measure)
    return QStats(rows, z, z)

  def evaluate(self, subgroup, target, data, statistics=None):
    stats = statistics if isinstance(statistics, QStats) else self.calculate_statistics(subgroup, target, data)
    return stats.quality

  def optimistic_estimate(self, subgroup, target, data, statistics=None):
    stats = statistics if isinstance(statistics, QStats) else self.calculate_statistics(subgroup, target, data)
    return stats.estimate


class CellData:
  """The exploration cube as pysubgroup data: label columns per cell, plus arrays for the statistics."""

  def __init__(self, space: Space):
    cube = space.cube
    meta = cube.meta
    self.meta = meta
    self.codes = np.asarray(cube.codes)
    self.rows = np.asarray(cube.rows, np.float64)
    self.stats = np.asarray(cube.stats, np.float64)  # [N, M, 3] shifted (n, s1, s2)
    self.min_group = float(space.min_group)
    self.min_cohort = float(space.params.min_cohort)
    self.names = list(meta.filter_names)
    self.num_dims = meta.n_dimensions
    self.frame = pd.DataFrame(
      {name: pd.Categorical.from_codes(self.codes[:, f], meta.categories[f]) for f, name in enumerate(self.names)}
    ).astype(str)
    self._masks: dict[tuple, np.ndarray] = {}
    self._cohorts: dict[tuple, tuple[np.ndarray, float]] = {}
    self._selectors: dict = {}

  def selectors(self, ps) -> list:
    """Equality selectors, dimensions first, then protected columns, values in code order."""
    return [
      ps.EqualitySelector(name, label)
      for f, name in enumerate(self.names)
      for label in self.meta.categories[f]
      if (self.codes[:, f] == self.meta.categories[f].index(label)).any()
    ]

  def split(self, sels) -> tuple[tuple, tuple]:
    """(dimension items, protected items), each item (column index, code), sorted."""
    dims, prot = [], []
    for s in sels:
      key = (s.attribute_name, str(s.attribute_value))
      if key not in self._selectors:
        f = self.names.index(key[0])
        self._selectors[key] = (f, self.meta.categories[f].index(key[1]))
      item = self._selectors[key]
      (dims if item[0] < self.num_dims else prot).append(item)
    return tuple(sorted(dims)), tuple(prot)

  def cohort(self, dims: tuple) -> tuple[np.ndarray, float]:
    """(cell mask, rows) of the cohort of dimension items `dims` (cached)."""
    if dims not in self._cohorts:
      mask = self.mask(dims)
      self._cohorts[dims] = (mask, float(self.rows[mask].sum()))
    return self._cohorts[dims]

  def _column(self, f: int, code: int) -> np.ndarray:
    if (f, code) not in self._masks:
      self._masks[(f, code)] = self.codes[:, f] == code
    return self._masks[(f, code)]

  def mask(self, items) -> np.ndarray:
    out = np.ones(len(self.rows), bool)
    for f, code in items:
      out = out & self._column(f, code)
    return out

  def key(self, dims) -> tuple:
    codes = [-1] * len(self.names)
    for f, code in dims:
      codes[f] = code if codes[f] in (-1, code) else -2  # two values of one column: empty cohort
    return tuple(codes)

  def abs_z(self, cohort: np.ndarray, prot: tuple[int, int], m: int) -> float:
    """|z| of group versus rest in `cohort` on measure `m` (nan-free; 0 when untestable)."""
    in_group = cohort & self._column(*prot)
    rest = cohort & ~self._column(*prot)
    n1, s1, q1 = self.stats[in_group, m].sum(0)
    n0, s0, q0 = self.stats[rest, m].sum(0)
    if min(n1, n0) < self.min_group:
      return 0.0
    mu1, mu0 = s1 / n1, s0 / n0
    if self.meta.is_binary[m]:
      pooled = (s1 + s0 + self.meta.shift[m] * (n1 + n0)) / (n1 + n0)
      se = np.sqrt(max(pooled * (1 - pooled), 0.0) * (1 / n1 + 1 / n0))
      return float(abs(mu1 - mu0) / se) if se > 0 else 0.0
    v1 = max(q1 - n1 * mu1 * mu1, 0.0) / (n1 - 1)
    v0 = max(q0 - n0 * mu0 * mu0, 0.0) / (n0 - 1)
    se2 = v1 / n1 + v0 / n0
    if se2 <= 0:
      return 0.0
    t = abs(mu1 - mu0) / np.sqrt(se2)
    df = se2**2 / ((v1 / n1) ** 2 / (n1 - 1) + (v0 / n0) ** 2 / (n0 - 1))
    p_half = special.stdtr(df, -t)
    return float(-special.ndtri(p_half)) if p_half > 1e-300 else float(np.sqrt(df * np.log1p(t * t / df)))


def _quality_class(ps):
  return type("DisparityQF", (DisparityQF, ps.BoundedInterestingnessMeasure), {})


def pysubgroup_search(
  space: Space,
  *,
  budget: int,
  seed: int,
  progress: Progress | None = None,
  algorithm: str = "beam",
  width: int = 20,
  depth: int | None = None,
) -> SearchResult:
  """pysubgroup's `BeamSearch` (of `width`) or `DFS` as a discovery method (see the module docstring).

  Registered as the methods `pysubgroup-beam` and `pysubgroup-dfs`.
  """
  del seed  # both searches are deterministic
  depth = space.max_depth if depth is None else int(depth)
  if not 1 <= depth <= space.max_depth:
    raise ValueError(f"pysubgroup depth must lie in [1, {space.max_depth}] (the space's max_depth), got {depth}")
  if algorithm not in ALGORITHMS:
    raise ValueError(f"pysubgroup algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
  import pysubgroup as ps  # noqa: PLC0415 (optional dependency: the benchmark extra)

  qf_class = _quality_class(ps)
  t0 = time.perf_counter()
  cells = CellData(space)
  ledger = CohortLedger(budget, progress)
  selectors = cells.selectors(ps)
  num_m = len(cells.meta.measure_names)
  reported = []  # (dims, prot, measure)
  for m in range(num_m):
    ledger.cap = budget * (m + 1) // num_m
    qf = qf_class(cells, m, ledger, depth=depth + 1)
    target = ps.NumericTarget(cells.meta.measure_names[m])
    if algorithm == "beam":
      task = ps.SubgroupDiscoveryTask(
        cells.frame, target, selectors, qf, result_set_size=width, depth=depth + 1, min_quality=0.0
      )
      result = ps.BeamSearch(beam_width=width).execute(task)
    else:
      task = ps.SubgroupDiscoveryTask(
        cells.frame,
        target,
        selectors,
        qf,
        result_set_size=10**9,
        depth=depth + 1,
        min_quality=space.z_screen,
      )
      result = ps.DFS().execute(task)
    for quality, sg, _ in result.results:
      dims, prot = cells.split(sg.selectors)
      if len(prot) == 1 and np.isfinite(quality):
        reported.append((cells.key(dims), prot[0], m))
  candidates = _candidates(space, cells, reported, ledger)
  return _result(
    space,
    f"pysubgroup-{algorithm}",
    budget,
    ledger,
    candidates,
    time.perf_counter() - t0,
    note=(
      f"pysubgroup {metadata.version('pysubgroup')} "
      f"{f'BeamSearch width {width}' if algorithm == 'beam' else 'DFS'} to depth {depth}; "
      f"{ledger.evaluations} subgroup qualities over {ledger.used} cohorts"
    ),
  )


def _candidates(space: Space, cells: CellData, reported: list, ledger: CohortLedger) -> pd.DataFrame:
  """Re-tests each reported (cohort, group, measure) with cube_env; keeps the new significant ones."""
  keys = sorted({k for k, _, _ in reported if -2 not in k}, key=lambda k: ledger.order.get(k, 0))
  index = {k: i for i, k in enumerate(keys)}
  table = cube_env.cohort_table(
    space.cube,
    np.asarray(keys, np.int32).reshape(len(keys), len(cells.names)),  # no keys: an empty table of every column
    **space.thresholds,
    only_new=True,
    params=space.params,
  )
  meta = cells.meta
  wanted = set()
  for k, (f, code), m in reported:
    if k in index:
      wanted.add((index[k], meta.filter_names[f], meta.categories[f][code], meta.measure_names[m]))
  keep = [
    (r.cohort_index, r.protected, r.group, r.measure) in wanted
    or (r.cohort_index, r.protected, str(r.reference), r.measure) in wanted
    for r in table.itertuples()
  ]
  cand = table[np.asarray(keep, bool)].copy() if len(table) else table
  cand["query"] = [ledger.order.get(keys[i], -1) for i in cand["cohort_index"]]
  cand["path"] = cand["cohort"]
  return cand.drop(columns=["cohort_index"]).reset_index(drop=True)


def _result(
  space: Space, name: str, budget: int, ledger: CohortLedger, cand: pd.DataFrame, seconds: float, note: str
) -> SearchResult:
  meta = space.cube.meta
  keys = sorted(ledger.order, key=ledger.order.get)
  filt = [codes_to_filters(meta, np.asarray(k)) for k in keys]
  hits = collections.Counter(cand["query"]) if len(cand) else collections.Counter()
  visits = pd.DataFrame(
    {
      "query": np.arange(len(keys), dtype=int),
      "cohort": [cohort_label(f) for f in filt],
      "depth": [len(f) for f in filt],
      "parent": -1,
      "n_new": [hits.get(i, 0) for i in range(len(keys))],
      "filters": filt,
    }
  )
  return SearchResult(
    method=name,
    budget=budget,
    queries=ledger.used,
    seconds=seconds,
    visits=visits,
    candidates=cand,
    z_screen=space.z_screen,
    note=note,
    rows_scanned=_rows_scanned(space, keys),
    stopped_by=STOPPED_BUDGET if ledger.used >= budget or ledger.refused else STOPPED_DONE,
  )


def _rows_scanned(space: Space, keys: list[tuple]) -> int:
  """Rows of every cohort whose group statistics were computed: one group-by over each cohort's rows."""
  counter = RowCounter(space.cube)
  return int(round(sum(counter.rows_of(k) for k in keys if -2 not in k)))


cube_env.register_method("pysubgroup-beam", functools.partial(pysubgroup_search, algorithm="beam"))
cube_env.register_method("pysubgroup-dfs", functools.partial(pysubgroup_search, algorithm="dfs"))
