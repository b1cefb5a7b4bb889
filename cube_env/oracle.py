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

import dataclasses
import functools
import itertools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from cube_env import findings as fd
from cube_env import groupby as gb
from cube_env.ingest import Cube, CubeMeta
from cube_env.params import EnvParams, EnvShape, make_params

SMALL_CELL = 11  # US health-data reporting: no cell count from 1 to 10 is shown

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


def _bucketed_params(cube: Cube, **kwargs) -> EnvParams:
  """Params padded to a power-of-two number of cells, so cubes of similar size share compiled code."""
  shape = EnvShape.of(cube)
  shape = dataclasses.replace(shape, num_cells=1 << max(shape.num_cells - 1, 1).bit_length())
  return make_params(cube, shape, **kwargs)


def _entry(
  meta: CubeMeta, filters: dict, cohort_rows: float, p: int, g: int, m: int, cmp: dict, significant: bool, new: bool
) -> dict:
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
  entry = {
    "cohort": cohort_label(filters),
    "depth": len(filters),
    "protected": meta.filter_names[prot_f],
    "group": groups[g],
    "reference": reference,
    "measure": meta.measure_names[m],
    "scale": "log" if is_log else ("binary" if is_bin else "linear"),
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
    "p_value": float(cmp["p_value"]),
    "significant": bool(significant),
    "new": bool(new),
    "filters": dict(filters),
  }
  return _suppress_small_cells(entry)


SUPPRESSED = (
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


def _suppress_small_cells(entry: dict) -> dict:
  """Small-cell rule: if any count is 1-10, blank every number that reveals it or its mean."""
  counts = (entry["cohort_rows"], entry["n_group"], entry["n_rest"])
  if any(0 < c < SMALL_CELL for c in counts):
    entry.update(dict.fromkeys(SUPPRESSED))
  return entry


@jax.jit
def _family(params: EnvParams, filters):
  stats, rows = gb.family_stats(params, filters)
  cmp, sig, new = fd.assess(params, fd.protected_filtered(params, filters), stats[0], stats[1:], filters >= 0)
  return cmp, sig, new, rows[0]


def cohort_stats(
  cube: Cube,
  filters: Mapping[str, object] | None = None,
  *,
  min_group: float = 11,
  z_screen: float | str = 4.0,
  max_depth: int = 3,
) -> pd.DataFrame:
  """Statistics of one cohort: a row per (protected, group, measure) it tests.

  Args:
    cube: from `build_cube`.
    filters: `{column: category label}`; {} or None is the whole population.
    min_group, z_screen, max_depth: as in `make_env` (max_depth only matters
      for z_screen="bonferroni").

  Returns:
    DataFrame with `FINDING_COLUMNS` plus `tested` (False where a side is under
    min_group or a binary measure lacks expected counts; then z = 0, p = 1).
    Where any count is 1 to 10, every number that would reveal it (counts,
    means, differences, intervals, z, p) is None (the small-cell rule).
  """
  filters = dict(filters or {})
  meta = cube.meta
  codes = filters_to_codes(meta, filters)
  params = _bucketed_params(cube, max_depth=max_depth, min_group=min_group, z_screen=z_screen)
  cmp, sig, new, rows = jax.device_get(_family(params, jnp.asarray(codes)))
  exists = np.asarray(fd.test_mask(params, fd.protected_filtered(params, jnp.asarray(codes))))
  labels = codes_to_filters(meta, codes)
  cmp_d = {k: np.asarray(v) for k, v in cmp.items()}
  entries = []
  for p, g, m in zip(*np.nonzero(exists)):
    e = _entry(
      meta, labels, float(rows), p, g, m, {k: v[p, g, m] for k, v in cmp_d.items()}, sig[p, g, m], new[p, g, m]
    )
    e["tested"] = bool(cmp_d["valid"][p, g, m])
    entries.append(e)
  return pd.DataFrame(entries, columns=list(FINDING_COLUMNS) + ["tested"])


CHUNK = 1024  # cohorts assessed per compiled call (padded), so each shape compiles once


@functools.partial(jax.jit, static_argnames=("num_values", "slots"))
def _subset_table(params: EnvParams, cols, used, *, num_values: int, slots: int):
  """Every cohort of one column subset as a table.

  Args:
    cols: `[slots]` int32 filter columns; `used`: `[slots]` bool (unused
      slots key on code 0).

  Returns:
    table `[C^slots, K + 1]`: the payload (`groupby.payload` order: P, G, M,
    3) of each cohort keyed by its codes in base C, then its row count.
  """
  c = num_values
  n = params.codes.shape[0]
  p, g = params.tested.shape
  m = params.shift.shape[0]
  digits = jnp.where(used[None, :], jnp.take(params.codes, cols, axis=1), 0)  # [N, S]
  radix = c ** jnp.arange(slots - 1, -1, -1)
  key = jnp.sum(digits * radix[None, :], axis=1)
  flat = params.stats.reshape(n, -1)  # [N, M*3]
  # Scatter-add each cell at (cohort, p, its group of p): no multiply-by-zero payload.
  stats = jnp.zeros((c**slots, p, g, m * 3), jnp.float32)
  for q in range(p):
    stats = stats.at[key, q, params.codes[:, params.prot_col[q]]].add(flat)
  rows = jnp.zeros((c**slots,), jnp.float32).at[key].add(params.rows)
  return jnp.concatenate([stats.reshape(c**slots, -1), rows[:, None]], axis=1)


@functools.partial(jax.jit, static_argnames=("num_values", "slots"))
def _parents(table, keys, *, num_values: int, slots: int):
  """`[B, slots, K + 1]`: each cohort's parent without the filter of each slot."""
  c = num_values
  cube = table.reshape((c,) * slots + (-1,))
  digits = (keys[:, None] // (c ** jnp.arange(slots - 1, -1, -1))[None, :]) % c  # [B, S]
  out = []
  for s in range(slots):
    marginal = cube.sum(axis=s)  # [C]*(S-1) + [K + 1]
    rest = tuple(digits[:, t] for t in range(slots) if t != s)
    out.append(marginal[rest] if rest else jnp.broadcast_to(marginal, (keys.shape[0],) + marginal.shape))
  return jnp.stack(out, axis=1)


@functools.partial(jax.jit, static_argnames=("z_method",))
def _screen_chunk(params: EnvParams, filters, cohorts, *, z_method: str):
  """Comparison and significance of a chunk of cohorts ([B, F], [B, K + 1])."""
  k_shape = params.tested.shape + (params.shift.shape[0], 3)
  prot = jax.vmap(fd.protected_filtered, in_axes=(None, 0))(params, filters)
  cmp = fd.compare_batch(params, cohorts[:, :-1].reshape((-1,) + k_shape), prot, z_method=z_method)
  return cmp, fd.significant(params, cmp)


@jax.jit
def _novelty_chunk(params: EnvParams, filters, cohorts, parents, parent_valid):
  """New flags of a chunk of cohorts with their parents ([B, S, K + 1], [B, S])."""
  k_shape = params.tested.shape + (params.shift.shape[0], 3)

  def one(f, child, par, valid):
    return fd.assess(
      params, fd.protected_filtered(params, f), child[:-1].reshape(k_shape), par[:, :-1].reshape((-1,) + k_shape), valid
    )[2]

  return jax.vmap(one)(filters, cohorts, parents, parent_valid)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
  pad = [(0, size - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
  return np.pad(x, pad)


def enumerate_findings(
  cube: Cube,
  *,
  max_depth: int = 3,
  min_group: float = 11,
  min_cohort: float | None = None,
  z_screen: float | str = 4.0,
  include_old: bool = True,
) -> pd.DataFrame:
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
  params = _bucketed_params(cube, max_depth=max_depth, min_group=min_group, min_cohort=min_cohort, z_screen=z_screen)
  num_values = max(len(c) for c in meta.categories)
  num_f = len(meta.filter_names)
  slots = max_depth
  radix = num_values ** np.arange(slots - 1, -1, -1)
  queries = 0
  entries: list[dict] = []
  min_rows = float(params.min_cohort)
  for k in range(0, max_depth + 1):
    for subset in itertools.combinations(range(num_f), k):
      cols = np.zeros((slots,), np.int32)
      cols[:k] = subset
      used = np.arange(slots) < k
      table = _subset_table(params, jnp.asarray(cols), jnp.asarray(used), num_values=num_values, slots=slots)
      rows = np.asarray(table[:, -1])
      keys = np.nonzero(rows >= min_rows)[0]
      if k == 0:
        keys = keys[:1]  # the root is one cohort
      queries += len(keys)
      for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        digits = (chunk[:, None] // radix[None, :]) % num_values  # [B, S]
        filters = np.full((len(chunk), num_f), -1, np.int32)
        for s in range(k):
          filters[:, cols[s]] = digits[:, s]
        # Cheap bound first (|t| >= |z|), exact tests only for cohorts that pass it.
        _, maybe = _screen_chunk(
          params,
          jnp.asarray(_pad(filters, CHUNK)),
          jnp.take(table, jnp.asarray(_pad(chunk, CHUNK)), axis=0),
          z_method="bound",
        )
        keep = np.nonzero(np.asarray(maybe)[: len(chunk)].any(axis=(1, 2, 3)))[0]
        if len(keep) == 0:
          continue
        chunk, filters = chunk[keep], filters[keep]
        cmp, sig = _screen_chunk(
          params,
          jnp.asarray(_pad(filters, CHUNK)),
          jnp.take(table, jnp.asarray(_pad(chunk, CHUNK)), axis=0),
          z_method="exact",
        )
        sig = np.asarray(sig)[: len(chunk)]
        hit_rows = np.nonzero(sig.any(axis=(1, 2, 3)))[0]
        if len(hit_rows) == 0:
          continue
        size = next(b for b in (16, 128, CHUNK) if b >= len(hit_rows))  # few compiled sizes
        idx = jnp.asarray(_pad(chunk[hit_rows], size))
        new = np.asarray(
          _novelty_chunk(
            params,
            jnp.asarray(_pad(filters[hit_rows], size)),
            jnp.take(table, idx, axis=0),
            _parents(table, idx, num_values=num_values, slots=slots),
            jnp.broadcast_to(jnp.asarray(used), (size, slots)),
          )
        )
        cmp_d = {name: np.asarray(v) for name, v in cmp.items()}
        for j, row in enumerate(hit_rows):
          labels = codes_to_filters(meta, filters[row])
          for p, g, m in zip(*np.nonzero(sig[row])):
            if not include_old and not new[j, p, g, m]:
              continue
            entries.append(
              _entry(
                meta,
                labels,
                float(rows[chunk[row]]),
                p,
                g,
                m,
                {name: v[row, p, g, m] for name, v in cmp_d.items()},
                True,
                new[j, p, g, m],
              )
            )
  out = pd.DataFrame(entries, columns=list(FINDING_COLUMNS))
  out.attrs["queries"] = queries
  out.attrs["z_screen"] = float(params.z_screen)
  return out
