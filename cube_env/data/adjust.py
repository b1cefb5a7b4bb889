"""Case-mix adjustment by indirect standardization.

Each row's *expected* value of a measure is the mean of that measure among
rows of its adjuster stratum (the combination of its adjuster categories,
e.g. procedure x ASA class), estimated on the fitting rows only (the
exploration half, so the confirmation half is not used twice). The disparity
is then measured on observed minus expected, on the measure's test scale: for
a log-scale measure the group's mean residual is the log of its geometric
observed/expected ratio; for a binary one it is the excess event rate over
what the case mix predicts. A non-negative measure tested on its natural
scale (a count, a cost) is standardized by ratio instead: each row holds
observed / expected (`ratio_measures`), so a group's mean is the mean of its
rows' ratios (about 1 where the case mix explains it; not the SMR, sum O /
sum E, which weights rows by E). Case mix acts on such measures
multiplicatively (a rate model with a log link): where another driver scales a
cohort's rate by f, every stratum's mean is scaled by f, and observed minus
expected would then be f - 1 times the stratum mean, larger for a group that
sits in high-rate strata, a gap the case mix explains. The ratio is f for
every stratum, so it is not (measured on the `confounded` worlds:
README.md, Power and false findings). A gap that case mix explains has
adjusted values that no longer differ between groups.

Dividing by a noisy expected value is biased: the expectation comes from the
exploration half, and on other rows E[O / mean] exceeds 1 by about the squared
coefficient of variation of the mean, var / (n mean^2), which is large for
small strata (a group that sits in many small strata would show a gap that is
not there). So the expected value of a ratio measure is not its stratum's
mean but a main-effects multiplicative fit (`multiplicative_expected`: overall
mean x one factor per adjuster level, the Poisson log-linear model, fitted by
iterative proportional fitting), whose factors rest on whole levels, not on
their combinations; and a measure is standardized by ratio only when every
level's mean is precise (`MAX_RATIO_CV2`: a bias of about 1% at most, far
under the 10% relative-difference floor of confirmation), otherwise by
difference from the stratum means, with the reason in the summary. Case mix
that acts through an interaction of adjusters is not captured by the main
effects.

The expected values are estimates, and every confirmation row of a stratum shares its estimate's error, so a
group-versus-rest difference of residuals has, beside the rows' own variance, the variance sum over strata of
(group's share of its rows in the stratum - the rest's share)^2 x the variance of the stratum's estimate (its
variance over its fitting rows; `ExpectationError`). Welch's test of the residuals alone leaves it out, which a
cold audit found too liberal where a group sits mostly in a few strata: 9% of a pure-confounding null's continuous
tests and 12% of its binary ones rejected at 5%, at any number of rows. Confirmation adds it (`extra_variance`;
`confirm.confirm_candidates`); fitting the expectations again on the confirmation half instead would use its rows
twice, and Welch's test of those residuals is then too conservative (the same audit: a null sd of 0.71).

Reference: Fleiss, Levin & Paik (2003), Statistical Methods for Rates and
Proportions, ch. 19 (indirect standardization).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cube_env.data.disclosure import SMALL_CELL
from cube_env.data.ingest import category_label, near_names

MAX_LEVELS = 12  # a numeric adjuster with more distinct values is cut into quantile bins
N_BINS = 5
MAX_RATIO_CV2 = 0.01  # largest var / (n mean^2) of a stratum's mean for standardizing by ratio (1 / mean biased <= 1%)


def _levels(series: pd.Series) -> np.ndarray:
  """Integer level of each row of one adjuster (missing is its own level)."""
  numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
  if numeric and series.nunique(dropna=True) > MAX_LEVELS:
    series = pd.qcut(series.astype(float), N_BINS, duplicates="drop")
  codes, uniques = pd.factorize(series, use_na_sentinel=True)
  if not numeric:  # text as the cube codes it (`ingest.category_label`): ' Black ' is 'Black', '' missing
    lookup: dict[str, int] = {}  # in order of first appearance, as factorize numbers them
    per_unique = np.asarray(
      [lookup.setdefault(lab, len(lookup)) if (lab := category_label(v)) else -1 for v in uniques] + [-1], np.int64
    )
    codes = per_unique[codes]  # the sentinel -1 picks the appended -1
  return codes.astype(np.int64)  # -1 = missing, a level like any other


def adjuster_levels(df: pd.DataFrame, adjusters: Sequence[str]) -> np.ndarray:
  """`[rows, A]` int64 level of each row in each adjuster (`_levels`; missing is -1, a level like any other)."""
  if not adjusters:
    raise ValueError("case-mix adjustment needs at least one adjuster column")
  for name in adjusters:
    if name not in df.columns:
      raise ValueError(
        f"adjuster column {name!r} is not in the table{near_names(name, df.columns)}; columns are {list(df.columns)}"
      )
  return np.stack([_levels(df[name]) for name in adjusters], axis=1)


def strata(df: pd.DataFrame, adjusters: Sequence[str], *, levels: np.ndarray | None = None) -> np.ndarray:
  """`[rows]` int64 stratum id: one per distinct combination of adjuster levels (`levels`: `adjuster_levels`
  already computed)."""
  levels = adjuster_levels(df, adjusters) if levels is None else levels
  _, ids = np.unique(levels, axis=0, return_inverse=True)
  return ids.reshape(-1).astype(np.int64)


def multiplicative_expected(levels: np.ndarray, values: np.ndarray, fit: np.ndarray, *, iters: int = 200) -> np.ndarray:
  """`[rows]` expected values of one non-negative measure under a main-effects multiplicative case mix: overall
  mean x one factor per adjuster level, fitted on the fitting rows by iterative proportional fitting (the Poisson
  log-linear model's maximum likelihood: every level's expected sum equals its observed sum). A level absent from
  the fitting rows keeps factor 1.

  Args:
    levels: `[rows, A]` adjuster levels (`adjuster_levels`).
    values: `[rows]` the measure, NaN missing.
    fit: `[rows]` bool, the fitting rows.
  """
  use = np.asarray(fit, bool) & ~np.isnan(values)
  v = values[use]
  codes = [np.unique(levels[:, a], return_inverse=True)[1].reshape(-1) for a in range(levels.shape[1])]
  expected = np.full(len(values), float(v.mean()))
  for _ in range(iters):
    worst = 0.0
    for c in codes:
      observed = np.bincount(c[use], weights=v, minlength=c.max() + 1)
      fitted = np.bincount(c[use], weights=expected[use], minlength=c.max() + 1)
      factor = np.where(fitted > 0, observed / np.where(fitted > 0, fitted, 1.0), 1.0)
      expected = expected * factor[c]
      worst = max(worst, float(np.max(np.abs(factor - 1.0))))
    if worst < 1e-10:
      break
  return expected


def ratio_measures(values: np.ndarray, is_binary: Sequence[bool], is_log: Sequence[bool]) -> tuple[bool, ...]:
  """Per measure, whether it asks to be standardized by ratio: tested on its natural scale (neither binary nor log)
  with no negative value and a positive mean on all rows (counts, costs). `residualize` then checks precision."""
  values = np.asarray(values, np.float64)
  out = []
  for m in range(values.shape[1]):
    v = values[:, m][~np.isnan(values[:, m])]
    out.append(bool(not is_binary[m] and not is_log[m] and len(v) and v.min() >= 0.0 and v.mean() > 0.0))
  return tuple(out)


def expected_values(
  stratum: np.ndarray, values: np.ndarray, fit: np.ndarray, names: Sequence[str] | None = None
) -> np.ndarray:
  """Expected value of each measure for every row, from its stratum's mean on the fitting rows.

  Args:
    stratum: `[rows]` stratum ids (`strata`).
    values: `[rows, M]` measures on their test scale, NaN where missing.
    fit: `[rows]` bool, rows used to estimate the stratum means.
    names: the measures' names, for the error.

  Returns:
    `[rows, M]` expected values; a stratum with no fitting row for a measure
    gets that measure's overall mean on the fitting rows.

  Raises:
    ValueError naming a measure with no value on the fitting rows (an ingest audit: it said "measure 0").
  """
  stratum = np.asarray(stratum)
  values = np.asarray(values, np.float64)
  fit = np.asarray(fit, bool)
  n_strata = int(stratum.max()) + 1 if len(stratum) else 0
  out = np.empty_like(values)
  for m in range(values.shape[1]):
    v = values[:, m]
    use = fit & ~np.isnan(v)
    if not use.any():
      name = repr(names[m]) if names is not None else str(m)
      raise ValueError(
        f"measure {name} has no value on the exploration half, whose rows the expected values are fitted on: it "
        "cannot be adjusted; give it values there (more rows, or a larger explore_fraction) or leave it out"
      )
    sums = np.bincount(stratum[use], weights=v[use], minlength=n_strata)
    counts = np.bincount(stratum[use], minlength=n_strata)
    overall = v[use].mean()
    means = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
    out[:, m] = means[stratum]
  return out


def ratio_precision(levels: np.ndarray, values: np.ndarray, fit: np.ndarray) -> float:
  """Largest squared coefficient of variation of a level's mean, var / (n mean^2), over the levels (columns of
  `levels` `[rows, A]`) with fitting rows of one measure (`values` `[rows]`, NaN missing); inf when a level has one
  row or a zero mean. Each factor of `multiplicative_expected` is about such a level's mean over its expected one."""
  use = np.asarray(fit, bool) & ~np.isnan(values)
  worst = 0.0
  for a in range(levels.shape[1]):
    frame = pd.DataFrame({"s": levels[use, a], "v": values[use]}).groupby("s")["v"]
    n, mean, var = frame.count().to_numpy(float), frame.mean().to_numpy(float), frame.var().to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
      cv2 = np.where((n >= 2) & (mean > 0), var / (n * mean**2), np.inf)
    worst = max(worst, float(np.max(cv2)) if len(cv2) else float("inf"))
  return worst


def residualize(
  df: pd.DataFrame,
  adjusters: Sequence[str],
  values: np.ndarray,
  fit: np.ndarray,
  *,
  ratio: Sequence[bool] | None = None,
  names: Sequence[str] | None = None,
  levels: np.ndarray | None = None,
):
  """Observed minus expected, or observed / expected for the `ratio` measures whose stratum means are precise
  (`ratio_precision` <= `MAX_RATIO_CV2`), for every row and measure (NaN stays NaN).

  Args:
    ratio: per measure, asks for standardization by ratio (`ratio_measures`; default none).
    names: measure names, for the summary line.
    levels: `adjuster_levels(df, adjusters)`, if already computed.

  Returns:
    (adjusted values `[rows, M]`, summary line naming the adjusters, strata and how each asking measure went,
    per measure whether it was standardized by ratio).
  """
  levels = adjuster_levels(df, adjusters) if levels is None else levels
  stratum = strata(df, adjusters, levels=levels)
  values = np.asarray(values, np.float64)
  asked = tuple(bool(r) for r in ratio) if ratio is not None else (False,) * values.shape[1]
  expected = expected_values(stratum, values, fit, names)
  n_fit = len(np.unique(stratum[np.asarray(fit, bool)]))
  label = [names[m] if names is not None else str(m) for m in range(values.shape[1])]
  used, notes = [], []
  for m, ask in enumerate(asked):
    cv2 = ratio_precision(levels, values[:, m], fit) if ask else float("inf")
    used.append(ask and cv2 <= MAX_RATIO_CV2)
    if used[-1]:
      expected[:, m] = multiplicative_expected(levels, values[:, m], fit)
      notes.append(f"{label[m]!r} observed / expected (ratio; main-effects multiplicative case mix)")
    elif ask:
      why = (  # the level's rows (one) are a small cell: said as the small-cell rule says them
        f"an adjuster level with fewer than {SMALL_CELL} rows or a zero mean"
        if not np.isfinite(cv2)
        else f"a level mean's squared CV {cv2:.3f} > {MAX_RATIO_CV2}"
      )
      notes.append(f"{label[m]!r} by difference ({why}: dividing by it would bias the ratios)")
  use = np.asarray(used, bool)[None, :]
  out = np.where(use, values / np.where(use, expected, 1.0), values - expected)
  line = (
    f"case-mix adjusted (indirect standardization) by {list(adjusters)}: {n_fit} strata estimated on the "
    "exploration half; measures are observed minus expected on their test scale"
  )
  if notes:
    line += "; non-negative measures: " + ", ".join(notes)
  return out, line, tuple(used)


@dataclasses.dataclass(frozen=True)
class ExpectationError:
  """What the confirmation rows' expected values owe to the estimate they came from (module docstring).

  Each measure has parts `(ids [rows], var [K])`: rows sharing an id share one estimated quantity whose variance is
  `var[id]`: for a measure adjusted by difference, its stratum's mean (one part, var = s^2 / n over the stratum's
  fitting rows; the measure's pooled within-stratum s^2 where a stratum has one fitting row, the overall mean's
  where it has none); for one adjusted by ratio, each adjuster level's factor (one part per adjuster, var = the
  level mean's squared coefficient of variation, the relative error of the rows' expected values, to first order;
  with two or more adjusters this is conservative, since the fitted factors share their levels' rows: a review's
  simulation gave 1.0e-4 against a true 5.7e-5, a null z of sd 0.95).
  """

  codes: np.ndarray  # [rows, F] int32: the confirmation rows' category codes (the cube's filter columns)
  present: np.ndarray  # [rows, M] bool: rows with a value of each measure
  parts: tuple[tuple[tuple[np.ndarray, np.ndarray], ...], ...]  # per measure: ((ids [rows] int64, var [K]), ...)


def _mean_variances(ids: np.ndarray, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Per id in range(k): rows, mean and sample variance (ddof 1; 0 with fewer than 2 rows) of `v`."""
  n = np.bincount(ids, minlength=k).astype(np.float64)
  sums = np.bincount(ids, weights=v, minlength=k)
  mean = np.where(n > 0, sums / np.maximum(n, 1.0), 0.0)
  squares = np.bincount(ids, weights=(v - mean[ids]) ** 2, minlength=k)
  var = np.where(n > 1, squares / np.maximum(n - 1.0, 1.0), 0.0)
  return n, mean, var


def expectation_error(
  levels: np.ndarray, values: np.ndarray, fit: np.ndarray, used_ratio: Sequence[bool], codes: np.ndarray
) -> ExpectationError:
  """The `ExpectationError` of the rows outside `fit` (the confirmation half).

  Args:
    levels: `[rows, A]` adjuster levels (`adjuster_levels`).
    values: `[rows, M]` the measures on their test scale, NaN missing (before adjustment).
    fit: `[rows]` bool, the rows the expectations were estimated on.
    used_ratio: per measure, whether it was standardized by ratio (`residualize`).
    codes: `[rows, F]` the table's category codes (`ingest.encode_table`).
  """
  fit = np.asarray(fit, bool)
  values = np.asarray(values, np.float64)
  stratum = np.unique(levels, axis=0, return_inverse=True)[1].reshape(-1)
  per_level = [np.unique(levels[:, a], return_inverse=True)[1].reshape(-1) for a in range(levels.shape[1])]
  parts = []
  for m in range(values.shape[1]):
    use = fit & ~np.isnan(values[:, m])
    v = values[use, m]
    if used_ratio[m]:
      measure_parts = []
      for ids in per_level:
        k = int(ids.max()) + 1
        n, mean, var = _mean_variances(ids[use], v, k)
        cv2 = np.where((n > 1) & (mean > 0), var / (np.maximum(n, 1.0) * np.where(mean > 0, mean, 1.0) ** 2), 0.0)
        measure_parts.append((ids[~fit], cv2))
      parts.append(tuple(measure_parts))
      continue
    k = int(stratum.max()) + 1
    n, _, var = _mean_variances(stratum[use], v, k)
    within = float(((n - 1.0).clip(0.0) * var).sum() / max(float((n - 1.0).clip(0.0).sum()), 1.0))
    overall = float(v.var(ddof=1) / len(v)) if len(v) > 1 else 0.0
    est = np.where(n > 1, var / np.maximum(n, 1.0), np.where(n == 1, within, overall))
    parts.append(((stratum[~fit], est),))
  return ExpectationError(codes=np.asarray(codes)[~fit], present=~np.isnan(values[~fit]), parts=tuple(parts))


def extra_variance(error: ExpectationError, filters: np.ndarray, protected: int, group: int, measure: int) -> float:
  """The variance a group-versus-rest difference of one measure's residuals owes to the expected values (module
  docstring): the sum over each part's ids of (group's share - rest's share)^2 x var[id].

  Args:
    error: from `expectation_error`.
    filters: `[F]` the cohort's codes (-1 unfiltered; `filters_to_codes`).
    protected: the protected column's index in the filter columns; group: its group's code.
    measure: the measure's index.
  """
  rows = error.present[:, measure] & np.all((filters < 0) | (error.codes == filters), axis=1)
  in_group = error.codes[:, protected] == group
  sides = (rows & in_group, rows & ~in_group)
  n_group, n_rest = (int(side.sum()) for side in sides)
  if n_group == 0 or n_rest == 0:
    return 0.0
  total = 0.0
  for ids, var in error.parts[measure]:
    share = [np.bincount(ids[side], minlength=len(var)) / n for side, n in zip(sides, (n_group, n_rest))]
    total += float(np.sum((share[0] - share[1]) ** 2 * var))
  return total
