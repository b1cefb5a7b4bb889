"""The exhaustive oracle: every significant finding of every visitable cohort, as a table.

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
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from cube_env.data.disclosure import SMALL_CELL
from cube_env.data.ingest import Cube, codes_to_filters
from cube_env.discovery.cohorts import FINDING_COLUMNS, finding_row
from cube_env.discovery.journal import Journal
from cube_env.environment import findings as fd
from cube_env.environment.params import EnvParams, bucketed_shape, make_params

FAMILIES_PER_CALL = 1024  # cohorts assessed per compiled call (padded), so each shape compiles once
NOVELTY_SIZE = 128  # newness of a chunk's hits, this many cohorts per call (padded): one compiled size
# Parents per cohort in the newness program, padded with invalid ones: every depth to this one shares a program
# (3 sizes x 3 depths used to compile 9, 11-12 s of a benchmark world's 25 s of compilation).
NOVELTY_SLOTS = 4


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


def enumeration_params(
  cube: Cube,
  *,
  max_depth: int,
  min_group: float = SMALL_CELL,
  min_cohort: float | None = None,
  z_screen: float | str = 4.0,
  new_z: float | None = None,
) -> EnvParams:
  """The params `enumerate_findings` runs `subset_findings` with (the table's bucketed shape)."""
  return make_params(
    cube,
    bucketed_shape(cube),
    max_depth=max_depth,
    min_group=min_group,
    min_cohort=min_cohort,
    z_screen=z_screen,
    new_z=new_z,
  )


def enumerate_findings(
  cube: Cube,
  *,
  max_depth: int = 3,
  min_group: float = SMALL_CELL,
  min_cohort: float | None = None,
  z_screen: float | str = 4.0,
  new_z: float | None = None,
  include_old: bool = True,
  journal: Journal | None = None,
  done: Mapping[tuple[int, ...], tuple[int, list[dict]]] | None = None,
  deadline: float | None = None,
) -> pd.DataFrame:
  """Every significant disparity in every visitable cohort up to `max_depth`.

  Args:
    cube: from `build_cube`.
    max_depth, min_group, min_cohort, z_screen, new_z: as in `make_env`.
    include_old: keep significant findings that are not new (flag `new`).
    journal: a `journal.Journal` that keeps each column subset's findings as
      a chunk; subsets it already holds are not recomputed (a resumed run).
    done: `{subset: subset_findings(...)}` already computed with
      `enumeration_params` of the same settings (`auto`'s time probe): used,
      not recomputed, and counted as queries once.
    deadline: a `time.perf_counter()` reading after which no further column
      subset is computed but the root's (those `done` or in the journal are
      still read); the table then holds the subsets finished (`auto` under a
      time limit).

  Returns:
    DataFrame with `FINDING_COLUMNS`; `df.attrs["queries"]` is the number of
    cohorts visited (group-by queries), `df.attrs["z_screen"]` the threshold,
    `df.attrs["subsets"]` the column subsets enumerated (all of them unless
    the deadline passed) and `df.attrs["of_subsets"]` how many there are.
    Its numbers are as computed, as the search needs them: a row whose group or
    rest is a small count is blank, but a binary rate with its n gives back its
    events (a disclosure audit: 2 complications in 60 women). Show people
    `shown_findings(table, min_group)`, which applies every small-cell rule.
  """
  meta = cube.meta
  params = enumeration_params(
    cube, max_depth=max_depth, min_group=min_group, min_cohort=min_cohort, z_screen=z_screen, new_z=new_z
  )
  queries = 0
  entries: list[dict] = []
  subsets = [s for k in range(0, max_depth + 1) for s in itertools.combinations(range(len(meta.filter_names)), k)]
  finished: list[tuple[int, ...]] = []
  for subset in subsets:
    key = "subset:" + ",".join(str(c) for c in subset)
    chunk = None if journal is None else journal.chunk(key)
    late = finished and deadline is not None and time.perf_counter() >= deadline  # the root is always enumerated
    if chunk is None and subset not in (done or {}) and late:
      continue
    if chunk is None:
      n, found = (done or {}).get(subset) or subset_findings(params, meta, subset, include_old=include_old)
      chunk = {"queries": n, "entries": found}
      if journal is not None:
        chunk = journal.put_chunk(key, chunk, cost=n)  # as stored: a resumed run reads the same
    queries += chunk["queries"]
    entries += chunk["entries"]
    finished.append(subset)
  out = pd.DataFrame(entries, columns=list(FINDING_COLUMNS))
  out.attrs["queries"] = queries
  out.attrs["subsets"], out.attrs["of_subsets"] = finished, len(subsets)
  out.attrs["z_screen"] = float(params.z_screen)
  return out


def compile_enumeration(
  cube: Cube,
  *,
  max_depth: int,
  min_group: float = SMALL_CELL,
  min_cohort: float | None = None,
  z_screen: float | str = 4.0,
  new_z: float | None = None,
) -> None:
  """Compiles every program of `enumerate_findings` on `cube`'s shape for each depth to `max_depth` (a depth is its
  own program), on padding: a timed enumeration that follows pays no compile (the benchmark's warm-up)."""
  meta = cube.meta
  num_values = max(len(c) for c in meta.categories)
  for depth in range(1, max_depth + 1):
    params = enumeration_params(
      cube, max_depth=depth, min_group=min_group, min_cohort=min_cohort, z_screen=z_screen, new_z=new_z
    )
    used = jnp.ones((depth,), bool)
    table = _subset_table(params, jnp.zeros((depth,), jnp.int32), used, num_values=num_values, slots=depth)
    filters = np.full((FAMILIES_PER_CALL, params.codes.shape[1]), -1, np.int32)
    keys = np.zeros((FAMILIES_PER_CALL,), np.int64)
    for z_method in ("bound", "exact"):
      _screen_chunk(params, jnp.asarray(filters), jnp.take(table, jnp.asarray(keys), axis=0), z_method=z_method)
    _novelty(params, table, filters[:1], keys[:1], used, num_values=num_values)  # one program to NOVELTY_SLOTS


def _novelty(params: EnvParams, table, filters: np.ndarray, keys: np.ndarray, used, *, num_values: int) -> np.ndarray:
  """New flags `[B, P, G, M]` of cohorts `keys` (rows of a `_subset_table`) with `filters` `[B, F]`.

  Runs in calls of `NOVELTY_SIZE` cohorts, each with `max(NOVELTY_SLOTS, slots)` parents (the missing ones
  invalid): one compiled program per cube shape for every depth to `NOVELTY_SLOTS`."""
  slots = used.shape[0]
  width = max(NOVELTY_SLOTS, slots)
  valid = np.zeros((NOVELTY_SIZE, width), bool)
  valid[:, :slots] = np.asarray(used)
  out = []
  for start in range(0, len(keys), NOVELTY_SIZE):
    n = min(NOVELTY_SIZE, len(keys) - start)
    idx = jnp.asarray(_pad(keys[start : start + n], NOVELTY_SIZE))
    parents = _parents(table, idx, num_values=num_values, slots=slots)
    parents = jnp.pad(parents, ((0, 0), (0, width - slots), (0, 0)))
    cohorts = jnp.take(table, idx, axis=0)
    new = _novelty_chunk(params, jnp.asarray(_pad(filters[start : start + n], NOVELTY_SIZE)), cohorts, parents, valid)
    out.append(np.asarray(new)[:n])
  return np.concatenate(out)


def subset_findings(
  params: EnvParams, meta, subset: tuple[int, ...], *, include_old: bool = True
) -> tuple[int, list[dict]]:
  """(cohorts visited, finding rows) of every visitable cohort that filters exactly the columns of `subset`.

  One group-by over every cell (`_subset_table`), then the tests in chunks; `enumerate_findings` runs it for
  every subset of at most `max_depth` columns (params made with that `max_depth`).
  """
  max_depth = int(params.max_depth)
  min_group = float(params.min_group)
  num_values = max(len(c) for c in meta.categories)
  slots = max_depth
  radix = num_values ** np.arange(slots - 1, -1, -1)
  num_f = len(meta.filter_names)
  width = params.codes.shape[1]  # padded filter columns (-1) too: one program for every table of a padded shape
  min_rows = float(params.min_cohort)
  k = len(subset)
  entries: list[dict] = []
  cols = np.zeros((slots,), np.int32)
  cols[:k] = subset
  used = np.arange(slots) < k
  table = _subset_table(params, jnp.asarray(cols), jnp.asarray(used), num_values=num_values, slots=slots)
  rows = np.asarray(table[:, -1])
  keys = np.nonzero(rows >= min_rows)[0]
  if k == 0:
    keys = keys[:1]  # the root is one cohort
  queries = len(keys)
  for start in range(0, len(keys), FAMILIES_PER_CALL):
    chunk = keys[start : start + FAMILIES_PER_CALL]
    digits = (chunk[:, None] // radix[None, :]) % num_values  # [B, S]
    filters = np.full((len(chunk), width), -1, np.int32)
    for s in range(k):
      filters[:, cols[s]] = digits[:, s]
    # Cheap bound first (|t| >= |z|), exact tests only for cohorts that pass it.
    _, maybe = _screen_chunk(
      params,
      jnp.asarray(_pad(filters, FAMILIES_PER_CALL)),
      jnp.take(table, jnp.asarray(_pad(chunk, FAMILIES_PER_CALL)), axis=0),
      z_method="bound",
    )
    keep = np.nonzero(np.asarray(maybe)[: len(chunk)].any(axis=(1, 2, 3)))[0]
    if len(keep) == 0:
      continue
    chunk, filters = chunk[keep], filters[keep]
    cmp, sig = _screen_chunk(
      params,
      jnp.asarray(_pad(filters, FAMILIES_PER_CALL)),
      jnp.take(table, jnp.asarray(_pad(chunk, FAMILIES_PER_CALL)), axis=0),
      z_method="exact",
    )
    sig = np.asarray(sig)[: len(chunk)]
    hit_rows = np.nonzero(sig.any(axis=(1, 2, 3)))[0]
    if len(hit_rows) == 0:
      continue
    new = _novelty(params, table, filters[hit_rows], chunk[hit_rows], jnp.asarray(used), num_values=num_values)
    cmp_d = {name: np.asarray(v) for name, v in cmp.items()}
    for j, row in enumerate(hit_rows):
      labels = codes_to_filters(meta, filters[row, :num_f])
      for p, g, m in zip(*np.nonzero(sig[row])):
        if not include_old and not new[j, p, g, m]:
          continue
        entries.append(
          finding_row(
            meta,
            labels,
            float(rows[chunk[row]]),
            p,
            g,
            m,
            {name: v[row, p, g, m] for name, v in cmp_d.items()},
            True,
            new[j, p, g, m],
            min_group=min_group,
          )
        )
  return queries, entries
