"""The exhaustive oracle and per-cohort statistics as pandas tables.

`enumerate_findings` visits every cohort up to `max_depth` that the
environment could visit (rows >= min_cohort). For each subset of at most
`max_depth` filter columns it runs one `segment_sum` over the cells keyed by
the subset's codes, giving every cohort of that subset at once; parents come
from summing the table over one key axis. Each cohort is then assessed with
the same `findings.assess` as the environment's reward. The query count it
reports is the number of cohorts visited: the cost, in environment steps, of
enumerating the space (one group-by per cohort, the unit all searches use).
"""

from __future__ import annotations

import functools
import itertools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from cube_env import findings as fd
from cube_env import groupby as gb
from cube_env.ingest import Cube, CubeMeta
from cube_env.params import EnvParams, make_params

FINDING_COLUMNS = (
    "cohort", "depth", "protected", "group", "reference", "measure", "scale", "cohort_rows", "n_group",
    "n_rest", "mean_group", "mean_rest", "diff", "ci_low", "ci_high", "ratio", "smd", "z", "p_value",
    "significant", "new", "filters")


def filters_to_codes(meta: CubeMeta, filters: Mapping[str, object]) -> np.ndarray:
  """`{column: label}` -> `[F]` int32 codes (-1 = all); unknown names raise ValueError."""
  codes = np.full((len(meta.filter_names),), -1, np.int32)
  for name, label in filters.items():
    codes[meta.column_index(name)] = meta.code(name, label)
  return codes


def codes_to_filters(meta: CubeMeta, codes) -> dict[str, str]:
  return {meta.filter_names[f]: meta.categories[f][int(v)] for f, v in enumerate(codes) if int(v) >= 0}


def cohort_label(filters: Mapping[str, str]) -> str:
  return " & ".join(f"{k}={v}" for k, v in filters.items()) if filters else "(all cases)"


def _rows_to_frame(meta: CubeMeta, entries: list[dict]) -> pd.DataFrame:
  return pd.DataFrame(entries, columns=list(FINDING_COLUMNS))


def _entry(meta: CubeMeta, filters: dict, cohort_rows: float, p: int, g: int, m: int, cmp: dict,
           significant: bool, new: bool) -> dict:
  """One (cohort, p, g, m) as a report row (log-scale measures back on the natural scale)."""
  prot_f = meta.n_dimensions + p
  groups = meta.categories[prot_f]
  reference = groups[1 - g] if len(groups) == 2 else "rest"
  is_log, is_bin = meta.is_log[m], meta.is_binary[m]
  mean_g, mean_r = float(cmp["mean_group"]), float(cmp["mean_rest"])
  diff = float(cmp["diff"])
  ratio = float(cmp["ratio"])
  if is_log:
    mean_g, mean_r, ratio = float(np.exp(mean_g)), float(np.exp(mean_r)), float(np.exp(diff))
  return {
      "cohort": cohort_label(filters), "depth": len(filters), "protected": meta.filter_names[prot_f],
      "group": groups[g], "reference": reference, "measure": meta.measure_names[m],
      "scale": "log" if is_log else ("binary" if is_bin else "linear"), "cohort_rows": int(round(cohort_rows)),
      "n_group": int(round(float(cmp["n_group"]))), "n_rest": int(round(float(cmp["n_rest"]))),
      "mean_group": mean_g, "mean_rest": mean_r, "diff": diff, "ci_low": float(cmp["ci_low"]),
      "ci_high": float(cmp["ci_high"]), "ratio": ratio, "smd": float(cmp["smd"]), "z": float(cmp["z"]),
      "p_value": float(cmp["p_value"]), "significant": bool(significant), "new": bool(new),
      "filters": dict(filters)}


@jax.jit
def _family(params: EnvParams, filters):
  stats, rows = gb.family_stats(params, filters)
  cmp, sig, new = fd.assess(params, fd.protected_filtered(params, filters), stats[0], stats[1:], filters >= 0)
  return cmp, sig, new, rows[0]


def cohort_stats(cube: Cube, filters: Mapping[str, object] | None = None, *, min_group: float = 11,
                 z_screen: float | str = 4.0, max_depth: int = 3) -> pd.DataFrame:
  """Statistics of one cohort: a row per (protected, group, measure) it tests.

  Args:
    cube: from `build_cube`.
    filters: `{column: category label}`; {} or None is the whole population.
    min_group, z_screen, max_depth: as in `make_env` (max_depth only matters
      for z_screen="bonferroni").

  Returns:
    DataFrame with `FINDING_COLUMNS` plus `tested` (False where a side is under
    min_group or a binary measure lacks expected counts; then z = 0, p = 1).
  """
  filters = dict(filters or {})
  meta = cube.meta
  codes = filters_to_codes(meta, filters)
  params = make_params(cube, max_depth=max_depth, min_group=min_group, z_screen=z_screen)
  cmp, sig, new, rows = jax.device_get(_family(params, jnp.asarray(codes)))
  exists = np.asarray(fd.test_mask(params, fd.protected_filtered(params, jnp.asarray(codes))))
  labels = codes_to_filters(meta, codes)
  cmp_d = {k: np.asarray(v) for k, v in cmp.items()}
  entries = []
  for p, g, m in zip(*np.nonzero(exists)):
    e = _entry(meta, labels, float(rows), p, g, m, {k: v[p, g, m] for k, v in cmp_d.items()}, sig[p, g, m],
               new[p, g, m])
    e["tested"] = bool(cmp_d["valid"][p, g, m])
    entries.append(e)
  return pd.DataFrame(entries, columns=list(FINDING_COLUMNS) + ["tested"])


@functools.partial(jax.jit, static_argnames=("num_values", "slots"))
def _subset_findings(params: EnvParams, cols, used, *, num_values: int, slots: int):
  """Every cohort of one column subset: rows, comparison, significant, new.

  Args:
    cols: `[slots]` int32 filter columns; `used`: `[slots]` bool.

  Returns:
    (rows `[C^slots]`, Comparison `[C^slots, P, G, M]`, sig, new, filters `[C^slots, F]`).
  """
  c = num_values
  n, num_f = params.codes.shape
  digits = jnp.where(used[None, :], jnp.take(params.codes, cols, axis=1), 0)  # [N, S]
  radix = c ** jnp.arange(slots - 1, -1, -1)
  key = jnp.sum(digits * radix[None, :], axis=1)
  pay = gb.payload(params)
  k_shape = pay.shape[1:]
  pay = jnp.concatenate([pay.reshape(n, -1), params.rows[:, None]], axis=1)
  table = jax.ops.segment_sum(pay, key, num_segments=c**slots).reshape((c,) * slots + (-1,))
  parents = jnp.stack([jnp.broadcast_to(table.sum(axis=s, keepdims=True), table.shape) for s in range(slots)])
  table = table.reshape(c**slots, -1)
  parents = parents.reshape(slots, c**slots, -1).transpose(1, 0, 2)  # [K, S, payload]
  grid = jnp.stack(jnp.meshgrid(*[jnp.arange(c)] * slots, indexing="ij"), -1).reshape(-1, slots)  # [K, S]
  filters = jnp.full((c**slots, num_f), -1, jnp.int32)
  for s in range(slots):
    filters = filters.at[:, cols[s]].set(jnp.where(used[s], grid[:, s], filters[:, cols[s]]))

  def one(f, child, par):
    stats_c = child[:-1].reshape(k_shape)
    stats_p = par[:, :-1].reshape((slots,) + k_shape)
    return fd.assess(params, fd.protected_filtered(params, f), stats_c, stats_p, used)

  cmp, sig, new = jax.vmap(one)(filters, table, parents)
  return table[:, -1], cmp, sig, new, filters


def enumerate_findings(cube: Cube, *, max_depth: int = 3, min_group: float = 11,
                       min_cohort: float | None = None, z_screen: float | str = 4.0,
                       include_old: bool = True) -> pd.DataFrame:
  """Every significant disparity in every visitable cohort up to `max_depth`.

  Args:
    cube: from `build_cube`.
    max_depth, min_group, min_cohort, z_screen: as in `make_env`.
    include_old: keep significant findings that are not new (flag `new`).

  Returns:
    DataFrame with `FINDING_COLUMNS`; `df.attrs["queries"]` is the number of
    cohorts visited (group-by queries), `df.attrs["z_screen"]` the threshold.
  """
  meta = cube.meta
  params = make_params(cube, max_depth=max_depth, min_group=min_group, min_cohort=min_cohort, z_screen=z_screen)
  num_values = max(len(c) for c in meta.categories)
  num_f = len(meta.filter_names)
  slots = max_depth
  queries = 0
  entries: list[dict] = []
  min_rows = float(params.min_cohort)
  for k in range(0, max_depth + 1):
    for subset in itertools.combinations(range(num_f), k):
      cols = np.zeros((slots,), np.int32)
      cols[:k] = subset
      used = np.arange(slots) < k
      rows, cmp, sig, new, filters = _subset_findings(params, jnp.asarray(cols), jnp.asarray(used),
                                                      num_values=num_values, slots=slots)
      rows = np.asarray(rows)
      visitable = rows >= min_rows
      if k == 0:
        visitable &= np.arange(len(rows)) == 0  # the root is one cohort
      queries += int(visitable.sum())
      sig = np.asarray(sig) & visitable[:, None, None, None]
      if not include_old:
        sig &= np.asarray(new)
      hits = np.nonzero(sig)
      if len(hits[0]) == 0:
        continue
      new = np.asarray(new)
      filters = np.asarray(filters)
      cmp_d = {name: np.asarray(v) for name, v in cmp.items()}
      for i, p, g, m in zip(*hits):
        labels = codes_to_filters(meta, filters[i])
        entries.append(_entry(meta, labels, float(rows[i]), p, g, m,
                              {name: v[i, p, g, m] for name, v in cmp_d.items()}, True, new[i, p, g, m]))
  out = _rows_to_frame(meta, entries)
  out.attrs["queries"] = queries
  out.attrs["z_screen"] = float(params.z_screen)
  return out
