"""The cell index: a step's group-by reads only the cells that can match its filters.

A step needs, for every filter column f, the cells matching every current filter
except the one on f (call that set S_f), summed by their code on f and by
their group on each protected column (`groupby.pixel_stats`). With a filter
`a = v` on, every S_f with f != a lies inside the cells that have `a = v`.
Sorting the cells by their code once per column (`build_index`, at
`make_params`) makes those cells one contiguous slice of `order[a]`, so the
pass reads that slice in fixed-size chunks instead of the whole cube
(`chunked_sums`): for the filter with the fewest cells, and again, for
column a alone, over the slice of the next smallest filter. With no filter on,
every S_f is the whole cube: that grid is computed once per cube (`root_sums`)
and kept in the params, and a one-filter cohort reuses its row for column a.

The additions are those of the dense formulation restricted to those slices;
the scatter drops the cells that do not match (`mode="drop"`), and memory per
step is one chunk's updates plus the grid, whatever the number of cells
(docs/design.md, The game: the cell index).

Payload layout `W = M * 3 + 1`: each cell's shifted sufficient statistics
`(n, s1, s2)` per measure, then its row count.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

CHUNK_CELLS = 256  # cells per scatter (fastest of 64-1024 on the 2-core CPU at 1e4 and 1e5 cells; benchmarks/README)


def build_index(codes: np.ndarray, num_real: int, num_values: int) -> tuple[np.ndarray, np.ndarray]:
  """Cells sorted by their code on each column.

  Args:
    codes: `[N, F]` codes of the padded cube; cells from `num_real` on are padding.
    num_real: real cells (padding sorts after every real cell and is never read).
    num_values: C, the padded number of categories.

  Returns:
    order `[F, N]` int32 and starts `[F, C + 1]` int32: the cells with code v
    on column f are `order[f, starts[f, v] : starts[f, v + 1]]`, and
    `starts[f, C] == num_real`.
  """
  codes = np.asarray(codes)
  key = codes.astype(np.int64)
  key[num_real:] = num_values
  order = np.argsort(key, axis=0, kind="stable").T.astype(np.int32)
  starts = np.zeros((codes.shape[1], num_values + 1), np.int32)
  for f in range(codes.shape[1]):
    starts[f, 1:] = np.cumsum(np.bincount(key[:num_real, f], minlength=num_values))[:num_values]
  return order, starts


def _payload(stats: chex.Array, rows: chex.Array, idx: chex.Array) -> chex.Array:
  """`[K, W]`: the chunk's cells' statistics (flattened) and row counts."""
  flat = stats[idx].reshape(idx.shape[0], -1)
  return jnp.concatenate([flat, rows[idx][:, None]], axis=1)


def match_except(codes: chex.Array, filters: chex.Array) -> chex.Array:
  """`[K, F]` bool: cell (a row of `codes [K, F]`) matches every filter except the one on column f."""
  bad = (codes != filters[None, :]) & (filters[None, :] >= 0)
  n_bad = jnp.sum(bad, axis=1, keepdims=True)
  return (n_bad - bad) == 0


def chunked_sums(
  codes: chex.Array,
  stats: chex.Array,
  rows: chex.Array,
  prot_col: chex.Array,
  order: chex.Array,
  source: chex.Array,
  start: chex.Array,
  end: chex.Array,
  filters: chex.Array,
  column: chex.Array | None,
  *,
  num_values: int,
  num_groups: int,
  chunk: int = CHUNK_CELLS,
) -> chex.Array:
  """Sums of the cells `cells[start:end]` that match every filter except column f's.

  Args:
    codes, stats, rows, prot_col: the cube's arrays (`EnvParams`).
    order, source: the index's `[F, N]` cell order and the column whose
      order is read (an int32 scalar). The row is read chunk by chunk inside
      the loop, so a batch of environments never copies whole rows.
    start, end: the slice of `order[source]` to read (int32 scalars; empty when equal).
    filters: `[F]` int32, -1 = all.
    column: None for every column, or an int32 scalar: only that column.
    num_values, num_groups: C and G (static).
    chunk: cells per scatter (static).

  Returns:
    `[F, C, P, G, W]` (every column) or `[C, P, G, W]` (one column): per
    column f, code c of f, protected column p and its group g, the payload
    summed over the matching cells.
  """
  n, num_f = codes.shape
  num_p = prot_col.shape[0]
  width = stats.shape[1] * stats.shape[2] + 1
  c, g = num_values, num_groups
  one = column is not None
  cols = 1 if one else num_f
  size = cols * c * num_p * g
  p_idx = jnp.arange(num_p)[None, None, :]

  def body(i, acc):
    pos = start + i * chunk + jnp.arange(chunk)
    idx = order[source, jnp.minimum(pos, n - 1)]
    chunk_codes = codes[idx]  # [K, F]
    groups = jnp.take(chunk_codes, prot_col, axis=1)  # [K, P]
    match = match_except(chunk_codes, filters) & (pos < end)[:, None]  # [K, F]
    if one:
      match = jnp.take(match, column[None], axis=1)  # [K, 1]
      by = jnp.take(chunk_codes, column[None], axis=1)
      f_idx = jnp.zeros((1, 1, 1), jnp.int32)
    else:
      by = chunk_codes
      f_idx = jnp.arange(num_f)[None, :, None]
    key = ((f_idx * c + by[:, :, None]) * num_p + p_idx) * g + groups[:, None, :]  # [K, cols, P]
    # Non-matching cells, and groups past G (padding protected columns read column 0), fall off the end.
    key = jnp.where(match[:, :, None] & (groups < g)[:, None, :], key, size)
    pay = _payload(stats, rows, idx)
    upd = jnp.broadcast_to(pay[:, None, None, :], key.shape + (width,))
    return acc.at[key.reshape(-1)].add(upd.reshape(-1, width), mode="drop")

  steps = (end - start + chunk - 1) // chunk
  acc = jax.lax.fori_loop(0, steps, body, jnp.zeros((size, width), jnp.float32))
  return acc.reshape(((c,) if one else (num_f, c)) + (num_p, g, width))


@functools.partial(jax.jit, static_argnames=("num_values", "num_groups", "chunk"))
def root_sums(codes, stats, rows, prot_col, order, starts, *, num_values: int, num_groups: int, chunk: int = 1024):
  """`[F, C, P, G, W]`: every column's cells by code and group, no filter on (once per cube)."""
  none = jnp.full((codes.shape[1],), -1, jnp.int32)
  return chunked_sums(
    codes,
    stats,
    rows,
    prot_col,
    order,
    jnp.int32(0),
    jnp.int32(0),
    starts[0, -1],
    none,
    None,
    num_values=num_values,
    num_groups=num_groups,
    chunk=chunk,
  )
