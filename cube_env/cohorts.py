"""Statistics of a list of cohorts, as report rows (search candidates, confirmation re-tests).

Each cohort is assessed with the same `findings.assess` as the environment's
reward and the oracle, batched over a fixed chunk of cohorts so one compiled
program serves any list. Rows carry, beside `oracle.FINDING_COLUMNS`, a 95%
interval of each side's mean (for plots) and `tested`. The small-cell rule is
applied with the caller's `min_group`: where a count lies in
`[1, max(min_group, 11))`, every number that would reveal it is blank (None).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from cube_env import findings as fd
from cube_env import groupby as gb
from cube_env import oracle
from cube_env.ingest import Cube
from cube_env.params import EnvParams

CHUNK = 16  # cohorts per compiled call
Z975 = 1.959963984540054
SIDE_COLUMNS = ("group_ci_low", "group_ci_high", "rest_ci_low", "rest_ci_high")
COLUMNS = tuple(oracle.FINDING_COLUMNS) + SIDE_COLUMNS + ("tested",)
COUNT_COLUMNS = ("cohort_rows", "n_group", "n_rest")


@jax.jit
def _families(params: EnvParams, filters):
  """Comparison `[B, P, G, M]`, significant and new flags, and rows `[B]` of cohorts `[B, F]`."""

  def one(f):
    stats, rows = gb.family_stats(params, f)
    cmp, sig, new = fd.assess(params, fd.protected_filtered(params, f), stats[0], stats[1:], f >= 0)
    return cmp, sig, new, rows[0]

  out = jax.vmap(one)(filters)
  exists = jax.vmap(lambda f: fd.test_mask(params, fd.protected_filtered(params, f)))(filters)
  return out, exists


def params_for(
  cube: Cube, *, min_group: float, z_screen: float, max_depth: int, min_cohort: float | None = None
) -> EnvParams:
  """Params padded to a power-of-two number of cells (shared compiled code across cubes)."""
  return oracle._bucketed_params(
    cube, max_depth=max_depth, min_group=min_group, min_cohort=min_cohort, z_screen=z_screen
  )


def _side_interval(mean: float, var: float, n: float, scale: str) -> tuple[float, float]:
  """95% interval of one side's mean (test scale in, natural scale out)."""
  if n < 2:
    return float("nan"), float("nan")
  half = Z975 * np.sqrt(max(var, 0.0) / n)
  if scale == "log":
    return float(np.exp(mean - half)), float(np.exp(mean + half))
  if scale == "binary":
    half = Z975 * np.sqrt(max(mean * (1 - mean), 0.0) / n)
    return float(max(mean - half, 0.0)), float(min(mean + half, 1.0))
  return float(mean - half), float(mean + half)


def suppress(row: dict, min_group: float) -> dict:
  """Blanks every number that reveals a count in `[1, max(min_group, 11))` (small-cell rule)."""
  limit = max(float(min_group), float(oracle.SMALL_CELL))
  counts = [row.get(c) for c in COUNT_COLUMNS]
  if any(c is not None and 0 < c < limit for c in counts):
    for key in oracle.SUPPRESSED + SIDE_COLUMNS:
      if key in row:
        row[key] = None
  return row


_COUNT_PHRASE = re.compile(r"\b(\d+)( missing values| rows)")


def redact_counts(text: str, min_group: float) -> str:
  """Replaces row counts in `[1, max(min_group, 11))` in a coding note by "fewer than N" (small-cell rule)."""
  limit = int(max(float(min_group), float(oracle.SMALL_CELL)))

  def sub(match):
    n = int(match.group(1))
    return f"fewer than {limit}{match.group(2)}" if 0 < n < limit else match.group(0)

  return _COUNT_PHRASE.sub(sub, text)


def cohort_table(
  cube: Cube,
  codes: np.ndarray,
  *,
  min_group: float = 11,
  z_screen: float = 4.0,
  max_depth: int = 3,
  only_new: bool = False,
) -> pd.DataFrame:
  """Every test (protected, group, measure) of each cohort in `codes`.

  Args:
    cube: from `build_cube`.
    codes: `[B, F]` int32 filter codes per cohort (-1 = all).
    min_group, z_screen, max_depth: as in `make_env` (z_screen a number here).
    only_new: keep only new significant findings.

  Returns:
    DataFrame with `COLUMNS` plus `cohort_index` (row of `codes`), in the
    order of `codes`, then protected, group, measure.
  """
  codes = np.asarray(codes, np.int32).reshape(-1, len(cube.meta.filter_names))
  params = params_for(cube, min_group=min_group, z_screen=float(z_screen), max_depth=max_depth)
  entries = []
  for start in range(0, len(codes), CHUNK):
    chunk = codes[start : start + CHUNK]
    padded = np.full((CHUNK, chunk.shape[1]), -1, np.int32)
    padded[: len(chunk)] = chunk
    (cmp, sig, new, rows), exists = jax.device_get(_families(params, jnp.asarray(padded)))
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
  labels = oracle.codes_to_filters(meta, codes)
  out = []
  for p, g, m in zip(*where):
    one = {k: v[p, g, m] for k, v in cmp.items()}
    entry = oracle._entry(meta, labels, rows, p, g, m, one, sig[p, g, m], new[p, g, m])
    if entry["n_group"] is not None:
      scale = entry["scale"]
      entry["group_ci_low"], entry["group_ci_high"] = _side_interval(
        float(one["mean_group"]), float(one["var_group"]), float(one["n_group"]), scale
      )
      entry["rest_ci_low"], entry["rest_ci_high"] = _side_interval(
        float(one["mean_rest"]), float(one["var_rest"]), float(one["n_rest"]), scale
      )
    entry["tested"] = bool(one["valid"])
    entry["cohort_index"] = index
    out.append(suppress(entry, min_group))
  return out
