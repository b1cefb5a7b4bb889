"""Case-mix adjustment by indirect standardization.

Each row's *expected* value of a measure is the mean of that measure among
rows of its adjuster stratum (the combination of its adjuster categories,
e.g. procedure x ASA class), estimated on the fitting rows only (the
exploration half, so the confirmation half is not used twice). The disparity
is then measured on observed minus expected, on the measure's test scale: for
a log-scale measure the group's mean residual is the log of its geometric
observed/expected ratio; for a binary one it is the excess event rate over
what the case mix predicts. A gap that case mix explains has residuals that
no longer differ between groups.

Reference: Fleiss, Levin & Paik (2003), Statistical Methods for Rates and
Proportions, ch. 19 (indirect standardization).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

MAX_LEVELS = 12  # a numeric adjuster with more distinct values is cut into quantile bins
N_BINS = 5


def _levels(series: pd.Series) -> np.ndarray:
  """Integer level of each row of one adjuster (missing is its own level)."""
  numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
  if numeric and series.nunique(dropna=True) > MAX_LEVELS:
    series = pd.qcut(series.astype(float), N_BINS, duplicates="drop")
  codes, _ = pd.factorize(series, use_na_sentinel=True)
  return codes.astype(np.int64)  # -1 = missing, a level like any other


def strata(df: pd.DataFrame, adjusters: Sequence[str]) -> np.ndarray:
  """`[rows]` int64 stratum id: one per distinct combination of adjuster levels."""
  if not adjusters:
    raise ValueError("case-mix adjustment needs at least one adjuster column")
  for name in adjusters:
    if name not in df.columns:
      raise ValueError(f"adjuster column {name!r} is not in the table; columns are {list(df.columns)}")
  levels = np.stack([_levels(df[name]) for name in adjusters], axis=1)
  _, ids = np.unique(levels, axis=0, return_inverse=True)
  return ids.reshape(-1).astype(np.int64)


def expected_values(stratum: np.ndarray, values: np.ndarray, fit: np.ndarray) -> np.ndarray:
  """Expected value of each measure for every row, from its stratum's mean on the fitting rows.

  Args:
    stratum: `[rows]` stratum ids (`strata`).
    values: `[rows, M]` measures on their test scale, NaN where missing.
    fit: `[rows]` bool, rows used to estimate the stratum means.

  Returns:
    `[rows, M]` expected values; a stratum with no fitting row for a measure
    gets that measure's overall mean on the fitting rows.
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
      raise ValueError(f"measure {m} has no value on the fitting rows; it cannot be adjusted")
    sums = np.bincount(stratum[use], weights=v[use], minlength=n_strata)
    counts = np.bincount(stratum[use], minlength=n_strata)
    overall = v[use].mean()
    means = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
    out[:, m] = means[stratum]
  return out


def residualize(df: pd.DataFrame, adjusters: Sequence[str], values: np.ndarray, fit: np.ndarray):
  """Observed minus expected for every row and measure (NaN stays NaN).

  Returns:
    (residuals `[rows, M]`, summary line naming the adjusters and strata).
  """
  stratum = strata(df, adjusters)
  expected = expected_values(stratum, values, fit)
  n_fit = len(np.unique(stratum[np.asarray(fit, bool)]))
  line = (
    f"case-mix adjusted (indirect standardization) by {list(adjusters)}: {n_fit} strata estimated on the "
    "exploration half; measures are observed minus expected on their test scale"
  )
  return values - expected, line
