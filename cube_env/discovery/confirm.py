"""Honest confirmation of search candidates on held-out rows.

Every candidate (a new significant finding of the search on the exploration
half) is re-tested, same cohort, protected group and measure, on the
confirmation half. A candidate is *confirmed* when

1. its confirmation p-value passes Benjamini-Hochberg at `q` over all
   candidates (untestable ones count with p = 1),
2. the confirmation effect has the exploration effect's sign, and
3. its relative difference is at least `min_relative_diff` (the AHRQ
   National Healthcare Quality and Disparities Report rule: 10%).

The relative difference is group versus rest on the natural scale: the ratio
of geometric means minus one for log-scale measures, the rate ratio minus one
for binary measures (events are read as adverse; for a measure listed as
`favorable` the ratio of non-event rates is used), the ratio of means minus
one otherwise. With case-mix adjustment it is the adjusted difference over the
rest's observed mean (log scale: exp of the adjusted log ratio, minus one).
The others are returned as unconfirmed with the reason.

Reference: Benjamini, Y. & Hochberg, Y. (1995). Controlling the false
discovery rate. JRSS B 57, 289-300.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cube_env.data.ingest import Cube, filters_to_codes
from cube_env.discovery import cohorts

KEY = ["cohort", "protected", "group", "measure"]
STAT_COLUMNS = (
  "cohort_rows",
  "n_group",
  "n_rest",
  "mean_group",
  "mean_rest",
  "diff",
  "ci_low",
  "ci_high",
  "ratio",
  "z",
  "p_value",
) + cohorts.SIDE_COLUMNS


def benjamini_hochberg(p_values, *, q: float = 0.05):
  """Step-up Benjamini-Hochberg procedure.

  Args:
    p_values: `[k]` p-values in [0, 1].
    q: false discovery rate.

  Returns:
    (reject `[k]` bool, adjusted p `[k]`): adjusted p_(i) = min over j >= i of
    p_(j) k / j, capped at 1; reject where adjusted p <= q.
  """
  p = np.asarray(p_values, np.float64).reshape(-1)
  if not 0.0 < q < 1.0:
    raise ValueError(f"q must lie in (0, 1), got {q}")
  if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
    raise ValueError("p-values must lie in [0, 1]")
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
  p = np.asarray(p_values, np.float64).reshape(-1)
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
  if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
    raise ValueError("p-values must lie in [0, 1]")
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
  w = np.exp(tilt * (z - z.max()))
  return w * len(w) / w.sum()


def relative_difference(row, *, adjusted: bool, favorable: bool, rest_observed: float | None = None) -> float:
  """Relative difference of group versus rest (see the module docstring); NaN when undefined."""
  scale = row["scale"]
  if row.get("mean_group") is None or row.get("mean_rest") is None:
    return float("nan")
  if scale == "log":
    return float(np.exp(row["diff"]) - 1.0)
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


def retest(candidates: pd.DataFrame, cube: Cube, *, min_group: float, z_screen: float, max_depth: int) -> pd.DataFrame:
  """Statistics of each candidate's (cohort, protected, group, measure) in `cube` (one row each, same order)."""
  if len(candidates) == 0:
    return pd.DataFrame(columns=list(cohorts.COLUMNS))
  meta = cube.meta
  unique = {}
  for filters in candidates["filters"]:
    key = tuple(sorted(filters.items()))
    unique.setdefault(key, len(unique))
  codes = np.stack([filters_to_codes(meta, dict(k)) for k in unique])
  table = cohorts.cohort_table(cube, codes, min_group=min_group, z_screen=z_screen, max_depth=max_depth)
  lookup = {(int(r.cohort_index), r.protected, r.group, r.measure): i for i, r in enumerate(table.itertuples())}
  rows = []
  for c in candidates.itertuples():
    idx = unique[tuple(sorted(c.filters.items()))]
    rows.append(table.iloc[lookup[(idx, c.protected, c.group, c.measure)]])
  return pd.DataFrame(rows).reset_index(drop=True)


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
) -> pd.DataFrame:
  """Re-tests candidates on the confirmation cube and applies BH and the relative-difference rule.

  Args:
    candidates: new significant findings of the search (rows of
      `cohorts.cohort_table` or `enumerate_findings`) on the exploration half.
    cube: the confirmation half (adjusted when the search was).
    q: Benjamini-Hochberg false discovery rate over all candidates.
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

  Returns:
    One row per candidate: the confirmation statistics under the usual
    names, the exploration ones prefixed `explore_`, `relative_diff`,
    `p_adjusted` (BH), `confirmed` and `reason`; confirmed rows first, then
    by |z|.
  """
  extra = ["relative_diff", "p_adjusted", "confirm_new", "confirmed", "reason"]
  if len(candidates) == 0:
    cols = KEY + list(STAT_COLUMNS) + [f"explore_{c}" for c in STAT_COLUMNS] + extra
    return pd.DataFrame(columns=cols + ["filters", "scale", "reference", "depth"])
  cand = candidates.reset_index(drop=True)
  kw = dict(min_group=min_group, z_screen=z_screen if new_z is None else new_z, max_depth=max_depth)
  again = retest(cand, cube, **kw)
  raw = retest(cand, raw_cube, **kw) if raw_cube is not None else None
  out = cand.drop(columns=[c for c in STAT_COLUMNS if c in cand.columns] + ["significant", "tested"], errors="ignore")
  for c in STAT_COLUMNS:
    out[f"explore_{c}"] = cand[c] if c in cand.columns else None
    out[c] = again[c].to_numpy()
  tested = again["tested"].to_numpy(bool) & again["p_value"].notna().to_numpy()
  p = np.where(tested, again["p_value"].fillna(1.0).to_numpy(float), 1.0)
  if correction == "bh":
    reject, p_adj = benjamini_hochberg(p, q=q)
  elif correction in ("holm", "weighted"):
    weights = exploration_weights(cand["z"].to_numpy(float), tilt=tilt) if correction == "weighted" else None
    reject, p_adj = holm(p, alpha=q, weights=weights)
  else:
    raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
  out["p_adjusted"] = p_adj
  rel = []
  for i, row in enumerate(again.to_dict("records")):
    rest_obs = None if raw is None else raw.iloc[i]["mean_rest"]
    rel.append(
      relative_difference(
        row,
        adjusted=raw is not None,
        favorable=row["measure"] in favorable,
        rest_observed=None if rest_obs is None else float(rest_obs),
      )
    )
  out["relative_diff"] = rel
  same_sign = np.sign(again["z"].fillna(0).to_numpy(float)) == np.sign(cand["z"].to_numpy(float))
  big = np.abs(np.nan_to_num(np.asarray(rel, float))) >= min_relative_diff
  renewed = again["new"].to_numpy(bool) if new_z is not None else np.ones(len(cand), bool)
  out["confirm_new"] = renewed
  out["confirmed"] = tested & reject & same_sign & big & renewed
  out["reason"] = [
    _reason(t, r, s, b, pa, rd, q, min_relative_diff, correction) if (n or not (t and r and s and b)) else _NOT_NEW
    for t, r, s, b, pa, rd, n in zip(tested, reject, same_sign, big, p_adj, rel, renewed)
  ]
  order = np.lexsort((-np.abs(np.nan_to_num(out["z"].to_numpy(float))), ~out["confirmed"].to_numpy(bool)))
  return out.iloc[order].reset_index(drop=True)


_NOT_NEW = "not new in the confirmation half: a parent shows the same gap and this cohort's is not stronger"
_CORRECTION_NAMES = {"bh": "Benjamini-Hochberg", "holm": "Holm", "weighted": "weighted Holm"}


def _reason(tested, reject, same_sign, big, p_adj, rel, q, min_rel, correction="bh") -> str:
  if not tested:
    return "not testable in the confirmation half (small group or too few events)"
  if not same_sign:
    return "opposite direction in the confirmation half"
  if not reject:
    return f"not significant after {_CORRECTION_NAMES[correction]} (adjusted p {p_adj:.3g} > {q:g})"
  if not big:
    return f"relative difference {abs(rel):.1%} below {min_rel:.0%}"
  return "confirmed"
