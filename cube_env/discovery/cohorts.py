"""Statistics of cohorts as report rows: one row per (cohort, protected group, measure).

Each cohort is assessed with the same `findings.assess` as the environment's
reward, batched over a fixed chunk of cohorts so one compiled program serves
any list (search candidates, confirmation re-tests, one cohort's table). A
row holds `FINDING_COLUMNS` (the oracle's rows hold only those), a 95%
interval of each side's mean (for plots) and `tested`. `cohort_table`'s rows
are blank (None) only where a side's count lies in `[1, max(min_group, 11))`:
its other numbers are as computed, which the search and confirmation need, so a
binary rate and its n may give back a small count of events. `cohort_stats`, for
people, applies every rule of `cube_env.data.disclosure` (`hide_small_cells`);
`shown_findings` does the same for a table of findings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import special

from cube_env.data.disclosure import (
  HIDDEN,
  RATE_STATISTICS,
  SMALL_CELL,
  Z975,
  hide_small_cells,
  is_small_cell,
  side_quantile,
)
from cube_env.data.ingest import REST_LABEL, Cube, CubeMeta, codes_to_filters, cohort_label, filters_to_codes
from cube_env.environment import batching
from cube_env.environment import findings as fd
from cube_env.environment import groupby as gb
from cube_env.environment.params import EnvParams, bucketed_shape, make_params, resolve_z

COHORTS_PER_CALL = 16  # cohorts per compiled call
FINDING_COLUMNS = (
  "cohort",
  "depth",
  "protected",
  "group",
  "reference",
  "measure",
  "scale",
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
  "significant",
  "new",
  "filters",
)
COUNT_COLUMNS = ("cohort_rows", "n_group", "n_rest")
SIDE_COLUMNS = ("group_ci_low", "group_ci_high", "rest_ci_low", "rest_ci_high")
VAR_COLUMNS = ("var_group", "var_rest")  # sample variances on the test scale (confirmation's pooled check)
# Blanked under the small-cell rule: every number that reveals a count or its mean (a row holds some of them).
SUPPRESSED = COUNT_COLUMNS + RATE_STATISTICS
COLUMNS = FINDING_COLUMNS + SIDE_COLUMNS + VAR_COLUMNS + ("tested",)


def suppress(row: dict, min_group: float) -> dict:
  """Blanks (None) every `SUPPRESSED` number of `row` when one of its counts is small (small-cell rule)."""
  if any(is_small_cell(row.get(c), min_group) for c in COUNT_COLUMNS):
    for key in SUPPRESSED:
      if key in row:
        row[key] = None
  return row


P_FROM_Z = 1e-25  # a float32 p below it is taken again in float64 from the test's z (`p_value64`; `stats.t_test`'s z
# itself leans on Wallace's form from there)


def p_value64(p: float, z: float) -> float:
  """The test's two-sided p as a float64: the environment's float32 p, or below `P_FROM_Z` (it underflows to 0 from
  |z| about 13.2, and loses digits on the way) 2 Phi(-|z|) in float64 from the test's z, which is the normal
  equivalent of its p (`stats.compare`: the exact t p's z, or the two-proportion z), so a report shows 3e-55 for
  |z| 15.6 where it showed 0."""
  return float(2.0 * special.ndtr(-abs(z))) if p < P_FROM_Z else p


def finding_row(
  meta: CubeMeta,
  filters: dict,
  cohort_rows: float,
  p: int,
  g: int,
  m: int,
  cmp: Mapping,
  significant: bool,
  new: bool,
  *,
  min_group: float,
) -> dict:
  """One test (cohort, p, g, m) as a row of `FINDING_COLUMNS`, log-scale means back on the natural scale; a side of
  0 rows (a cohort or group absent from a half) has no mean, and the row no difference, z or p (None).

  Args:
    meta: the cube's metadata; filters: the cohort's `{column: label}`.
    cmp: the test's `stats.Comparison` fields as scalars.
    min_group: for the small-cell rule (`suppress`).
  """
  groups = meta.categories[meta.n_dimensions + p]
  is_log, is_bin = meta.is_log[m], meta.is_binary[m]
  is_ratio = bool(meta.is_ratio) and meta.is_ratio[m]
  is_count = bool(meta.is_count) and meta.is_count[m]
  # The first that applies: an adjusted (ratio) measure of counts is shown as a ratio.
  kinds = (("log", is_log), ("binary", is_bin), ("ratio", is_ratio), ("count", is_count))
  scale = next((k for k, on in kinds if on), "linear")
  mean_g, mean_r = float(cmp["mean_group"]), float(cmp["mean_rest"])
  diff = float(cmp["diff"])
  ratio = float(cmp["ratio"])
  if is_log:
    mean_g, mean_r, ratio = float(np.exp(mean_g)), float(np.exp(mean_r)), float(np.exp(diff))
  row = {
    "cohort": cohort_label(filters),
    "depth": len(filters),
    "protected": meta.protected_names[p],
    "group": groups[g],
    "reference": groups[1 - g] if len(groups) == 2 else REST_LABEL,
    "measure": meta.measure_names[m],
    "scale": scale,
    "cohort_rows": int(round(cohort_rows)),
    "n_group": int(round(float(cmp["n_group"]))),
    "n_rest": int(round(float(cmp["n_rest"]))),
    "mean_group": mean_g,
    "mean_rest": mean_r,
    "diff": diff,
    "ci_low": float(cmp["ci_low"]),
    "ci_high": float(cmp["ci_high"]),
    "ratio": ratio,
    "smd": float(cmp["smd"]),
    "z": float(cmp["z"]),
    "p_value": p_value64(float(cmp["p_value"]), float(cmp["z"])),
    "significant": bool(significant),
    "new": bool(new),
    "filters": dict(filters),
  }
  # A ratio of means only where it means one: not for a measure with values below 0 (an audit: 1.55 for means -1.61
  # against -1.04, the group lower; it has no relative difference either, `confirm`), nor a measure adjusted by
  # difference (excess values, a review: -0.665), nor a rest whose mean is 0 (the statistics' placeholder, 1e6).
  adjusted_by_difference = bool(meta.is_ratio) and not is_ratio and not is_log
  signed = bool(meta.is_signed) and meta.is_signed[m]
  if signed or adjusted_by_difference or not (is_log or (mean_r > 0 and mean_g >= 0)):
    row["ratio"] = None
  if row["n_group"] < 1 or row["n_rest"] < 1:  # a side without rows has no mean, nor a difference from it
    empty = ("mean_group",) * (row["n_group"] < 1) + ("mean_rest",) * (row["n_rest"] < 1)
    for key in empty + ("diff", "ci_low", "ci_high", "ratio", "smd", "z", "p_value"):
      row[key] = None  # (the statistics' placeholder was the measure's shift: a mean of 30.2 over 0 rows)
  return suppress(row, min_group)


@jax.jit
def _assess_cohorts(params: EnvParams, filters):
  """Comparison `[B, P, G, M]`, significant and new flags, rows `[B]` and test mask of cohorts `[B, F]`."""

  def one(f):
    stats, rows = gb.family_stats(params, f)
    prot = fd.protected_filtered(params, f)
    cmp, sig, new = fd.assess(params, prot, stats[0], stats[1:], f >= 0)
    return cmp, sig, new, rows[0], fd.test_mask(params, prot)

  # As the environment batches its steps (`batching`): one cohort at a time on a CPU, where a vmapped scatter
  # costs twice the unbatched one per addition; vmapped chunks on accelerators.
  chunk = batching.default_chunk()
  return jax.lax.map(one, filters, batch_size=chunk if chunk > 1 else None)


def _side_interval(mean: float, var: float, n: float, scale: str) -> tuple[float, float]:
  """95% interval of one side's mean (test scale in, natural scale out): Student's t with n - 1 degrees of freedom
  on its sample variance (`side_quantile`); a rate's is Wilson's score interval (Wald's read [1, 1] for 94 events in
  94 cases and [0, 0] for none in 65: a statistics audit)."""
  if n < 2:
    return float("nan"), float("nan")
  half = float(side_quantile(n)) * np.sqrt(max(var, 0.0) / n)
  if scale == "log":
    return float(np.exp(mean - half)), float(np.exp(mean + half))
  if scale == "binary":
    p, z2 = min(max(mean, 0.0), 1.0), Z975 * Z975
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z975 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (0.0 if p == 0 else float(center - half)), (1.0 if p == 1 else float(center + half))
  return float(mean - half), float(mean + half)


def cohort_table(
  cube: Cube,
  codes: np.ndarray,
  *,
  min_group: float = SMALL_CELL,
  z_screen: float = 4.0,
  max_depth: int = 3,
  only_new: bool = False,
  params: EnvParams | None = None,
  new_z: float | None = None,
) -> pd.DataFrame:
  """Every test (protected, group, measure) of each cohort in `codes`.

  Args:
    cube: from `build_cube`.
    codes: `[B, F]` int32 filter codes per cohort (-1 = all).
    min_group, z_screen, max_depth, new_z: as in `make_env` (z_screen a number here).
    only_new: keep only new significant findings.
    params: the cube's params made with these thresholds (e.g. a search
      space's), to skip building them again (the cell index and root grid
      cost seconds at a million cells); default: built here.

  Returns:
    DataFrame with `COLUMNS` plus `cohort_index` (row of `codes`), in the
    order of `codes`, then protected, group, measure; numbers as computed (the
    module's docstring: show people `shown_findings` of it).
  """
  codes = np.asarray(codes, np.int32).reshape(-1, len(cube.meta.filter_names))
  entries = []
  if len(codes) and params is None:
    params = make_params(
      cube, bucketed_shape(cube), min_group=min_group, z_screen=float(z_screen), new_z=new_z, max_depth=max_depth
    )
  elif params is not None:
    made = tuple(np.float32(x) for x in (params.min_group, params.z_screen, params.new_z))
    asked = tuple(np.float32(x) for x in (min_group, z_screen, z_screen if new_z is None else new_z))
    if made != asked:
      raise ValueError(
        "params were made with (min_group, z_screen, new_z) = "
        f"{tuple(float(x) for x in made)}; asked for {tuple(float(x) for x in asked)}"
      )
  for start in range(0, len(codes), COHORTS_PER_CALL):
    chunk = codes[start : start + COHORTS_PER_CALL]
    # Params padded to more filter columns (a space made with a larger shape): those columns stay "all".
    padded = np.full((COHORTS_PER_CALL, params.codes.shape[1]), -1, np.int32)
    padded[: len(chunk), : chunk.shape[1]] = chunk
    cmp, sig, new, rows, exists = jax.device_get(_assess_cohorts(params, jnp.asarray(padded)))
    cmp = {k: np.asarray(v) for k, v in cmp.items()}
    for b in range(len(chunk)):
      keep = new[b] if only_new else exists[b]
      entries += _rows(
        cube,
        chunk[b],
        float(rows[b]),
        {k: v[b] for k, v in cmp.items()},
        sig[b],
        new[b],
        np.nonzero(keep),
        start + b,
        min_group,
      )
  return pd.DataFrame(entries, columns=list(COLUMNS) + ["cohort_index"])


def _rows(cube, codes, rows, cmp, sig, new, where, index, min_group):
  meta = cube.meta
  labels = codes_to_filters(meta, codes)
  out = []
  for p, g, m in zip(*where):
    one = {k: v[p, g, m] for k, v in cmp.items()}
    row = finding_row(meta, labels, rows, p, g, m, one, sig[p, g, m], new[p, g, m], min_group=min_group)
    if row["n_group"] is not None:
      scale = row["scale"]
      row["group_ci_low"], row["group_ci_high"] = _side_interval(
        float(one["mean_group"]), float(one["var_group"]), float(one["n_group"]), scale
      )
      row["rest_ci_low"], row["rest_ci_high"] = _side_interval(
        float(one["mean_rest"]), float(one["var_rest"]), float(one["n_rest"]), scale
      )
      row["var_group"], row["var_rest"] = float(one["var_group"]), float(one["var_rest"])
    else:
      row["var_group"] = row["var_rest"] = None
    row["tested"] = bool(one["valid"])
    row["cohort_index"] = index
    out.append(row)
  return out


def cohort_stats(
  cube: Cube,
  filters: Mapping[str, object] | Sequence[Mapping[str, object]] | None = None,
  *,
  min_group: float = SMALL_CELL,
  z_screen: float | str = 4.0,
  max_depth: int = 3,
) -> pd.DataFrame:
  """Statistics of a cohort, or of several shown together: a row per (cohort, protected, group, measure) tested.

  Args:
    cube: from `build_cube`.
    filters: `{column: category label}`; {} or None is the whole population. A list of such mappings gives the
      cohorts' rows in one table, in that order, hidden together (below).
    min_group, z_screen, max_depth: as in `make_env` (max_depth only matters
      for z_screen="bonferroni").

  Returns:
    DataFrame with `FINDING_COLUMNS` plus `tested` (False where a side is under
    min_group or a binary measure lacks expected counts; then z = 0, p = 1).
    Where a count is small (`cube_env.data.disclosure`), every number that
    would reveal it (counts, means, differences, intervals, z, p) is None; so
    are the statistics of a binary test whose events or non-events on a side
    are that few, and the numbers from which such a count comes back by
    subtraction within the table's tests (`hide_small_cells`), and `hidden`
    says why a row's numbers are blank. Hidden numbers are None, so those
    columns are of dtype object: `pd.to_numeric(df[c])` gives floats with NaN.

  The rule sees one call's table only: the tables of separate calls shown side by side can give a hidden count
  back (a cohort's group count less its shown children's, a cold audit), so cohorts meant to be shown together
  are asked for in one call.
  """
  many = isinstance(filters, Sequence) and not isinstance(filters, str)
  cohorts = list(filters) if many else [filters]
  if many and not cohorts:
    raise ValueError("filters: an empty list names no cohort (give {} for the whole population)")
  for i, one in enumerate(cohorts):
    if one is not None and not isinstance(one, Mapping):
      where = f"filters[{i}]" if many else "filters"
      raise ValueError(f"{where} must be a mapping {{column: category label}}, got {type(one).__name__} {one!r}")
  codes = np.stack([filters_to_codes(cube.meta, dict(one or {})) for one in cohorts])
  z = resolve_z(cube, z_screen, max_depth)
  table = cohort_table(cube, codes, min_group=min_group, z_screen=z, max_depth=max_depth)
  # Hidden on the whole table (the sides' variances and intervals too, which a measure with few values needs: the
  # shown smd and difference interval give them back), then the shown columns.
  categories = dict(zip(cube.meta.filter_names, cube.meta.categories))
  shown = hide_small_cells(table, min_group, few_values=cube.meta.few_values_by_measure, categories=categories)
  shown = shown[list(FINDING_COLUMNS) + ["tested", HIDDEN]]
  for c in shown.columns:  # a number `cohort_table` left blank (NaN beside other cohorts' numbers) is None too
    if shown[c].isna().any():
      shown[c] = shown[c].astype(object).where(shown[c].notna(), None)
  return shown
