"""Honest confirmation of search candidates on held-out rows.

Every candidate (a new significant finding of the search on the exploration
half) is re-tested, same cohort, protected group and measure, on the
confirmation half. A candidate is *confirmed* when

1. its confirmation p-value passes the multiple-testing rule `correction`
   at `q` over all candidates (untestable ones count with p = 1): weighted
   Holm, Holm, or Benjamini-Hochberg; optionally with the pooled check, the
   newness re-test and the mirror rule (see `confirm_candidates`). A
   discovery run (`DiscoveryConfig`, the command line, the service) uses
   weighted Holm with all three; `confirm_candidates` called alone defaults
   to Benjamini-Hochberg with none of them (its rule before they were added),
   so pass the pipeline's settings to get its confirmations (a cold
   statistics audit: this said weighted Holm was the function's default),
2. the confirmation effect has the exploration effect's sign, and
3. its relative difference is at least `min_relative_diff` (the AHRQ
   National Healthcare Quality and Disparities Report rule: 10%).

The relative difference is group versus rest on the natural scale: the ratio
of geometric means minus one for log-scale measures, the rate ratio minus one
for binary measures (events are read as adverse; for a measure listed as
`favorable` the ratio of non-event rates is used), the ratio of means minus
one otherwise. With case-mix adjustment it is the adjusted difference over the
rest's observed mean (log scale: exp of the adjusted log ratio, minus one;
a measure standardized by ratio, scale `ratio`: the ratio of the group's and
the rest's mean observed/expected, minus one). A measure that takes values
below 0 (a change score: `CubeMeta.is_signed`) has no relative difference (a
ratio of its means is meaningless: means of -7 and 31 read "122% lower", and
the rule passed any gap beside a rest mean near 0; a report audit), so rule 3
reads its standardized difference (`smd`, the gap in pooled standard
deviations; with case-mix adjustment, of observed minus expected, so in
residual standard deviations) against the same number: at least 0.10 of a
standard deviation.
The others are returned as unconfirmed with the reason.

Reference: Benjamini, Y. & Hochberg, Y. (1995). Controlling the false
discovery rate. JRSS B 57, 289-300.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from cube_env.data.adjust import ExpectationError, extra_variance
from cube_env.data.disclosure import (
  EXPLORE_RAW_GROUP_EVENTS,
  EXPLORE_RAW_REST_EVENTS,
  EXPLORE_RAW_SMALL_EVENTS,
  RAW_GROUP_EVENTS,
  RAW_REST_EVENTS,
  RAW_SMALL_EVENTS,
  Z975,
  shown_variance,
  small_events,
)
from cube_env.data.ingest import Cube, filters_to_codes
from cube_env.discovery import cohorts
from cube_env.environment.stats import Z_MAX

KEY = ["cohort", "protected", "group", "measure"]
UNTESTED = "not testable in the confirmation half (small group or too few events)"  # the reason of such a candidate
# An adjusted binary measure's candidate whose unadjusted rates on the exploration half fail the binary test's
# expected-counts rule (the rule the unadjusted screen applies): outside the correction's family.
RATE_UNTESTED = (
  "not testable: a side of its unadjusted rates expects fewer than 5 events or non-events on the exploration half "
  "(left out of the correction)"
)
STAT_COLUMNS = (
  (
    "cohort_rows",
    "n_group",
    "n_rest",
    "mean_group",
    "mean_rest",
    "diff",
    "ci_low",
    "ci_high",
    "ratio",
    "smd",
    "z",
    "p_value",
  )
  + cohorts.SIDE_COLUMNS
  + cohorts.VAR_COLUMNS
)


def _p_values(p_values, level: float, name: str) -> np.ndarray:
  """`[k]` float64 p-values, checked to lie in [0, 1], and the level in (0, 1)."""
  p = np.asarray(p_values, np.float64).reshape(-1)
  if not 0.0 < level < 1.0:
    raise ValueError(f"{name} must lie in (0, 1), got {level}")
  if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
    raise ValueError("p-values must lie in [0, 1]")
  return p


def benjamini_hochberg(p_values, *, q: float = 0.05):
  """Step-up Benjamini-Hochberg procedure.

  Args:
    p_values: `[k]` p-values in [0, 1].
    q: false discovery rate.

  Returns:
    (reject `[k]` bool, adjusted p `[k]`): adjusted p_(i) = min over j >= i of
    p_(j) k / j, capped at 1; reject where adjusted p <= q.
  """
  p = _p_values(p_values, q, "q")
  k = len(p)
  if k == 0:
    return np.zeros(0, bool), np.zeros(0)
  order = np.argsort(p, kind="stable")
  scaled = p[order] * k / np.arange(1, k + 1)
  adjusted_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
  adjusted = np.empty(k)
  adjusted[order] = adjusted_sorted
  return adjusted <= q, adjusted


def holm(p_values, *, alpha: float = 0.05, weights=None):
  """Step-down (weighted) Holm procedure: family-wise error at most `alpha`.

  With weights w (mean 1), hypotheses are taken in increasing order of p/w;
  the j-th is rejected when p_(j) <= alpha w_(j) / (sum of the weights not yet
  rejected), and the procedure stops at the first that is not (Holm 1979;
  weighted form: Holm 1979, Section 4; Genovese, Roeder & Wasserman 2006).
  Equal weights give Holm's procedure.

  Args:
    p_values: `[k]` p-values in [0, 1].
    alpha: family-wise error rate.
    weights: `[k]` positive weights, fixed before the p-values are seen (default all 1).

  Returns:
    (reject `[k]` bool, adjusted p `[k]`): adjusted p_(j) = max over i <= j of
    min(1, p_(i) S_i / w_(i)), S_i the weight remaining at step i; reject where <= alpha.
  """
  p = _p_values(p_values, alpha, "alpha")
  k = len(p)
  w = np.ones(k) if weights is None else np.asarray(weights, np.float64).reshape(-1)
  if w.shape != (k,) or np.any(~np.isfinite(w)) or np.any(w <= 0):
    raise ValueError("weights must be positive and finite, one per p-value")
  if k == 0:
    return np.zeros(0, bool), np.zeros(0)
  w = w * k / w.sum()
  order = np.lexsort((np.arange(k), p / w))
  remaining = np.cumsum(w[order][::-1])[::-1]  # weight of the hypotheses from step j on
  adjusted_sorted = np.maximum.accumulate(np.minimum(p[order] * remaining / w[order], 1.0))
  adjusted = np.empty(k)
  adjusted[order] = adjusted_sorted
  return adjusted <= alpha, adjusted


CORRECTIONS = ("bh", "holm", "weighted")


def exploration_weights(explore_z, *, tilt: float) -> np.ndarray:
  """Weights exp(tilt |z_explore|), scaled to mean 1 (computed before any confirmation p-value is seen)."""
  z = np.abs(np.nan_to_num(np.asarray(explore_z, np.float64).reshape(-1)))
  if len(z) == 0:
    return z
  w = np.maximum(np.exp(tilt * (z - z.max())), 1e-300)  # a weight that underflows would make Holm refuse it
  return w * len(w) / w.sum()


def pooled_p(n_group, var_group, n_rest, var_rest, diff, extra=0.0) -> np.ndarray:
  """Two-sided p of Student's pooled-variance t (float64, scipy); 1 where undefined. `extra`: variance added to the
  difference's (an adjusted run's expected values, `adjust.extra_variance`).

  Under the null that the group's rows come from the rest's distribution the
  pooled variance, dominated by the large rest, is the right one; Welch's
  uses the group's own, which a small group of a skewed measure (a count
  that happens to be all zeros) underestimates, and its p is then far too
  small (docs/design.md, Discovery and confirmation).
  """
  n1, v1, n2, v2, d = (np.asarray(x, np.float64) for x in (n_group, var_group, n_rest, var_rest, diff))
  dof = n1 + n2 - 2.0
  with np.errstate(divide="ignore", invalid="ignore"):
    pooled = ((n1 - 1.0) * v1 + (n2 - 1.0) * v2) / dof
    t = d / np.sqrt(pooled * (1.0 / n1 + 1.0 / n2) + np.asarray(extra, np.float64))
    p = 2.0 * sps.t.sf(np.abs(t), np.maximum(dof, 1.0))
  return np.where(np.isfinite(p) & (dof > 0), np.clip(p, 0.0, 1.0), 1.0)


def _welch_inputs(rows: pd.DataFrame) -> tuple[np.ndarray, ...]:
  """(n_group, var_group, n_rest, var_rest, diff) of `retest`'s rows as float arrays (NaN where blank)."""
  columns = ("n_group", "var_group", "n_rest", "var_rest", "diff")
  return tuple(pd.to_numeric(rows[c], errors="coerce").to_numpy(float) for c in columns)


def expectation_variances(candidates: pd.DataFrame, meta, expectation: ExpectationError | None) -> np.ndarray:
  """`[k]` each candidate's `adjust.extra_variance` (0 for every one without `expectation`: an unadjusted run)."""
  if expectation is None:
    return np.zeros(len(candidates))
  groups = {p: list(meta.categories[meta.n_dimensions + i]) for i, p in enumerate(meta.protected_names)}
  return np.asarray(
    [
      extra_variance(
        expectation,
        filters_to_codes(meta, c.filters),
        meta.n_dimensions + meta.protected_names.index(c.protected),
        groups[c.protected].index(c.group),
        meta.measure_names.index(c.measure),
      )
      for c in candidates.itertuples()
    ],
    np.float64,
  )


def with_extra_variance(again: pd.DataFrame, extra: np.ndarray) -> pd.DataFrame:
  """`again` (`retest`'s rows) with Welch's test of each row whose `extra` > 0 redone with it added to the squared
  standard error: t, its Welch-Satterthwaite df (the estimates' part taken as known: many fitting rows), p (scipy,
  float64), z (the normal quantile of that p, at most `Z_MAX`) and the 95% interval of `diff`."""
  out = again.copy()
  n1, v1, n2, v2, d = _welch_inputs(out)
  redo = (extra > 0) & np.isfinite(n1 + v1 + n2 + v2 + d) & (n1 > 1) & (n2 > 1)
  if not redo.any():
    return out
  with np.errstate(divide="ignore", invalid="ignore"):
    a, b = v1 / n1, v2 / n2
    se2 = a + b + extra
    df = np.clip(se2**2 / (a**2 / (n1 - 1.0) + b**2 / (n2 - 1.0)), 1.0, 1e7)
    df = np.where(np.isfinite(df), df, n1 + n2 - 2.0)
    t = d / np.sqrt(se2)
    p = np.clip(2.0 * sps.t.sf(np.abs(t), df), 0.0, 1.0)
    z = np.sign(t) * np.minimum(sps.norm.isf(p / 2.0), Z_MAX)
    half = sps.t.ppf(0.975, df) * np.sqrt(se2)
  for name, value in (("p_value", p), ("z", z), ("ci_low", d - half), ("ci_high", d + half)):
    out[name] = np.where(redo, value, pd.to_numeric(out[name], errors="coerce").to_numpy(float))
  return out


def one_stratum_events(raw: pd.DataFrame, adjusted: pd.DataFrame, side: str) -> np.ndarray:
  """`[rows]` the unadjusted events of a binary test's `side` ("group", "rest") where the adjusted side's shown
  variance gives them back, NaN elsewhere. In one adjuster stratum every expected value is the same, so that
  variance (`shown_variance`: its `var_` column or its interval's) is the unadjusted one, a rate's n p (1 - p) /
  (n - 1), and a reader of the report solves it for the events (either root); where the expected values vary too
  little to matter the same sum comes out. Counted where it does: the several-steps rule follows them
  (`disclosure._raw_events`).

  Args:
    raw: `retest`'s rows of the unadjusted half.
    adjusted: the same tests' rows of the adjusted half (`retest`'s or the candidates').
    side: the side.
  """
  n, rate = (pd.to_numeric(raw[f"{k}_{side}"], errors="coerce").to_numpy(float) for k in ("n", "mean"))
  var = shown_variance(adjusted.reset_index(drop=True), side)
  with np.errstate(invalid="ignore", divide="ignore"):
    root = np.sqrt(np.clip(1.0 - 4.0 * var * (n - 1.0) / n, 0.0, None))
    events = np.round(n * rate)
    gives = (np.round(n * (1.0 - root) / 2.0) == events) | (np.round(n * (1.0 + root) / 2.0) == events)
  return np.where(gives & (raw["scale"] == "binary").to_numpy(bool), events, np.nan)


def relative_difference(
  row, *, adjusted: bool, favorable: bool, rest_observed: float | None = None, rate: bool = False
) -> float:
  """Relative difference of group versus rest (see the module docstring); NaN when undefined. `rate`: a binary
  measure, whose relative difference is at least -1: a rate cannot fall by more than all of it, though adjusted (the
  difference of excess rates over the rest's observed rate) a group with no events whose expected rate exceeds the
  rest's observed one would read below -1."""
  out = _relative_difference(row, adjusted=adjusted, favorable=favorable, rest_observed=rest_observed)
  return max(out, -1.0) if rate else out


def _relative_difference(row, *, adjusted: bool, favorable: bool, rest_observed: float | None) -> float:
  scale = row["scale"]
  if row.get("mean_group") is None or row.get("mean_rest") is None:
    return float("nan")
  if scale == "log":
    return float(np.exp(row["diff"]) - 1.0)
  if scale == "ratio":
    r = float(row["mean_rest"])
    return float(row["diff"] / r) if r > 0 else float("nan")
  if adjusted:
    base = rest_observed
    if base is None or not np.isfinite(base) or base == 0:
      return float("nan")
    if favorable:
      base = 1.0 - base
      return float(-row["diff"] / base) if base > 0 else float("nan")
    return float(row["diff"] / abs(base))
  g, r = float(row["mean_group"]), float(row["mean_rest"])
  if scale == "binary" and favorable:
    g, r = 1.0 - g, 1.0 - r
  return float((g - r) / abs(r)) if r != 0 else float("nan")


def relative_interval(
  row, *, adjusted: bool, favorable: bool, rest_observed: float | None = None, rate: bool = False
) -> tuple[float, float]:
  """95% interval of `relative_difference`, on its scale: the difference's interval (`ci_low`, `ci_high`) mapped
  the same way; NaN where undefined; `rate` (a binary measure, adjusted or not): both limits at least -1, as the
  estimate (a rate of 0 in the group has an interval whose normal limit reaches below it).

  Log scale: exact (exp of the log-ratio's limits, minus one). Unadjusted linear, count and binary measures with both
  means above 0 and the sides' sizes and variances in `row`: the delta method's interval of the log of the ratio of
  means (for rates, Katz's interval of the rate ratio; rates of non-events for a `favorable` one), exp of its
  limits minus one. Otherwise (adjusted; a mean at or below 0) the difference's limits over the rest's mean (the
  observed rest mean with `adjusted`), that mean taken as known: narrower than it should be where the rest is not
  much larger than the group (a statistics audit: 82% coverage at "95%" for two equal sides; Katz's 95%).
  """
  lo, hi = row.get("ci_low"), row.get("ci_high")
  if row.get("mean_group") is None or row.get("mean_rest") is None or lo is None or hi is None:
    return float("nan"), float("nan")
  limits = np.array([lo, hi], np.float64)
  scale = row["scale"]
  if scale == "log":
    return tuple(float(x) for x in np.exp(limits) - 1.0)
  if not adjusted and scale in ("linear", "count", "binary"):
    delta = _log_ratio_interval(row, flip=scale == "binary" and favorable, rate=scale == "binary")
    if delta is not None:
      return delta
  if scale == "ratio":
    base, sign = float(row["mean_rest"]), 1.0
    base = base if base > 0 else float("nan")
  elif adjusted:
    base = float("nan") if rest_observed is None else float(rest_observed)
    base, sign = (1.0 - base, -1.0) if favorable else (abs(base), 1.0)
  elif scale == "binary" and favorable:
    base, sign = abs(1.0 - float(row["mean_rest"])), -1.0
  else:
    base, sign = abs(float(row["mean_rest"])), 1.0
  if not (np.isfinite(base) and base > 0):
    return float("nan"), float("nan")
  a, b = sorted(sign * limits / base)
  if rate:
    a, b = max(a, -1.0), max(b, -1.0)
  return float(a), float(b)


def _log_ratio_interval(row, *, flip: bool, rate: bool) -> tuple[float, float] | None:
  """exp(log(g / r) -/+ q se) - 1 with se^2 = v_g / (n_g g^2) + v_r / (n_r r^2) (the delta method; Katz's for
  rates, v = p (1 - p), of non-events when `flip`), q the difference's own 97.5% quantile (the normal one for
  rates, Welch's t otherwise, read off its interval); None without the sides' sizes and variances or a mean at or
  below 0 (its log is undefined)."""
  need = ("n_group", "n_rest") if rate else ("n_group", "n_rest", "var_group", "var_rest")
  if any(row.get(k) is None or not np.isfinite(float(row[k])) for k in need):
    return None
  g, r = float(row["mean_group"]), float(row["mean_rest"])
  if flip:
    g, r = 1.0 - g, 1.0 - r
  n_g, n_r = float(row["n_group"]), float(row["n_rest"])
  if not (g > 0 and r > 0 and n_g > 0 and n_r > 0):
    return None
  v_g, v_r = (g * (1.0 - g), r * (1.0 - r)) if rate else (float(row["var_group"]), float(row["var_rest"]))
  se = np.sqrt(v_g / (n_g * g * g) + v_r / (n_r * r * r))
  # The difference's own quantile (Welch's t at its degrees of freedom; the normal one for rates): the normal one
  # narrowed a small group's interval (a review: 92.8% coverage at 11 rows against 2,000).
  q = Z975
  se_diff = np.sqrt(v_g / n_g + v_r / n_r)
  if not rate and se_diff > 0 and np.isfinite(float(row["ci_high"]) - float(row["ci_low"])):
    q = max(Z975, (float(row["ci_high"]) - float(row["ci_low"])) / (2.0 * se_diff))
  center = np.log(g / r)
  return float(np.exp(center - q * se) - 1.0), float(np.exp(center + q * se) - 1.0)


def retest(
  candidates: pd.DataFrame, cube: Cube, *, min_group: float, z_screen: float, max_depth: int, with_table: bool = False
):
  """Statistics of each candidate's (cohort, protected, group, measure) in `cube` (one row each, same order).

  With `with_table`, returns (rows, table, cohort) where table is the
  `cohorts.cohort_table` of every test of the candidates' cohorts and cohort
  `[k]` the `cohort_index` of each candidate's cohort in it.
  """
  if len(candidates) == 0:
    empty = pd.DataFrame(columns=list(cohorts.COLUMNS))
    return (empty, empty.assign(cohort_index=[]), np.zeros(0, int)) if with_table else empty
  meta = cube.meta
  unique = {}
  for filters in candidates["filters"]:
    key = tuple(sorted(filters.items()))
    unique.setdefault(key, len(unique))
  codes = np.stack([filters_to_codes(meta, dict(k)) for k in unique])
  table = cohorts.cohort_table(cube, codes, min_group=min_group, z_screen=z_screen, max_depth=max_depth)
  lookup = {(int(r.cohort_index), r.protected, r.group, r.measure): i for i, r in enumerate(table.itertuples())}
  rows, where = [], []
  for c in candidates.itertuples():
    idx = unique[tuple(sorted(c.filters.items()))]
    rows.append(table.iloc[lookup[(idx, c.protected, c.group, c.measure)]])
    where.append(idx)
  out = pd.DataFrame(rows).reset_index(drop=True)
  return (out, table, np.asarray(where, int)) if with_table else out


def _moments_without(row, other) -> tuple[float, float, float]:
  """(n, mean, var) on the test scale of `row`'s rest without `other`'s group (both rows of one cohort's table)."""
  log = row["scale"] == "log"

  def m(x):
    return float(np.log(x)) if log else float(x)

  n_r, m_r, v_r = float(row["n_rest"]), m(row["mean_rest"]), float(row["var_rest"])
  n_o, m_o, v_o = float(other["n_group"]), m(other["mean_group"]), float(other["var_group"])
  n = n_r - n_o
  if n < 2:
    return n, float("nan"), float("nan")
  total = n_r * m_r - n_o * m_o
  squares = (n_r - 1.0) * v_r + n_r * m_r**2 - ((n_o - 1.0) * v_o + n_o * m_o**2)
  mean = total / n
  return n, mean, max((squares - n * mean**2) / (n - 1.0), 0.0)


def mirror_of(again: pd.DataFrame, table: pd.DataFrame, cohort: np.ndarray, *, z_min: float) -> list[str | None]:
  """For each candidate, the group whose opposite gap explains it, or None (README, Mirrors).

  A candidate (cohort c, column p, group h, measure m, sign s) is a mirror of
  another group g of p when, in c on the same rows, g's gap has the opposite
  sign and h compared with the rest of c without g's rows no longer shows a
  gap in its direction (s z < z_min; Welch or the two-proportion z from
  subtracted sufficient statistics), and either g's gap stands without h's
  rows while h's does not without g's (g's |z| also larger), or neither
  stands without the other, g is a candidate too and h is the larger group. When g's rate is
  raised, every other group's is lower than a rest that holds g: that is g's
  story told backwards. When neither gap stands without the other, the two
  groups hold the cohort between them and h against g is one comparison told
  twice: the smaller group tells it (as a two-group column tests its smaller
  group), so which of the two is confirmed does not turn on which |z| the
  confirmation rows happen to make larger (an audit: a planted gap of a
  smaller group was dropped as the mirror of the larger group's, whose |z|
  was larger by noise).
  """
  out: list[str | None] = []
  groups = table.groupby(["cohort_index", "protected", "measure"], sort=False)
  rows = again.to_dict("records")
  candidates = {(int(c), r["protected"], r["measure"], str(r["group"])) for c, r in zip(cohort, rows)}
  for i, row in enumerate(rows):
    out.append(None)
    if not row["tested"]:  # a tested row is never blanked: both sides have >= min_group rows
      continue
    z = float(row["z"])
    try:
      same = groups.get_group((int(cohort[i]), row["protected"], row["measure"]))
    except KeyError:
      continue
    for other in same.to_dict("records"):
      if other["group"] == row["group"] or not other["tested"] or np.sign(other["z"]) != -np.sign(z):
        continue
      if not _vanishes_without(row, other, z_min):  # h's gap stands without g's rows: not g's story
        continue
      told = (int(cohort[i]), row["protected"], row["measure"], str(other["group"])) in candidates
      if told and _vanishes_without(other, row, z_min):  # neither stands alone: the larger group is the mirror
        mirror = (float(row["n_group"]), str(row["group"])) > (float(other["n_group"]), str(other["group"]))
      else:  # (the size rule only between two candidates: else the story would be told by neither)
        mirror = abs(other["z"]) > abs(z)
      if mirror:
        out[-1] = str(other["group"])
        break
  return out


def _vanishes_without(row: dict, other: dict, z_min: float) -> bool:
  """Whether `row`'s group, against the rest of its cohort without `other`'s group's rows, no longer shows a gap in
  the direction of `row`'s z (z without < `z_min`); False where that rest is too small to test or a rate is not a
  number (nothing is decided)."""
  n_r, m_r, v_r = _moments_without(row, other)
  if not n_r >= 2:
    return False
  n_h = float(row["n_group"])
  m_h = float(np.log(row["mean_group"])) if row["scale"] == "log" else float(row["mean_group"])
  if row["scale"] == "binary":
    pooled = min(max((n_h * m_h + n_r * m_r) / (n_h + n_r), 0.0), 1.0)  # a rate: subtraction may round past 0 or 1
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n_h + 1.0 / n_r))
  else:
    se = np.sqrt(float(row["var_group"]) / n_h + v_r / n_r)
  if se > 0:
    z_without = (m_h - m_r) / se
  elif (row["scale"] == "binary" and np.isfinite(se)) or m_h == m_r:
    z_without = 0.0  # a pooled rate of 0 or 1: both rates are it (a difference left is rounding)
  else:
    z_without = np.sign(m_h - m_r) * np.inf  # no spread on either side, different means
  return bool(np.sign(float(row["z"])) * z_without < z_min)


def confirm_candidates(
  candidates: pd.DataFrame,
  cube: Cube,
  *,
  q: float = 0.05,
  min_relative_diff: float = 0.10,
  min_group: float = 11,
  z_screen: float = 4.0,
  max_depth: int = 3,
  raw_cube: Cube | None = None,
  favorable: Sequence[str] = (),
  correction: str = "bh",
  tilt: float = 2.0,
  new_z: float | None = None,
  pooled_check: bool = False,
  mirror_z: float | None = None,
  explore_raw_cube: Cube | None = None,
  expectation: ExpectationError | None = None,
) -> pd.DataFrame:
  """Re-tests candidates on the confirmation cube and applies the multiple-testing and relative-difference rules.

  Args:
    candidates: new significant findings of the search (rows of
      `cohorts.cohort_table` or `enumerate_findings`) on the exploration half.
    cube: the confirmation half (adjusted when the search was).
    q: level of the multiple-testing rule over all candidates.
    min_relative_diff: smallest |relative difference| that is reported.
    raw_cube: the unadjusted confirmation half when `cube` is adjusted (for
      the relative difference's denominator); None when unadjusted.
    favorable: measures where the event (or a higher value) is the good outcome.
    correction: the multiple-testing rule over the candidates' confirmation
      p-values, at level `q`: "bh" (Benjamini-Hochberg, false discovery
      rate), "holm" (family-wise error) or "weighted" (weighted Holm, weights
      `exploration_weights(explore |z|, tilt)`: the alpha goes where the
      exploration half saw the strongest evidence, which the confirmation half
      cannot influence).
    tilt: the weights' exponent for "weighted".
    new_z: when set, a candidate must also be new on the confirmation half
      at this threshold (docs/design.md, Newness, with `z_screen = new_z`):
      where a parent shows the same gap with |z| >= new_z, the cohort's own
      gap must exceed the rest of that parent's by a heterogeneity z >= new_z.
      A sibling that only shares rows with a planted cohort, significant in the
      exploration half by chance concentration, fails it. None: not re-tested.
    pooled_check: on continuous measures the p-value that enters the
      correction is the larger of Welch's and Student's pooled-variance
      (`pooled_p`), so a small group whose own variance collapsed by chance
      cannot pass; the findings keep Welch's `z` and `p_value` and add
      `p_confirm`, the p that was corrected.
    mirror_z: when set, a candidate that is the mirror of another group's
      opposite gap in its cohort (`mirror_of`, on the confirmation half) is
      not confirmed; `mirror_of` names that group. None: no check.
    explore_raw_cube: with `raw_cube`, the unadjusted exploration half. Adjustment tests a binary measure as
      excess rates (Welch's z of observed minus expected), which has no expected-counts rule: a group with no
      events in a cohort whose expected rate is low reads |z| 5-8 there (an audit: 148 of 153 adjusted binary
      candidates on one table). Such a candidate, whose unadjusted rates on the exploration half fail the binary
      test's rule (at least 5 expected events and non-events a side), is left out of the correction's family
      (`RATE_UNTESTED`; a choice made from the exploration half alone, so the error rate holds), and one that
      fails it on the confirmation half is not testable there (`UNTESTED`), as an unadjusted binary one.
    expectation: an adjusted run's `Halves.expectation`: each candidate's test on the confirmation half adds the
      variance its expected values owe to their estimates (`adjust.extra_variance`; `with_extra_variance`), to
      Welch's test and to the pooled check; None: no addition (an unadjusted run).

  Returns:
    One row per candidate: the confirmation statistics under the usual
    names, the exploration ones prefixed `explore_`, `relative_diff` and its interval (`relative_ci_low`,
    `relative_ci_high`, `relative_interval`),
    `p_confirm` (the p that was corrected), `p_adjusted` (by `correction`), `confirm_new`, `mirror_of`,
    `confirmed` and `reason`; confirmed rows first, then
    by |z|.
  """
  extra = [
    "relative_diff",
    "relative_ci_low",
    "relative_ci_high",
    "p_confirm",
    "p_adjusted",
    "confirm_new",
    "mirror_of",
    "confirmed",
    "reason",
  ]
  if len(candidates) == 0:
    cols = KEY + list(STAT_COLUMNS) + [f"explore_{c}" for c in STAT_COLUMNS] + extra
    return pd.DataFrame(columns=cols + ["filters", "scale", "reference", "depth"])
  cand = candidates.reset_index(drop=True)
  kw = dict(min_group=min_group, z_screen=z_screen if new_z is None else new_z, max_depth=max_depth)
  again, table, where = retest(cand, cube, **kw, with_table=True)
  extra = expectation_variances(cand, cube.meta, expectation)
  welch = again  # the mirror rule sets a candidate's z against its cohort's other groups' (`table`), all without it
  again = with_extra_variance(again, extra)
  raw = retest(cand, raw_cube, **kw) if raw_cube is not None else None
  out = cand.drop(columns=[c for c in STAT_COLUMNS if c in cand.columns] + ["significant", "tested"], errors="ignore")
  for c in STAT_COLUMNS:
    out[f"explore_{c}"] = cand[c] if c in cand.columns else None
    out[c] = again[c].to_numpy()
  tested = again["tested"].to_numpy(bool) & again["p_value"].notna().to_numpy()
  family = np.ones(len(cand), bool)
  explore_raw = retest(cand, explore_raw_cube, **kw) if raw is not None and explore_raw_cube is not None else None
  if raw is not None:  # adjusted binary measures keep the binary test's expected-counts rule (`explore_raw_cube`)
    rates = (raw["scale"] == "binary").to_numpy(bool)
    tested &= ~rates | raw["tested"].to_numpy(bool)
    if explore_raw is not None:
      family = ~rates | explore_raw["tested"].to_numpy(bool)
  p = np.where(tested, again["p_value"].fillna(1.0).to_numpy(float), 1.0)
  if pooled_check:
    continuous = (again["scale"] != "binary").to_numpy(bool) & tested
    p = np.where(continuous, np.maximum(p, pooled_p(*_welch_inputs(again), extra=extra)), p)
  out["p_confirm"] = p
  if correction not in CORRECTIONS:
    raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
  reject, p_adj = np.zeros(len(cand), bool), np.ones(len(cand))
  if correction == "bh":
    reject[family], p_adj[family] = benjamini_hochberg(p[family], q=q)
  else:
    weights = exploration_weights(cand["z"].to_numpy(float)[family], tilt=tilt) if correction == "weighted" else None
    reject[family], p_adj[family] = holm(p[family], alpha=q, weights=weights)
  out["p_adjusted"] = p_adj
  meta = (raw_cube if raw_cube is not None else cube).meta
  signed = {m for m, s in zip(meta.measure_names, meta.is_signed) if s}
  is_signed = cand["measure"].isin(signed).to_numpy(bool)
  rel, rel_ci = [], []
  for i, row in enumerate(again.to_dict("records")):
    if is_signed[i]:  # no relative difference: rule 3 reads the standardized difference (module docstring)
      rel.append(float("nan"))
      rel_ci.append((float("nan"), float("nan")))
      continue
    rest_obs = None if raw is None else raw.iloc[i]["mean_rest"]
    how = dict(
      adjusted=raw is not None,
      favorable=row["measure"] in favorable,
      rest_observed=None if rest_obs is None else float(rest_obs),
      rate=(row["scale"] if raw is None else raw.iloc[i]["scale"]) == "binary",
    )
    rel.append(relative_difference(row, **how))
    rel_ci.append(relative_interval(row, **how))
  out["relative_diff"] = rel
  out["relative_ci_low"] = [lo for lo, _ in rel_ci]
  out["relative_ci_high"] = [hi for _, hi in rel_ci]
  if raw is not None:  # adjusted: the shown means are excess rates, so the report's small-cell check reads the raw ones
    out[RAW_SMALL_EVENTS] = small_events(raw, min_group)
    if explore_raw is not None:  # in one adjuster stratum a side's variance is its rate's: p(1 - p) gives the events
      out[EXPLORE_RAW_SMALL_EVENTS] = small_events(explore_raw, min_group)
    # The relative difference divides by the unadjusted rest rate, so it gives these events back (`hide_*`).
    rest_events = pd.to_numeric(raw["n_rest"], errors="coerce") * pd.to_numeric(raw["mean_rest"], errors="coerce")
    out[RAW_REST_EVENTS] = np.where((raw["scale"] == "binary").to_numpy(), rest_events.round().to_numpy(), np.nan)
    out[RAW_GROUP_EVENTS] = one_stratum_events(raw, again, "group")
    if explore_raw is not None:
      out[EXPLORE_RAW_GROUP_EVENTS] = one_stratum_events(explore_raw, cand, "group")
      out[EXPLORE_RAW_REST_EVENTS] = one_stratum_events(explore_raw, cand, "rest")
  same_sign = np.sign(again["z"].fillna(0).to_numpy(float)) == np.sign(cand["z"].to_numpy(float))
  smd = np.abs(pd.to_numeric(again["smd"], errors="coerce").to_numpy(float))
  gap = pd.to_numeric(again["diff"], errors="coerce").fillna(0.0).to_numpy(float)
  smd = np.where((smd == 0) & (gap != 0), np.inf, smd)  # sides without spread (smd 0): a gap of infinitely many sds
  size = np.where(is_signed, smd, np.asarray(rel, float))
  big = np.abs(np.nan_to_num(size)) >= min_relative_diff
  renewed = again["new"].to_numpy(bool) if new_z is not None else np.ones(len(cand), bool)
  out["confirm_new"] = renewed
  mirrors = mirror_of(welch, table, where, z_min=mirror_z) if mirror_z is not None else [None] * len(cand)
  out["mirror_of"] = mirrors
  plain = tested & reject & same_sign & big
  out["confirmed"] = plain & renewed & np.array([m is None for m in mirrors], bool)
  out["reason"] = [
    _reason(t, r, s, b, pa, rd, n, mi, zc, sg, q=q, min_rel=min_relative_diff, correction=correction, new_z=new_z)
    for t, r, s, b, pa, rd, n, mi, zc, sg in zip(
      tested, reject, same_sign, big, p_adj, size, renewed, mirrors, again["z"].fillna(0.0).to_numpy(float), is_signed
    )
  ]
  out.loc[~family, "reason"] = RATE_UNTESTED
  order = np.lexsort((-np.abs(np.nan_to_num(out["z"].to_numpy(float))), ~out["confirmed"].to_numpy(bool)))
  return out.iloc[order].reset_index(drop=True)


def rule_text(
  *,
  q: float,
  correction: str,
  tilt: float,
  new_z: float | None,
  pooled_check: bool,
  mirror_z: float | None,
  min_relative_diff: float,
) -> str:
  """One line naming the confirmation rules (for reports)."""
  parts = [
    f"{_CORRECTION_NAMES[correction]}" + (f" (tilt {tilt:g})" if correction == "weighted" else "") + f" at {q:g}",
    "p = max(Welch, pooled)" if pooled_check else "Welch p",
    f"relative difference >= {_percent(min_relative_diff)} (a measure with values below 0: standardized difference >= "
    f"{min_relative_diff:g})",
  ]
  if new_z is not None:
    parts.append(f"new on the confirmation half (|z| {new_z:g})")
  if mirror_z is not None:
    parts.append(f"no mirrors (z {mirror_z:g})")
  return "; ".join(parts)


def blank_untested(findings: pd.DataFrame) -> pd.DataFrame:
  """A copy of `findings` in which each candidate the confirmation half could not test (reason `UNTESTED`, or
  `RATE_UNTESTED`) shows no z or p (its rows hold z 0 and p 1, which read as a measured null); exploration's
  statistics stay."""
  table = findings.copy()
  if "reason" not in table.columns:
    return table
  untested = table["reason"].isin([UNTESTED, RATE_UNTESTED]).to_numpy()
  blank = [c for c in ("z", "p_value", "p_confirm", "p_adjusted") if c in table.columns]
  if untested.any() and blank:
    table[blank] = table[blank].astype(object)
    table.loc[untested, blank] = None
  return table


def _percent(x: float) -> str:
  """`x` as a percentage with the digits it needs (12.5%, not 12%: a review)."""
  return f"{100.0 * x:g}%"


def _apart(value: float, limit: float, kind: str, digits: int) -> str:
  """`value` formatted (`kind` "%", "f" or "g" with `digits`, more where needed) so that it does not read as equal to
  `limit`: 0.09996 against 10% reads 9.996%, not "10.0% below 10%" (a report audit)."""
  scale = 100.0 if kind == "%" else 1.0
  for more in range(digits, digits + 6):
    text = f"{value:.{more}{kind}}"
    if value == limit or float(text.rstrip("%")) / scale != limit:
      break
  return text


_CORRECTION_NAMES = {"bh": "Benjamini-Hochberg", "holm": "Holm", "weighted": "weighted Holm"}


def _reason(
  tested, reject, same_sign, big, p_adj, size, new, mirror, z, signed=False, *, q, min_rel, correction, new_z
) -> str:
  """Why a candidate is or is not confirmed: the first rule it fails, in `confirm_candidates`' order. `size`: the
  relative difference, or the standardized one for a `signed` measure."""
  if not tested:
    return UNTESTED
  if not same_sign:
    return "opposite direction in the confirmation half"
  if not reject:
    return f"not significant after {_CORRECTION_NAMES[correction]} (adjusted p {_apart(p_adj, q, 'g', 3)} > {q:g})"
  if not big and signed:
    return (
      f"standardized difference {_apart(abs(size), min_rel, 'f', 2)} below {min_rel:g} (the measure takes values "
      "below 0: no relative difference)"
    )
  if not big and not np.isfinite(size):
    return "relative difference undefined (no ratio to the rest's mean or rate)"
  if not big:
    return f"relative difference {_apart(abs(size), min_rel, '%', 1)} below {_percent(min_rel)}"
  if not new and abs(z) < new_z:
    return f"|z| below {new_z:g} on the confirmation half (the newness re-test's threshold)"
  if not new:
    return "not new in the confirmation half: a parent shows the same gap and this cohort's is not stronger"
  if mirror is not None:
    return f"mirror of group {mirror}'s opposite gap in this cohort"
  return "confirmed"
