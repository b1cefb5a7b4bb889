"""The small-cell rule: which counts may be shown.

US health-data reporting shows no cell count from 1 to 10 (CMS cell-size
suppression policy), so no group smaller than `SMALL_CELL` is tested or
reported, and wherever a count in `[1, max(min_group, SMALL_CELL))` would
appear, it is hidden: a statistic that reveals it is blanked
(`cube_env.discovery.cohorts.suppress`) and a count in a coding note becomes
"fewer than N" (`redact_counts`). A rate is a count too: a binary measure's
mean times its side's rows is that side's events, so where a side's events
or non-events are in that range, every statistic of the test that would
reveal them is blanked in what is shown (`hide_small_rates`). And a count
that one subtraction within a cohort's tests would give back (the rows of a
group never tested, the rows missing a measure, the events outside the shown
groups) hides the numbers of those tests (`hide_remainders`), as does one
that a cohort's count less its shown children's would give back
(`hide_cohort_remainders`).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import fractions
import functools
import itertools
import math
import os
import re
import sys
import threading
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize, special

from cube_env.data import derivation

SMALL_CELL = 11  # smallest count that may be shown (and the default min_group)
Z975 = 1.959963984540054  # the 95% intervals' normal quantile (a rate's Wilson interval, `cube_env.discovery.cohorts`)
MOST_VALUES = 3  # a measure with at most this many values has each value's cases solved (`value_counts`)
# A measure with at most this many values (`CubeMeta.few_values`) has each side checked for a value whose cases its
# shown numbers pin to 1..limit-1 among whole counts (`pinned_small`): with four or more values the rows, sum and
# sum of squares no longer solve the cases, but whole non-negative counts can still leave only one way (a cold
# disclosure audit: complications 0-3 gave back 81, 9, 2 and 0 cases of a rest of 92).
MOST_FEW_VALUES = 16


def side_quantile(n) -> np.ndarray:
  """The 97.5% quantile of Student's t with `n - 1` degrees of freedom (at least 1): the half width of a side's 95%
  interval of its mean, in standard errors (`cube_env.discovery.cohorts`; rates take Wilson's with `Z975`). It was
  the normal 1.96, which covered 92% at 11 rows (a cold statistics audit); `value_counts` inverts it."""
  return special.stdtrit(np.maximum(np.asarray(n, float) - 1.0, 1.0), 0.975)  # t.ppf's value, 1 us a call, not 46


# "N rows" / "N missing values", N a whole count (not "1,005" cut in two, not a limit already written as "fewer than").
_COUNT_PHRASE = re.compile(r"(?<![\d,.])(?<![Ff]ewer than )\b(\d+)( missing values| rows)")


def disclosure_limit(min_group: float) -> int:
  """Smallest count shown: `max(min_group, SMALL_CELL)`, rounded up to a whole count."""
  return max(int(-(-float(min_group) // 1)), SMALL_CELL)


def is_small_cell(count: float | None, min_group: float) -> bool:
  """True for a count that must be hidden: `1 <= count < disclosure_limit(min_group)` (None: nothing shown)."""
  return count is not None and 0 < count < disclosure_limit(min_group)


def redact_counts(text: str, min_group: float) -> str:
  """Replaces each "N rows" / "N missing values" with N hidden by "fewer than L rows" (L the limit)."""
  limit = disclosure_limit(min_group)

  def sub(match):
    n = int(match.group(1))
    return f"fewer than {limit}{match.group(2)}" if is_small_cell(n, min_group) else match.group(0)

  return _COUNT_PHRASE.sub(sub, text)


def note_text(text: str, min_group: float) -> str:
  """A coding note as reports show it: each "N rows" / "N missing values" under the limit is "fewer than L"
  (`redact_counts`), and each other but 0 is rounded to tens, "about 30 rows" ("fewer than 20 rows" below 15).

  A note counts the whole table, while the findings show each half's counts: an exact whole-table count less a
  shown half's (the exploration half's rows of MISSING or OTHER) would give the other half's, which may be small.
  Rounded, that difference is known only to within 5.
  """
  limit = disclosure_limit(min_group)

  def about(match):  # the small ones are already "fewer than L", which the phrase no longer matches
    n = int(match.group(1))
    if n == 0:  # none in the table: none in either half
      return match.group(0)
    tens = 10 * ((n + 5) // 10)
    return f"fewer than {max(20, limit)}{match.group(2)}" if tens <= 10 else f"about {tens}{match.group(2)}"

  return _COUNT_PHRASE.sub(about, redact_counts(text, min_group))


# A test's statistics that reveal its sides' rates (so, for a binary measure, their events), by column name.
RATE_STATISTICS = (
  "mean_group",
  "mean_rest",
  "diff",
  "ci_low",
  "ci_high",
  "ratio",
  "relative_diff",
  "relative_ci_low",
  "relative_ci_high",
  "smd",
  "z",
  "p_value",
  "p_confirm",
  "p_adjusted",
  "group_ci_low",
  "group_ci_high",
  "rest_ci_low",
  "rest_ci_high",
  "var_group",
  "var_rest",
)


COUNT_STATISTICS = ("n_group", "n_rest")  # a test's counts (cohort_rows stays: other measures' tests give it)

RAW_SMALL_EVENTS = "raw_small_events"  # optional bool column: the unadjusted confirmation half's events are small
EXPLORE_RAW_SMALL_EVENTS = "explore_raw_small_events"  # the same for the unadjusted exploration half


def small_events(table: pd.DataFrame, min_group: float, prefix: str = "") -> np.ndarray:
  """`[rows]` bool: binary tests whose events or non-events (`n x rate`) on a side of the `prefix` half are small,
  tests of a count measure (scale "count": whole numbers >= 0) whose events (`n x mean`) on a side are, and tests
  of a measure with few values (the `FEW_VALUES` column) whose cases with one value on a side are
  (`value_counts`)."""
  small = np.zeros(len(table), bool)
  binary, count = _binary(table), _count(table)
  for side in ("group", "rest"):
    n, rate = _numbers(table, f"{prefix}n_{side}"), _numbers(table, f"{prefix}mean_{side}")
    with np.errstate(invalid="ignore"):
      small |= _small_cells(n * rate, min_group) & (binary | count)
      small |= _small_cells(n * (1.0 - rate), min_group) & binary
    small |= _small_cells(_value_cases(table, side, prefix), min_group).any(axis=1)
    small |= pinned_small(table, side, min_group, prefix)
  return small


FEW_VALUES = "few_values"  # optional column: the values of a measure with few of them (`CubeMeta.few_values`), or None


def _value_cases(table: pd.DataFrame, side: str, prefix: str) -> np.ndarray:
  """`[rows, MOST_FEW_VALUES]` float: a side's cases with each value of its measure's `FEW_VALUES`: solved
  (`value_counts`, up to three values with a variance), or where they are not, each value's count that every
  whole-count solution gives alike (`_determined`); NaN where the row has no such values, is binary (its own
  rule) or case-mix adjusted (scale "ratio": its means are not the values'), where solutions differ, and past its
  measure's number of values."""
  out = np.full((len(table), MOST_FEW_VALUES), np.nan)
  if FEW_VALUES not in table.columns:
    return out
  values = _few_values(table)
  values[values.map(lambda v: v is not None and len(v) > MOST_VALUES)] = None  # `_determined`'s
  for few in set(values.dropna()):
    rows = values.map(lambda v, few=few: v == few).to_numpy(bool)
    out[rows, : len(few)] = value_counts(table[rows], few, side, prefix)
  for i, sums in _whole_count_sides(table, side, prefix):
    out[i, : len(sums[0])] = _determined(*sums)
  return out


def _few_values(table: pd.DataFrame) -> pd.Series:
  """`[rows]` each row's measure's few values (`FEW_VALUES`, a tuple of floats), None where it has none or its test
  is binary (its own rule) or case-mix adjusted (scale "ratio": its means are not the values')."""
  values = table[FEW_VALUES].map(_few)
  values[_binary(table) | _scale_is(table, "ratio")] = None
  return values


def pinned_small(table: pd.DataFrame, side: str, min_group: float, prefix: str = "") -> np.ndarray:
  """`[rows]` bool: sides ("group" or "rest") of the `prefix` half whose shown numbers leave a value of the measure's
  few values (`FEW_VALUES`) between 1 and `disclosure_limit - 1` cases in every way whole non-negative counts can
  give them: the side's rows `n`, sum `n x mean` and, where its variance or interval is shown, sum of squares
  (`value_counts`' moments) constrain the counts, and where those do not solve them (four or more values, or three
  without a variance) integer programming (`_pinned`) looks for counts with that value at 0 and at the limit or
  more; a side where neither exists is small. Rows with at most three values and a variance are
  `value_counts`'."""
  out = np.zeros(len(table), bool)
  limit = disclosure_limit(min_group)
  for i, sums in _whole_count_sides(table, side, prefix):
    out[i] = _pinned(*sums, limit)
  return out


def _whole_count_sides(table: pd.DataFrame, side: str, prefix: str):
  """`(row, (values, n, total, squares))` of each row whose side's few values `value_counts` does not solve (four to
  `MOST_FEW_VALUES` values, or three without a shown variance) and whose rows and mean are shown: the sums whole
  counts must give (`squares` None where no variance or interval is shown)."""
  if FEW_VALUES not in table.columns or not len(table):
    return
  n, total, squares = side_sums(table, side, prefix)
  for i, few in enumerate(_few_values(table)):
    if few is None or not np.isfinite(n[i]) or not np.isfinite(total[i]) or not 2 <= len(few) <= MOST_FEW_VALUES:
      continue
    shown = float(squares[i]) if np.isfinite(squares[i]) else None
    if len(few) <= MOST_VALUES and (shown is not None or len(few) <= 2):
      continue  # solved by `value_counts`
    yield i, (few, int(round(n[i])), float(total[i]), shown)


class _WholeCounts:
  """Whole counts `c >= 0` of `values` with `sum(c) = n`, `sum(c x values) = total` and (unless None) `sum(c x
  values^2) = squares`: HiGHS's MILP under scipy finds one with chosen bounds on one value's count (`find`).

  Whole values give whole sums, met exactly (within 2e-7 of their size where that is wider than 0.49: the float32
  sums' error); other values (logs) within 2e-7 of their size. `moves` (`_moves`, both ways; whole values only)
  are the whole vectors that keep the sums, along which other solutions are found without the solver; `witness`
  is one solution, None where the shown numbers allow none. One per side's sums (`_whole_counts`)."""

  def __init__(self, values: tuple[float, ...], n: int, total: float, squares: float | None):
    v = np.asarray(values, float)
    whole = bool(np.all(v == np.round(v)))
    rows = [np.ones_like(v), v] + ([v**2] if squares is not None else [])
    target = np.array([n, total] + ([squares] if squares is not None else []), float)
    # The statistics' float32 sums leave the shown sums ~1e-7 of their size off (0.001 at 20,000 rows): met within
    # 2e-7 of their size, and whole values' sums, whole numbers, within 0.49 where that is wider. Wider lets
    # through what an attacker rounding the exact sums pins (a review: 1e-6 of a sum of 2,070,002 admitted counts
    # 2 units off and cleared 2 cases the exact sums pinned); narrower than the true error finds no counts at all,
    # which `_pinned` hides.
    slack = np.maximum(0.49 if whole else 1e-9, 2e-7 * np.abs(target))
    target = np.where(whole & (slack < 0.5), np.round(target), target)
    slack[0] = 0.0
    self.k, self.n = len(v), n
    self.system = optimize.LinearConstraint(np.stack(rows), target - slack, target + slack)
    one_way = _moves(values, squares is not None) if whole else None
    self.moves = None if one_way is None else np.concatenate([one_way, -one_way])
    self.witness = self.find()

  def find(self, j: int | None = None, lowest: float = 0.0, highest: float | None = None) -> np.ndarray | None:
    """A solution with value `j`'s count in `[lowest, highest]` (any where `j` is None), or None where none is."""
    lb, ub = np.zeros(self.k), np.full(self.k, float(self.n))
    if j is not None:
      lb[j], ub[j] = lowest, float(self.n) if highest is None else min(highest, float(self.n))
      if lb[j] > ub[j]:  # a side of fewer rows than the limit cannot hold that many
        return None
    with _solver_output_dropped():
      found = optimize.milp(
        np.zeros(self.k), constraints=self.system, integrality=np.ones(self.k), bounds=optimize.Bounds(lb, ub)
      )
    return np.round(found.x) if found.status == 0 else None


@functools.lru_cache(maxsize=4096)
def _whole_counts(values: tuple[float, ...], n: int, total: float, squares: float | None) -> _WholeCounts:
  """`_WholeCounts(values, n, total, squares)`, made once for `_pinned` and `_determined` (its witness is a MILP)."""
  return _WholeCounts(values, n, total, squares)


@functools.lru_cache(maxsize=4096)
def _pinned(values: tuple[float, ...], n: int, total: float, squares: float | None, limit: int) -> bool:
  """Whether every solution of `_WholeCounts(values, n, total, squares)` has some value's count in `[1, limit)`.

  One solution (the witness) clears every value whose count there is 0 or at least `limit`; each other value is
  cleared by a solution with its count 0 or at least `limit`, found by repeating one move (`_moved_clear`: no
  solver, the usual way for a side of many rows) or else by the MILP, and a value none clears is pinned. Shown
  numbers that no whole counts give (which real data cannot produce) count as pinned: hidden, not guessed.
  """
  sums = _whole_counts(values, n, total, squares)
  witness = sums.witness
  if witness is None:
    return True
  for j in np.flatnonzero((witness >= 1) & (witness < limit)):
    if sums.moves is not None and _moved_clear(witness, int(j), sums.moves, limit):
      continue
    if sums.find(int(j), 0.0, 0.0) is None and sums.find(int(j), float(limit)) is None:
      return True
  return False


@functools.lru_cache(maxsize=4096)
def _determined(values: tuple[float, ...], n: int, total: float, squares: float | None) -> tuple[float, ...]:
  """Each value's count where every solution of `_WholeCounts(values, n, total, squares)` gives it the same, NaN
  where two differ (or none exists): what a subtraction between cohorts can use (`_value_cases`).

  A value is free where one move from a solution (`_moves`, either way) keeps every count >= 0 and changes it, or
  where the MILP finds a solution with it below or above the first one's (every value that solution changes is
  free too); else it is determined."""
  sums = _whole_counts(values, n, total, squares)
  witness = sums.witness
  if witness is None:
    return (np.nan,) * len(values)
  free = np.zeros(len(values), bool)
  if sums.moves is not None and len(sums.moves):
    applies = ((witness + sums.moves) >= 0).all(axis=1)
    free |= ((sums.moves != 0) & applies[:, None]).any(axis=0)
  for j in range(len(values)):
    if free[j]:
      continue
    for lowest, highest in ((0.0, witness[j] - 1.0), (witness[j] + 1.0, None)):
      other = sums.find(j, lowest, highest)
      if other is not None:
        free |= other != witness
        break
  return tuple(np.where(free, np.nan, witness))


@contextlib.contextmanager
def _solver_output_dropped():
  """The process's standard output (file descriptor 1) sent to the null device meanwhile: HiGHS, under scipy's
  `milp`, prints a debug line of its own there on some problems ("HighsMipSolverData::transformNew...") in the
  middle of a report's console output. C's buffer is flushed before the descriptor comes back (a review: `puts`
  kept the line in it when the output was a file or a pipe, and wrote it after), and one caller at a time swaps
  it (two overlapping left it on the null device). A process without a file descriptor 1 (closed: `>&-`) has
  nothing to keep clean."""
  with _OUTPUT_SWAP:
    if sys.stdout is not None:
      sys.stdout.flush()
    try:
      saved = os.dup(1)
    except OSError:
      saved = None
    if saved is None:
      yield
      return
    try:
      with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
        yield
    finally:
      _flush_c_output()
      os.dup2(saved, 1)
      os.close(saved)


_OUTPUT_SWAP = threading.RLock()


def _flush_c_output() -> None:
  """C's `fflush(NULL)`: every stdio buffer of the process written out now (where the C library can be found)."""
  with contextlib.suppress(OSError, AttributeError, TypeError):  # no C library by that name (Windows)
    ctypes.CDLL(None).fflush(None)


@functools.lru_cache(maxsize=64)
def _moves(values: tuple[float, ...], squares: bool) -> np.ndarray:
  """`[moves, len(values)]` int: whole vectors that leave the rows, the sum and (with `squares`) the sum of squares
  of counts of whole `values` unchanged: for each set of 3 (4 with squares) values, the divided-difference weights
  `1 / prod(u_i - u_l)` scaled to coprime whole numbers (for 0, 1, 2, 3: -1, 3, -3, 1)."""
  size = 4 if squares else 3
  out = []
  for subset in itertools.combinations(range(len(values)), size):
    u = [int(values[i]) for i in subset]
    weights = [fractions.Fraction(1, math.prod(u[i] - u[m] for m in range(size) if m != i)) for i in range(size)]
    scale = math.lcm(*(w.denominator for w in weights))
    whole = [int(w * scale) for w in weights]
    common = math.gcd(*whole)
    move = np.zeros(len(values), np.int64)
    move[list(subset)] = [w // common for w in whole]
    out.append(move)
  return np.array(out, np.int64).reshape(-1, len(values))


def _moved_clear(counts: np.ndarray, j: int, moves: np.ndarray, limit: int) -> bool:
  """Whether repeating one of `moves` (`_WholeCounts.moves`: both ways) from `counts` gives whole counts >= 0 with
  value `j`'s at `limit` or more, or at exactly 0: another way the shown numbers allow, with that value's count not
  small."""
  up = moves[moves[:, j] > 0]
  times = -(-(limit - counts[j]) // up[:, j])
  if ((counts + times[:, None] * up) >= 0).all(axis=1).any():
    return True
  down = moves[moves[:, j] < 0]
  down = down[counts[j] % -down[:, j] == 0]
  times = counts[j] // -down[:, j]
  return bool(((counts + times[:, None] * down) >= 0).all(axis=1).any())


def _few(values) -> tuple[float, ...] | None:
  """A row's `FEW_VALUES` (a tuple, list or array of them) as a tuple of floats; None where it holds none."""
  if isinstance(values, (tuple, list, np.ndarray)) and np.ndim(values) == 1 and len(values):
    return tuple(float(v) for v in values)
  return None


def value_counts(table: pd.DataFrame, values: tuple, side: str, prefix: str = "") -> np.ndarray:
  """`[rows, len(values)]` float: the cases with each of a measure's few `values` (at most 3, on the test scale:
  logs for a log-scale measure) on a side ("group" or "rest") of the `prefix` half, as its shown numbers give
  them: the rows `n`, the sum `n x mean` and, with three values, the sum of squares `(n - 1) x var + n x mean^2`
  (mean and variance on the test scale) solve the values' Vandermonde system. The variance is the side's `var_`
  column, or where that is blank its 95% interval's (`n x (half width / side_quantile(n))^2`); NaN where what is shown does
  not determine the cases."""
  v = np.asarray(values, float)
  if not 1 <= len(v) <= MOST_VALUES:
    raise ValueError(f"value_counts takes 1 to {MOST_VALUES} values, got {len(v)}")
  system = v[None, :] ** np.arange(len(v))[:, None]  # [power, value]: row k sums value^k over the cases
  return np.linalg.solve(system, np.stack(side_sums(table, side, prefix)[: len(v)])).T


def side_sums(table: pd.DataFrame, side: str, prefix: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`([rows] n, total, squares)` of a side ("group" or "rest") of the `prefix` half on the test scale (logs for a
  log-scale test), as its shown numbers give them: its rows, the sum of its values `n x mean` and their sum of
  squares `(n - 1) x var + n x mean^2`, the variance its `var_` column or, where that is blank, its 95% interval's
  (`interval_variance`); NaN where they are not shown (`value_counts`, `_whole_count_sides`)."""
  log = _scale_is(table, "log")

  def back(x):  # shown on the natural scale, tested on the log one
    return np.where(log, np.log(x), x)

  with np.errstate(invalid="ignore", divide="ignore"):
    n, mean = _numbers(table, f"{prefix}n_{side}"), back(_numbers(table, f"{prefix}mean_{side}"))
    var = _numbers(table, f"{prefix}var_{side}")
    low, high = (back(_numbers(table, f"{prefix}{side}_ci_{end}")) for end in ("low", "high"))
    var = np.where(np.isfinite(var), var, interval_variance(n, low, high))
    return n, n * mean, (n - 1.0) * var + n * mean**2


def interval_variance(n, low, high) -> np.ndarray:
  """The variance a side's 95% interval of its mean (`low` to `high`, `side_quantile`'s t) gives back."""
  return np.asarray(n, float) * ((np.asarray(high, float) - np.asarray(low, float)) / (2.0 * side_quantile(n))) ** 2


def shown_variance(table: pd.DataFrame, side: str, prefix: str = "") -> np.ndarray:
  """`[rows]` a side's ("group", "rest") variance on the test scale as the `prefix` half's shown numbers give it: its
  `var_` column, or where that is blank its 95% interval's (`interval_variance`; a linear-scale test's, as an
  adjusted run's are); NaN where neither is shown."""
  n, var = _numbers(table, f"{prefix}n_{side}"), _numbers(table, f"{prefix}var_{side}")
  low, high = (_numbers(table, f"{prefix}{side}_ci_{end}") for end in ("low", "high"))
  with np.errstate(invalid="ignore"):
    return np.where(np.isfinite(var), var, interval_variance(n, low, high))


def _small_cells(counts, min_group: float) -> np.ndarray:
  """`is_small_cell` of each count, rounded to a whole count (NaN: nothing shown, nothing to hide)."""
  counts = np.round(np.asarray(counts, float))
  with np.errstate(invalid="ignore"):
    return (counts >= 1) & (counts < disclosure_limit(min_group))


def _scale_is(table: pd.DataFrame, scale: str) -> np.ndarray:
  """`[rows]` bool: the row's test is on `scale` (False without a `scale` column)."""
  return (table["scale"] == scale).to_numpy(bool) if "scale" in table.columns else np.zeros(len(table), bool)


def _binary(table: pd.DataFrame) -> np.ndarray:
  """`[rows]` bool: the row's test is of a binary measure."""
  return _scale_is(table, "binary")


def _count(table: pd.DataFrame) -> np.ndarray:
  """`[rows]` bool: the row's test is of a count measure (`CubeMeta.is_count`), whose `n x mean` are events."""
  return _scale_is(table, "count")


def hide_small_rates(
  table: pd.DataFrame, min_group: float, *, prefixes: tuple[str, ...] = ("", "explore_")
) -> pd.DataFrame:
  """A copy of `table` whose binary tests with a small event count show no statistic that reveals it.

  For each half's column prefix (the confirmation's "", the exploration's
  "explore_"), a binary test's events on a side are `n_<side> x mean_<side>`
  and its non-events `n_<side> x (1 - mean_<side>)` (`small_events`; with
  case-mix adjustment the means are excess rates, so each half also reads
  `RAW_SMALL_EVENTS` or `EXPLORE_RAW_SMALL_EVENTS`, which `confirm_candidates`
  sets from that half's unadjusted rows: within one adjuster stratum every
  expected value is the same, so a binary side's interval gives its variance,
  p(1 - p), and the events back). Where any is a small cell (`is_small_cell`), that half's
  `RATE_STATISTICS` (means, difference, intervals, ratio, z and p, variances)
  become None for every row of the same cohort, protected column and measure
  (otherwise the other groups' rows give the hidden group's events back by
  subtraction from their rests), and the numbers in such a row's `reason`
  are dropped. The counts stay (they are at least the limit, or already
  blank), as do the cohort, group, measure and flags. Other subtractions
  are `hide_remainders`' (within a cohort's tests) and
  `hide_cohort_remainders`' (a cohort less its shown children).

  Args:
    table: report rows (`cohort_table`'s or a discovery run's findings).
    min_group: the run's smallest group (the limit is `disclosure_limit`).
    prefixes: the column prefixes of the halves to check.
  """
  out = table.copy()
  if not len(out) or "scale" not in out.columns:
    return out
  keys = [c for c in ("cohort", "protected", "measure") if c in out.columns]
  block = _block_ids(out, keys) if len(keys) == 3 else None
  limit = disclosure_limit(min_group)
  for prefix in prefixes:
    small = small_events(out, min_group, prefix)
    raw_small = {"": RAW_SMALL_EVENTS, "explore_": EXPLORE_RAW_SMALL_EVENTS}.get(prefix)
    if raw_small in out.columns:
      small |= out[raw_small].fillna(False).to_numpy(bool)
    if block is not None and small.any():
      small = np.isin(block, block[small])
    _blank(
      out,
      small,
      RATE_STATISTICS,
      prefix,
      f"events or non-events (or the cases with one value of the measure) of a group or rest of this block are "
      f"fewer than {limit}",
    )
  return out


HIDDEN = "hidden"  # column of the shown table: why a row's numbers are blank (None where nothing is)
_FILL = ": run the measure on the rows that have it to see them"  # what lifts a missing-values blank
_HALVES = {"": "", "explore_": "exploration half: "}


def _blank(out: pd.DataFrame, rows: np.ndarray, names: tuple[str, ...], prefix: str, why: str | None = None) -> None:
  """Sets the `prefix` half's columns `names` of `rows` to None in place (the confirmation's reason: no numbers),
  and adds `why` to those rows' `HIDDEN` text (once per row; the exploration half's prefixed)."""
  rows = np.asarray(rows, bool)
  columns = [prefix + c for c in names if prefix + c in out.columns]
  if rows.any() and columns:
    out[columns] = out[columns].astype(object)
    out.loc[rows, columns] = None
    if why is not None:
      text = f"{_HALVES.get(prefix, prefix)}{why}"
      before = out[HIDDEN] if HIDDEN in out.columns else pd.Series([None] * len(out), index=out.index, dtype=object)
      added = [_add_reason(b, text) if r else b for b, r in zip(before.tolist(), rows)]
      out[HIDDEN] = pd.Series(added, index=out.index, dtype=object)
  if prefix == "" and rows.any():
    _strip_reason(out, rows)


def _add_reason(before, text: str):
  """`before`'s reasons (None, NaN or "a; b") with `text` added once."""
  if before is None or before != before:
    return text
  return before if text in before.split("; ") else f"{before}; {text}"


def _strip_reason(out: pd.DataFrame, rows: np.ndarray) -> None:
  """Drops the numbers (adjusted p, relative difference) from the `reason` of `rows`, in place."""
  if "reason" not in out.columns:
    return
  reason = out.loc[rows, "reason"].astype(str)
  reason = reason.str.replace(r" \(adjusted p [^)]*\)", "", regex=True)
  out.loc[rows, "reason"] = reason.str.replace(
    r"(relative|standardized) difference \S+ below", r"\1 difference below", regex=True
  )


def _numbers(table: pd.DataFrame, column: str) -> np.ndarray:
  """`[rows]` float: the column as numbers, NaN where blank or absent."""
  if column not in table.columns:
    return np.full(len(table), np.nan)
  return pd.to_numeric(table[column], errors="coerce").to_numpy(float)


def _block_ids(table: pd.DataFrame, keys: list[str]) -> np.ndarray:
  """`[rows]` int: one id per distinct value of `keys`."""
  return table.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()


def remainder_blocks(table: pd.DataFrame, min_group: float, prefix: str = "") -> list[tuple[np.ndarray, bool, str]]:
  """Which rows' numbers give a small count back by subtraction within their own tests (`hide_remainders`).

  Returns `[(rows, counts, why)]`: `[rows]` bool of the rows whose block (cohort, protected column, measure) must
  show no rate statistics, and no counts either where `counts`, in the `prefix` half, with the count that would
  come back (`why`). Besides each block alone: a cohort's rows less the largest count each group shows under any
  measure (rows of the groups not shown, pooled over the protected column's blocks) hides every block of that
  protected column; a group's (or a rest's) largest count over measures less its count under one measure (its
  rows missing that measure, where the other has none missing) hides that measure's block.
  """
  if not len(table) or not {"cohort", "protected", "measure", "group"} <= set(table.columns):
    return []
  limit = disclosure_limit(min_group)
  n_g, n_r = _numbers(table, f"{prefix}n_group"), _numbers(table, f"{prefix}n_rest")
  rows = _numbers(table, f"{prefix}cohort_rows")
  r_g, r_r = _numbers(table, f"{prefix}mean_group"), _numbers(table, f"{prefix}mean_rest")
  binary = _binary(table)
  events_kind = binary | _count(table)
  frame = pd.DataFrame(
    {
      "block": _block_ids(table, ["cohort", "protected", "measure"]),
      "measured": _block_ids(table, ["cohort", "measure"]),
      "column": _block_ids(table, ["cohort", "protected"]),
      "rows": rows,
      "group": table["group"].map(_label).to_numpy(),
      "tested": n_g + n_r,  # the block's rows with the measure (every row of a block gives the same)
      "missing": rows - (n_g + n_r),  # the cohort's rows without the measure
      "n": n_g,
      "rest": n_r,
      "events": np.where(events_kind, n_g * r_g, np.nan),
      "all_events": np.where(events_kind, n_g * r_g + n_r * r_r, np.nan),
      "binary": binary,  # non-events (rows less events) are counts for a 0/1 measure only
    }
  )
  # A measure with few values: the group's cases with each, and the block's (group and rest together).
  cases, rest_cases = _value_cases(table, "group", prefix), _value_cases(table, "rest", prefix)
  for k in range(cases.shape[1]):
    frame[f"cases_{k}"], frame[f"all_cases_{k}"] = cases[:, k], cases[:, k] + rest_cases[:, k]
  found = []
  one = frame.drop_duplicates(["block", "group"])  # a group's row once per block
  by_block = one.groupby("block")
  # Rows of the groups a block does not show (or shows without a count): the tested rows less the shown groups'.
  unshown = by_block["tested"].max() - by_block["n"].sum(min_count=1)
  groups_not_shown = f"the rows of groups not shown (fewer than {limit}) would follow by subtraction"
  found.append((_small_cells(frame["block"].map(unshown), min_group), True, groups_not_shown))
  # Across measures: a group's rows with a measure are at most its rows in the cohort (all of them where the
  # measure has no missing value), so the cohort's rows less each shown group's largest count are the rows of the
  # groups not shown plus rows missing a measure; any other choice of measures leaves more. Every block of that
  # cohort and protected column.
  largest = frame.groupby(["column", "group"])["n"].max().groupby(level="column").sum(min_count=1)
  pooled = frame.groupby("column")["rows"].max() - largest
  pooled_why = f"this cohort's rows outside the shown groups or missing a measure (fewer than {limit}) would follow"
  found.append((_small_cells(frame["column"].map(pooled), min_group), True, pooled_why))
  # Rows of the cohort without the measure: every block of that cohort and measure.
  missing = _small_cells(frame["measured"].map(frame.groupby("measured")["missing"].max()), min_group)
  found.append((missing, True, f"this cohort's rows missing the measure (fewer than {limit}) would follow{_FILL}"))
  # One group (or its rest) under two measures: its count under one less its count under another are its rows
  # missing the second where their rows are nested (a measure recorded wherever another is). Every pair: the block
  # with fewer rows.
  for side in ("n", "rest"):
    sides = frame[["column", "group", "block", side]].dropna().reset_index()
    pairs = sides.merge(sides, on=["column", "group"], suffixes=("", "_other"))
    fewer = pairs.loc[_small_cells(pairs[f"{side}_other"] - pairs[side], min_group), "block"]
    across = frame["block"].isin(fewer).to_numpy()
    found.append((across, True, f"a group's rows missing the measure (fewer than {limit}) would follow{_FILL}"))
  # A binary or count measure's events (a binary one's non-events too) in the groups not shown: the block's events
  # less the shown groups'.
  complete = np.isfinite(one["events"])
  shown = one.assign(
    events=one["events"].where(complete), nonevents=(one["n"] - one["events"]).where(complete & one["binary"])
  )
  shown_by_block = shown.groupby("block")
  all_events = shown_by_block["all_events"].max()
  all_nonevents = (by_block["tested"].max() - all_events).where(by_block["binary"].max().astype(bool))
  totals = [(all_events, shown_by_block["events"].sum()), (all_nonevents, shown_by_block["nonevents"].sum())]
  for k in range(cases.shape[1]):  # a measure with few values: its cases with value k, the same way
    known = np.isfinite(one[f"cases_{k}"])
    totals.append((by_block[f"all_cases_{k}"].max(), one[f"cases_{k}"].where(known).groupby(one["block"]).sum()))
  for total, part in totals:
    small = _small_cells(frame["block"].map(total - part), min_group)
    found.append((small, False, f"events outside the shown groups (fewer than {limit}) would follow by subtraction"))
  return found


def hide_remainders(
  table: pd.DataFrame, min_group: float, *, prefixes: tuple[str, ...] = ("", "explore_")
) -> pd.DataFrame:
  """A copy of `table` in which no small count comes back by subtraction within a cohort's tests.

  Within a block (one cohort, protected column and measure) of one half, every row gives the block's tested rows
  (`n_group + n_rest`), so those rows less the shown groups' `n_group` are the rows of the groups not shown (a
  group under `min_group` is never tested, its rows stay in the rests); `cohort_rows` less the tested rows are
  the cohort's rows without the measure; a group's count under another measure less its count under this one are
  its rows without this measure (where the other has none missing); for a binary or count measure, `n x mean`
  gives the events the same way (and a measure with few values each value's cases, `FEW_VALUES`). Where such a
  remainder is a small cell (`is_small_cell`), that half's counts and
  `RATE_STATISTICS` (rows or missing values) or its `RATE_STATISTICS` (events) become None for every row of the
  block (missing values: every block of the cohort and measure), since the exact means would give the counts back
  too; numbers in such a row's `reason` are dropped and `HIDDEN` says which count would have come back. Run after
  `hide_small_rates` (it reads what that leaves shown). A parent less its shown children is
  `hide_cohort_remainders`' (README, Small cells).
  """
  out = table.copy()
  for prefix in prefixes:
    while True:  # hiding a block can leave another count to subtract from (a group's next largest): to a fixpoint
      before = _shown_cells(out)
      for rows, counts, why in remainder_blocks(out, min_group, prefix):
        if counts:
          _blank(out, rows, COUNT_STATISTICS, prefix, why)
        _blank(out, rows, RATE_STATISTICS, prefix, why)
      if _shown_cells(out) == before:
        break
  return out


def _shown_cells(table: pd.DataFrame) -> int:
  """How many cells of `table` but its reasons (`HIDDEN`) hold a value: blanking only lowers it, so rules repeat
  until it stops falling (a review: with the reasons counted, a hide that blanked 5 numbers and wrote 5 reasons into
  rows already blank left it unchanged, and the rules stopped as if nothing more were hidden)."""
  return int(table.drop(columns=[HIDDEN], errors="ignore").notna().to_numpy().sum())


RAW_REST_EVENTS = "raw_rest_events"  # optional column: an adjusted run's unadjusted rest events (diff / relative_diff)
# Optional columns, `[prefix]raw_<side>_events`: an adjusted run's unadjusted events of a side of a binary test where
# that side's rows lie in one adjuster stratum (every expected value the same), so that its shown variance (or its
# interval's) is its rate's, p (1 - p), and gives the events back; NaN elsewhere (`confirm_candidates`).
RAW_GROUP_EVENTS = "raw_group_events"
EXPLORE_RAW_GROUP_EVENTS = "explore_raw_group_events"
EXPLORE_RAW_REST_EVENTS = "explore_raw_rest_events"
_RAW_EVENTS = (RAW_REST_EVENTS, RAW_GROUP_EVENTS, EXPLORE_RAW_GROUP_EVENTS, EXPLORE_RAW_REST_EVENTS)
_CASES = tuple(f"cases_{k}" for k in range(MOST_FEW_VALUES))  # a measure with few values: a side's cases of value k
_COHORT_TOTALS = ("events", "nonevents") + _CASES  # a side's quantities whose group + rest is the cohort's own
_EVENT_QUANTITIES = _COHORT_TOTALS + tuple("rest_" + c for c in _COHORT_TOTALS)


def _cohort_of(filters) -> tuple | None:
  """A cohort's filters as a sorted tuple of (column, value); None when the row holds no filters mapping."""
  return tuple(sorted(filters.items())) if isinstance(filters, dict) else None


def _label(value) -> str:
  """A key column's value as text, NaN included (pandas keeps NaN through `astype(str)`)."""
  return "\x00missing" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


class _Tests(NamedTuple):
  """A findings table's tests as the cohort rules read them, for one half (`_tests`)."""

  keys: list[tuple]  # [rows] (cohort (`_cohort_of`; None without filters), protected, group, measure, pair)
  rows: np.ndarray  # [rows] the cohort's rows
  n: dict[str, np.ndarray]  # side ("group", "rest") -> [rows] its rows
  rate: dict[str, np.ndarray]  # side -> [rows] its mean (a rate for a binary measure)
  cases: dict[str, np.ndarray]  # side -> [rows, MOST_FEW_VALUES] its cases with each value (`_value_cases`)
  raw: dict[str, np.ndarray]  # side -> [rows] an adjusted run's unadjusted events the row gives back (`_raw_events`)
  binary: np.ndarray  # [rows] bool
  count: np.ndarray  # [rows] bool


def _tests(table: pd.DataFrame, prefix: str) -> _Tests:
  """The `prefix` half's shown numbers of `table`'s tests, read once for `_cohort_quantities` and
  `_group_subcohorts`. A column of two groups tests one: its rest is the other group (`reference`), the key's
  `pair` (None for a column of more groups)."""
  other = table["reference"] if "reference" in table.columns else pd.Series([None] * len(table), index=table.index)
  keys = [
    (_cohort_of(filters), p, g, m, _label(h) if isinstance(h, str) and h != "rest" else None)
    for filters, p, g, m, h in zip(
      table["filters"], table["protected"].map(_label), table["group"].map(_label), table["measure"].map(_label), other
    )
  ]
  sides = ("group", "rest")
  return _Tests(
    keys=keys,
    rows=_numbers(table, prefix + "cohort_rows"),
    n={side: _numbers(table, f"{prefix}n_{side}") for side in sides},
    rate={side: _numbers(table, f"{prefix}mean_{side}") for side in sides},
    cases={side: _value_cases(table, side, prefix) for side in sides},
    raw={side: _raw_events(table, side, prefix) for side in sides},
    binary=_binary(table),
    count=_count(table),
  )


def _raw_events(table: pd.DataFrame, side: str, prefix: str) -> np.ndarray:
  """`[rows]` an adjusted run's unadjusted events of a side of the `prefix` half that the row's shown numbers give
  back, NaN elsewhere (the columns themselves are never shown, so once the rules blank a block's statistics these
  events are no longer a shown count: they were read as one, and the several-steps rule went on hiding counts for
  them). The confirmation half's rest events (`RAW_REST_EVENTS`) where the row shows a relative difference or its
  interval (they divide by the unadjusted rest rate); a side's events where its rows lie in one adjuster stratum
  (`[prefix]raw_<side>_events`, a review: 5 events of `asa=1 & proc=E`'s group came back as `asa=1`'s, which its
  variance gave, less its other procedures') where its variance is shown (`shown_variance`)."""
  if prefix == "" and side == "rest":  # every adjusted binary test's rest events: the relative difference gives them
    gives = np.zeros(len(table), bool)
    for column in ("relative_diff", "relative_ci_low", "relative_ci_high"):
      gives |= np.isfinite(_numbers(table, column))
    return np.where(gives, _numbers(table, RAW_REST_EVENTS), np.nan)
  return np.where(
    np.isfinite(shown_variance(table, side, prefix)), _numbers(table, f"{prefix}raw_{side}_events"), np.nan
  )


def _cohort_quantities(tests: _Tests) -> dict[tuple, dict[tuple, float]]:
  """`{cohort: {quantity: value}}` of a half's shown counts (`_tests`; `_cohort_of` the cohort).

  Quantities: `("rows",)` the cohort's rows; `("tested", m)` its rows with measure m; `("group", p, g, m)` and
  `("rest", p, g, m)` a test's sides' rows; `("group_rows", p, g)` the largest count group g shows under any
  measure (its rows, where a measure has no missing value); for a binary measure `("events", ...)`,
  `("nonevents", ...)`, `("rest_events", ...)` and `("rest_nonevents", ...)` (for an adjusted run's, the
  unadjusted events its numbers give back, `_raw_events`); for a count
  measure `("events", ...)` and `("rest_events", ...)`; for a measure with few values (`FEW_VALUES`)
  `("cases_k", ...)` and `("rest_cases_k", ...)`, its sides' cases with its k-th value; and the cohort's own
  `("all_events", m)`, `("all_nonevents", m)` and `("all_cases_k", m)`, a test's group and rest together (the same
  whichever group it tests, so a parent's test of one group less its children's tests of another give a child's).
  """
  out: dict[tuple, dict[tuple, float]] = {}
  rows, n_g, n_r, r_g, r_r = tests.rows, tests.n["group"], tests.n["rest"], tests.rate["group"], tests.rate["rest"]
  raw, binary, count = tests.raw, tests.binary, tests.count
  cases, rest_cases = tests.cases["group"], tests.cases["rest"]
  for i, (cohort, p, g, m, pair) in enumerate(tests.keys):
    if cohort is None:
      continue
    values = out.setdefault(cohort, {})
    found = {("rows",): rows[i], ("tested", m): n_g[i] + n_r[i], ("group", p, g, m): n_g[i], ("rest", p, g, m): n_r[i]}
    if pair is not None:  # the other group of two: the test shows its rows as well
      found |= {("group", p, pair, m): n_r[i], ("rest", p, pair, m): n_g[i]}
    if binary[i]:
      found |= {
        ("events", p, g, m): n_g[i] * r_g[i],
        ("nonevents", p, g, m): n_g[i] * (1.0 - r_g[i]),
        ("rest_events", p, g, m): n_r[i] * r_r[i],
        ("rest_nonevents", p, g, m): n_r[i] * (1.0 - r_r[i]),
      }
    elif count[i]:  # a count measure's events; its rows without an event are no count that n and mean give
      found |= {("events", p, g, m): n_g[i] * r_g[i], ("rest_events", p, g, m): n_r[i] * r_r[i]}
    else:  # an adjusted binary test: the unadjusted events its numbers give back (`_raw_events`)
      for side, n_side, name in (("group", n_g, "events"), ("rest", n_r, "rest_events")):
        if np.isfinite(raw[side][i]):
          found |= {
            (name, p, g, m): raw[side][i],
            (name.replace("events", "nonevents"), p, g, m): n_side[i] - raw[side][i],
          }
    for k in range(cases.shape[1]):  # a measure with few values: its sides' cases with each (`FEW_VALUES`)
      found |= {(f"cases_{k}", p, g, m): cases[i, k], (f"rest_cases_{k}", p, g, m): rest_cases[i, k]}
    # A test's group and rest together are the cohort's own, whichever group it tests: its events (non-events) and
    # cases with each value under measure m, as `("tested", m)` is its rows.
    for name in _COHORT_TOTALS:
      side, rest = found.get((name, p, g, m), np.nan), found.get(("rest_" + name, p, g, m), np.nan)
      found[("all_" + name, m)] = side + rest
    for quantity, value in found.items():
      if np.isfinite(value):
        values.setdefault(quantity, float(value))
    if np.isfinite(n_g[i]):
      values[("group_rows", p, g)] = max(values.get(("group_rows", p, g), 0.0), float(n_g[i]))
    if pair is not None and np.isfinite(n_r[i]):  # the other group of two: its largest count too
      values[("group_rows", p, pair)] = max(values.get(("group_rows", p, pair), 0.0), float(n_r[i]))
  return out


def _group_subcohorts(tests: _Tests, values: dict[tuple, dict[tuple, float]]) -> dict[tuple[tuple, tuple], list[tuple]]:
  """Adds to `values` the counts that a cohort's test of a group shows of the sub-cohort of that group, and returns
  `{(sub-cohort, quantity): [(cohort, test quantity), ...]}`: the tests that show them, with the quantity of theirs
  to hide (`("group", p, g, m)` for its rows with m, `("group_rows", p, g)` for its rows, `("events", p, g, m)` or
  `("cases_k", p, g, m)` for the others).

  c's test of group g of protected column p under measure m shows the rows of c & p = g that have m (`n_group`;
  for a column of two groups its rest is the other group's, `n_rest`) and, where shown, their events and cases of
  each value; where the measure is complete in c (the sides hold all of c's rows), its rows. That sub-cohort is the
  child of c on p and of every c less one filter & p = g, a shown cohort or
  another test's sub-cohort (a service audit: 40 rows of `procedure=cabg & sex=M` less the 35 men of its test in
  `procedure=cabg & site=academic` gave 5 men at the other sites; two group tests' counts 13 and 12 gave 1), so
  `cohort_remainders` compares them as it compares shown cohorts. A quantity a cohort already shows is kept
  (the same rows give the same count)."""
  out: dict[tuple[tuple, tuple], list[tuple]] = {}
  n, rows, rate, cases, binary, count = tests.n, tests.rows, tests.rate, tests.cases, tests.binary, tests.count
  for i, (cohort, p, g, m, pair) in enumerate(tests.keys):
    if cohort is None or any(column == p for column, _ in cohort):
      continue
    sides = [("group", g)] + ([("rest", pair)] if pair is not None else [])  # the other group of two: the rest
    # Where the test's sides hold all of c's rows (its measure has no missing value there), a side's count is its
    # sub-cohort's rows, comparable with any measure's (a review: a child cohort's 35 rows less a sub-cohort's 40).
    total = rows[i] - n["group"][i] - n["rest"][i]
    complete = bool(np.isfinite(total)) and round(total) == 0
    for side, group in sides:
      found = {("tested", m): n[side][i]}
      if complete:
        found[("rows",)] = n[side][i]
      with np.errstate(invalid="ignore"):
        if binary[i]:
          found |= {
            ("all_events", m): n[side][i] * rate[side][i],
            ("all_nonevents", m): n[side][i] * (1 - rate[side][i]),
          }
        elif count[i]:
          found[("all_events", m)] = n[side][i] * rate[side][i]
        elif np.isfinite(tests.raw[side][i]):  # an adjusted binary test's unadjusted events (`_raw_events`)
          found |= {("all_events", m): tests.raw[side][i], ("all_nonevents", m): n[side][i] - tests.raw[side][i]}
      for k in range(cases[side].shape[1]):
        found[(f"all_cases_{k}", m)] = cases[side][i, k]
      sub = tuple(sorted(cohort + ((p, group),)))
      for quantity, value in found.items():
        if np.isfinite(value):
          values.setdefault(sub, {}).setdefault(quantity, float(value))
          # Its rows hide the test's counts and statistics; its events or cases of a value, its statistics.
          if quantity[0] == "rows":  # shown by every measure's test of p in c: those blocks
            source = ("group_rows", p, g)
          elif quantity[0] == "tested":
            source = ("group", p, g, m)
          else:
            source = (quantity[0].removeprefix("all_"), p, g, m)
          out.setdefault((sub, quantity), []).append((cohort, source))
  return out


def cohort_remainders(
  table: pd.DataFrame, min_group: float, prefix: str = "", *, total_rows: float | None = None
) -> list[tuple[tuple, tuple, str | None]]:
  """`[(cohort, quantity, column)]` to hide so that no small count comes back as a cohort's count less its shown children's
  (column None: a cohort's test of a group against the sub-cohort of that group, `_group_cohort_remainders`).

  For a shown cohort and a column it does not filter, its count less the sum of its shown children's on that
  column (`_cohort_quantities`) is the count of its rows whose value of the column no shown child has. Where that
  is a small cell, the smallest child count of at least the limit is hidden (the remainder then includes it), or
  the parent's when no child's is that large. Counts are never negative, so hiding a child never makes another
  such remainder smaller; hiding a parent's block can (a group's largest count falls to its next), which
  `hide_small_cells` meets by repeating the rules. `total_rows`: the half's rows where they are shown apart from
  the table (a report's summary gives each half's size): the whole table is then a shown cohort, the parent of
  the cohorts of one filter, even when it has no row of its own. The cohorts include those of a shown group's
  rows (c & p = g, whose counts c's test of g shows: `_group_subcohorts`); a count to hide there hides that test's
  block. A child's rows with a measure that its parent shows no test of are compared with the parent's rows.
  """
  if not len(table) or not {"filters", "protected", "group", "measure"} <= set(table.columns):
    return []
  limit = disclosure_limit(min_group)
  tests = _tests(table, prefix)
  values = _cohort_quantities(tests)
  if total_rows is not None and np.isfinite(total_rows):
    values.setdefault((), {}).setdefault(("rows",), float(total_rows))
  shown_by = _group_subcohorts(tests, values)
  children: dict[tuple, list[tuple]] = {}
  for cohort in values:
    for item in cohort:
      parent = tuple(x for x in cohort if x != item)
      if parent in values:
        children.setdefault((parent, item[0]), []).append(cohort)
  hide = []
  for (parent, column), kids in children.items():
    quantities = dict(values[parent])
    if ("rows",) in quantities:  # its rows less its children's rows with a measure: those without it, or elsewhere
      for kid in kids:
        for quantity in values[kid]:
          if quantity[0] == "tested" and quantity not in quantities:
            quantities[quantity] = quantities[("rows",)]
    for quantity, total in quantities.items():
      shown = [(values[k][quantity], k) for k in kids if quantity in values[k]]
      if not is_small_cell(round(total - sum(v for v, _ in shown)), min_group):
        continue
      large = sorted((v, k) for v, k in shown if v >= limit)
      if large:
        hide.append((large[0][1], quantity, column))
      else:  # the parent's count: its rows where that is what it shows of the quantity
        hide.append((parent, quantity if quantity in values[parent] else ("rows",), column))
  hide += _group_cohort_remainders(values, min_group)
  # A count that a test in another cohort shows (the rows of a group's sub-cohort) is hidden there: its block.
  return hide + [(c, q, column) for cohort, quantity, column in hide for c, q in shown_by.get((cohort, quantity), ())]


def _group_cohort_remainders(
  values: dict[tuple, dict[tuple, float]], min_group: float
) -> list[tuple[tuple, tuple, None]]:
  """`[(parent, quantity, column)]`: a cohort filtered on a protected column's group (`sex = M` within c) holds that
  group's rows of c, so its rows less c's test of the group under a measure are the group's rows of c missing the
  measure, and c's rows less its rows and the test's rest are the other groups' rows missing it (a cohort's rows are
  shown apart from its tests, where those are hidden). Where either is a small cell, c's test of that group and
  measure (`("group", p, g, m)`, its block) is hidden, as a group's rows missing a measure are in `hide_remainders`."""
  hide = []
  for cohort, mine in values.items():
    rows = mine.get(("rows",))
    if rows is None:
      continue
    for column, value in cohort:
      parent = tuple(x for x in cohort if x != (column, value))
      if parent not in values:
        continue
      theirs, group = values[parent], _label(value)
      for quantity, n in theirs.items():
        if quantity[0] != "group" or quantity[1:3] != (column, group):
          continue
        left = [rows - n]
        rest = theirs.get(("rest",) + quantity[1:])
        if ("rows",) in theirs and rest is not None:
          left.append(theirs[("rows",)] - rows - rest)
        if any(is_small_cell(round(x), min_group) for x in left):
          hide.append((parent, quantity, None))
  return hide


DERIVED = "\x00derived"  # `cohort_remainders`' column slot for a count of `derived_remainders`
DOMAIN_VALUES = 5  # `derived_remainders` knows the values of a column of at most this many (`derivation.closure`)
DERIVED_ROUNDS = 60  # `derived_remainders`' closures per call at most; then it hides every count the chains used


def derived_remainders(
  table: pd.DataFrame,
  min_group: float,
  prefix: str = "",
  *,
  total_rows: float | None = None,
  categories: dict[str, tuple] | None = None,
) -> list[tuple[tuple, tuple, str]]:
  """`[(cohort, quantity, DERIVED)]` to hide (in `cohort_remainders`' terms) so that no small count follows from the
  `prefix` half's shown counts by a chain of subtractions and additions (`derivation.closure`; a disclosure audit:
  `site = b`'s 87 rows less `site = b & race = W`'s 52 less the 26 of the rest of race W's test in
  `site = b & sex = M` gave 9 non-white women at site b, a rule of one step at a time seeing none of it).

  The shown counts: each cohort's rows; each test's sides' rows with its measure (group `p = g`, rest `p != g`, or
  the other group of two) and, for a binary or count measure, their events (a binary one's non-events follow from
  its rows); an adjusted run's unadjusted events that its numbers give back (`_raw_events`); `total_rows`, the half's rows where
  they are shown. A test whose sides hold every row of its cohort (the measure has no missing value there) makes
  its measure's counts within that cohort rows too. For the small derived counts, few of the shown counts they
  came from are hidden: one that blanks no confirmed finding's numbers where a chain has one (`_confirmed_blocks`),
  then the one most of their chains share, a test's count before a cohort's rows, the smallest first, then the next
  for the chains it leaves (the half's size is never hidden); the closure then runs again
  without what those hide, and the table's rules after it (`hide_small_cells`). Not followed: counts of a measure's few values (`FEW_VALUES`,
  which `hide_remainders` checks one step at a time) and, but for a column of at most `DOMAIN_VALUES` values
  whose labels `categories` (`{column: labels}`, the cube's) gives, sets that no one condition describes
  (`race in (A, B)`).
  """
  if not len(table) or not {"filters", "protected", "group", "measure"} <= set(table.columns):
    return []
  tests = _tests(table, prefix)
  n, rate = tests.n, tests.rate
  shown: dict[tuple, tuple[float, frozenset]] = {}
  sources: list[tuple[tuple, tuple] | None] = []
  values: list[float] = []

  def show(kind, rows, value, source):
    if not np.isfinite(value) or (kind, rows) in shown:
      return
    sources.append(source)
    values.append(float(value))
    shown[(kind, rows)] = (float(value), frozenset([len(sources) - 1]))

  if total_rows is not None:
    show(("rows",), (), float(total_rows), None)
  complete: dict[str, set[tuple]] = {}  # measure -> cohorts (`_cohort_of`) where it has no missing value
  sides = []
  for i, (cohort, p, g, m, pair) in enumerate(tests.keys):
    if cohort is None:
      continue
    where = derivation.rows_set({column: ("=", _label(value)) for column, value in cohort})
    show(("rows",), where, tests.rows[i], (cohort, ("rows",)))
    if any(column == p for column, _ in cohort):
      continue
    if round(float(np.nan_to_num(tests.rows[i] - n["group"][i] - n["rest"][i], nan=1.0))) == 0:
      complete.setdefault(m, set()).add(cohort)
    rest = ("=", pair) if pair is not None else ("!", (g,))
    for side, condition in (("group", ("=", g)), ("rest", rest)):
      rows = tuple(sorted(where + ((p, condition),)))
      quantity = (side, p, g, m)
      sides.append((m, cohort, rows, n[side][i], (cohort, quantity)))
      show(("tested", m), rows, n[side][i], (cohort, quantity))
      events = ("events" if side == "group" else "rest_events", p, g, m)
      with np.errstate(invalid="ignore"):
        if tests.binary[i] or tests.count[i]:
          show(("events", m), rows, n[side][i] * rate[side][i], (cohort, events))
        elif np.isfinite(tests.raw[side][i]):  # an adjusted binary test's unadjusted events (`_raw_events`)
          show(("events", m), rows, tests.raw[side][i], (cohort, events))
  for m, cohort, rows, value, source in sides:  # a measure complete in a cohort holding these rows: they are rows
    filters = list(cohort)
    if any(
      tuple(sorted(part)) in complete.get(m, ())
      for k in range(len(filters) + 1)
      for part in itertools.combinations(filters, k)
    ):
      show(("rows",), rows, value, source)
  raw = np.isfinite(tests.raw["group"]) | np.isfinite(tests.raw["rest"])
  binary = {key[3] for key, b in zip(tests.keys, tests.binary | raw) if b}
  relations = [(("rows",), ("tested", m), ("missing", m)) for m in {key[3] for key in tests.keys}]
  relations += [(("tested", m), ("events", m), ("nonevents", m)) for m in binary]
  # Few hides for many chains: the shown count that most small ones came from, a test's before a cohort's rows, the
  # smallest first, and the next for those it leaves; then the closure again without what those hide (a cohort's
  # rows: everything it shows; a test's count: its block), until no chain is left (the table's own rules then run
  # again, `hide_small_cells`).
  kept = _confirmed_blocks(table, tests)
  hide: list[tuple] = []
  limit = disclosure_limit(min_group)
  # Any set of a column's values is one condition where its values are known: of a column of few values only, since
  # the sets a chain can reach grow as 2 ** values (a 1,857-candidate table: columns of up to 2 values 12 s, 5 values
  # 21 s, every column's, up to 12, 108 s, hiding no more than with 5).
  domains = {c: v for c, v in (categories or {}).items() if len(v) <= DOMAIN_VALUES}
  for round_ in itertools.count():
    found = derivation.closure(shown, limit, relations, domains=domains)
    chains = [{k for k in found.known[key][1] if sources[k] is not None} for key in found.small]
    chains = [chain for chain in chains if chain]
    if not chains:
      return hide
    if round_ >= DERIVED_ROUNDS or not found.complete:  # a bound on the time: every count the chains came from
      return hide + [sources[k] + (DERIVED,) for k in sorted(set().union(*chains))]
    while chains:
      uses = collections.Counter(k for chain in chains for k in chain)
      best = min(uses, key=lambda k: (_blanks(*sources[k]) in kept, -uses[k], sources[k][1][0] == "rows", values[k], k))
      hide.append(sources[best] + (DERIVED,))
      chains = [chain for chain in chains if best not in chain]
    gone = {_blanks(cohort, quantity) for cohort, quantity, _ in hide}
    shown = {key: item for key, item in shown.items() if not _blanked_by(sources[next(iter(item[1]))]) & gone}


def _confirmed_blocks(table: pd.DataFrame, tests: _Tests) -> set:
  """The `_blanks` keys that would blank a confirmed finding's numbers (its cohort's rows, its block's counts or
  statistics): `derived_remainders` hides another chain member where one serves (an audit: a greedy run's derived
  counts blanked the z of 5 of its 9 confirmed findings, the count most chains shared being theirs)."""
  if "confirmed" not in table.columns:
    return set()
  out = set()
  for (cohort, p, g, m, _), confirmed in zip(tests.keys, table["confirmed"].fillna(False).astype(bool)):
    if confirmed and cohort is not None:
      out |= _blanked_by((cohort, ("events", p, g, m)))  # a test's events: blanked by all three kinds of hide
  return out


def _blanks(cohort: tuple, quantity: tuple) -> tuple:
  """What hiding a shown count blanks (`_hide_quantities`): a cohort's rows all it shows, a side's rows its block's
  (cohort, protected column, measure) counts and statistics, a side's events that block's statistics."""
  if quantity[0] == "rows":
    return ("all", cohort)
  return ("events" if quantity[0] in _EVENT_QUANTITIES else "block", cohort, quantity[1], quantity[3])


def _blanked_by(source: tuple | None) -> set:
  """The `_blanks` that blank shown count `source` (None, the half's size: nothing)."""
  if source is None:
    return set()
  cohort, quantity = source
  if quantity[0] == "rows":
    return {("all", cohort)}
  keys = {("all", cohort), ("block", cohort, quantity[1], quantity[3])}
  return keys | ({("events", cohort, quantity[1], quantity[3])} if quantity[0] in _EVENT_QUANTITIES else set())


def hide_cohort_remainders(
  table: pd.DataFrame,
  min_group: float,
  *,
  prefixes: tuple[str, ...] = ("", "explore_"),
  total_rows: dict[str, float] | None = None,
) -> pd.DataFrame:
  """A copy of `table` in which no small count comes back as a cohort's count less its shown children's
  (`cohort_remainders`). A hidden cohort's rows (`("rows",)`) blank its counts and statistics everywhere; rows
  with a measure, those of that measure; a group's rows under any measure, every block of that protected column;
  a side's rows, its block's (cohort, protected column, measure) counts and statistics; events, that block's
  statistics; in that half. `total_rows`: `{prefix: rows}` of the halves whose sizes are shown apart from the
  table (`cohort_remainders`). Chains of several steps (a grandparent less its children's children) are
  `hide_derived`'s."""
  out = table.copy()
  for prefix in prefixes:
    total = (total_rows or {}).get(prefix)
    _hide_quantities(out, cohort_remainders(out, min_group, prefix, total_rows=total), min_group, prefix)
  return out


def hide_derived(
  table: pd.DataFrame,
  min_group: float,
  *,
  prefixes: tuple[str, ...] = ("", "explore_"),
  total_rows: dict[str, float] | None = None,
  categories: dict[str, tuple] | None = None,
) -> pd.DataFrame:
  """A copy of `table` in which no small count follows from several shown counts (`derived_remainders`, repeated
  in each half until it finds none: hiding one count can leave another chain); as `hide_cohort_remainders` hides."""
  out = table.copy()
  for prefix in prefixes:
    total = (total_rows or {}).get(prefix)
    while True:
      before = _shown_cells(out)
      found = derived_remainders(out, min_group, prefix, total_rows=total, categories=categories)
      _hide_quantities(out, found, min_group, prefix)
      if _shown_cells(out) == before:
        break
  return out


def _hide_quantities(out: pd.DataFrame, hide: list[tuple], min_group: float, prefix: str) -> None:
  """Blanks in `out` (in place) what each `(cohort, quantity, column)` of `cohort_remainders` or
  `derived_remainders` names (`hide_cohort_remainders`), with its reason."""
  if not hide or not len(out) or not {"filters", "protected", "group", "measure"} <= set(out.columns):
    return
  cohorts = [_cohort_of(f) for f in out["filters"]]
  measure, protected = out["measure"].map(_label).to_numpy(), out["protected"].map(_label).to_numpy()
  limit = disclosure_limit(min_group)
  of_cohort: dict[tuple, np.ndarray] = {}
  batches: dict[tuple, np.ndarray] = {}  # (names, why) -> rows: one `_blank` each
  for cohort, quantity, column in hide:
    if cohort not in of_cohort:
      of_cohort[cohort] = np.array([c == cohort for c in cohorts])
    rows = of_cohort[cohort].copy()
    why = f"a cohort's count less its shown sub-cohorts' by {column} (fewer than {limit}) would follow by subtraction"
    if column == DERIVED:
      why = f"a count (fewer than {limit}) would follow from several shown counts by subtraction and addition"
    elif column is None:
      why = (
        f"the rows missing the measure (fewer than {limit}) would follow from the shown sub-cohort of "
        f"{quantity[1]} = {quantity[2]}{_FILL}"
      )
    names = COUNT_STATISTICS + RATE_STATISTICS
    if quantity[0] == "rows":
      names = ("cohort_rows",) + names
    elif quantity[0] == "tested":
      rows &= measure == quantity[1]
    elif quantity[0] == "group_rows":  # the same count under every measure: the protected column's blocks
      rows &= protected == quantity[1]
    elif quantity[0].startswith("all_"):  # a cohort's events or cases of a value: every block of the measure
      rows &= measure == quantity[1]
      names = RATE_STATISTICS
    else:
      rows &= (protected == quantity[1]) & (measure == quantity[3])
      names = RATE_STATISTICS if quantity[0] in _EVENT_QUANTITIES else names
    batches[(names, why)] = batches.get((names, why), False) | rows
  for (names, why), rows in batches.items():
    _blank(out, rows, names, prefix, why)


def hide_small_cells(
  table: pd.DataFrame,
  min_group: float,
  *,
  confirm_rows: float | None = None,
  explore_rows: float | None = None,
  few_values: dict[str, tuple] | None = None,
  categories: dict[str, tuple] | None = None,
) -> pd.DataFrame:
  """A copy of `table` as it may be shown: every rule of this module in turn (`hide_small_rates`, then
  `hide_cohort_remainders` and `hide_remainders` repeated until neither hides more, then `hide_derived` for chains
  of several steps, and all of them again until nothing more is hidden), with the `HIDDEN` column
  (None where nothing is hidden) and without the `_RAW_EVENTS` columns (counts). `confirm_rows` and
  `explore_rows`: the halves' sizes where they are shown beside the table (a report's summary), so that the
  whole half less its shown cohorts of one filter is checked too. `few_values`: `{measure: values}` of the
  measures with few values (`CubeMeta.few_values_by_measure`, test scale): each value's cases on a side
  are counts too (as a column `FEW_VALUES` while the rules run). `categories`: `{column: labels}` of the filter
  columns (the cube's), so that chains through every value of a column are followed (`derived_remainders`)."""
  total_rows = {"": confirm_rows, "explore_": explore_rows}
  if few_values and "measure" in table.columns:  # each row's measure's values, read by every rule (`FEW_VALUES`)
    table = table.assign(**{FEW_VALUES: [few_values.get(m) for m in table["measure"]]})
  shown = hide_small_rates(table, min_group)
  while True:  # what one rule hides can change what the other subtracts (a parent's largest group count): repeat
    before = _shown_cells(shown)
    shown = hide_remainders(hide_cohort_remainders(shown, min_group, total_rows=total_rows), min_group)
    if _shown_cells(shown) == before:  # the rules of one step done: chains of several, then those again
      shown = hide_derived(shown, min_group, total_rows=total_rows, categories=categories)
      if _shown_cells(shown) == before:
        break
  if HIDDEN not in shown.columns:
    shown[HIDDEN] = pd.Series([None] * len(shown), index=shown.index, dtype=object)
  return shown.drop(columns=[*_RAW_EVENTS, FEW_VALUES], errors="ignore")
