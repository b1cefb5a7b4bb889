"""The one group-by pass per step: statistics of every cohort one action away.

For the current filters, the pixel `(f, v)` of the action grid is the cohort
"current filters, with column f set to v" (`v = C` clears it). For column `f`
that is the cells matching every current filter except the one on `f`, grouped
by their code on `f`; the "all" column is the sum over codes. Each pixel
holds, per protected column p and group g, the sufficient statistics of every
measure: `[F, C + 1, P, G, M, 3]`, plus the cohort's row count `[F, C + 1]`.

Three formulations compute the same numbers (see `experiments.benchmark speed`):
  * "index" (the default): reads only the cells of the current filters'
    values through the cell index, in fixed-size chunks, with the no-filter
    grid kept in the params (`cube_env.environment.cells`). Cost falls with
    every filter (about N / C cells at depth 1 instead of N) and memory does
    not grow with the cube.
  * "matmul": one-hot design `[N, F*C]` times cell payload `[N, P*G*M*3]`, a
    single GEMM over every cell (HIGHEST precision so TF32 does not round).
  * "segment": `segment_sum` of the payload over keys `(code_f, group_p)`, per
    filter and protected column, over every cell.
The two dense ones are the reference the index is tested against; their
intermediates grow as cells x F (x batch under vmap).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from cube_env.environment import cells as cl
from cube_env.environment.params import EnvParams

GROUPBY_METHODS = ("index", "matmul", "segment")


def default_groupby() -> str:
  """The formulation every backend uses unless told otherwise (benchmarks/README)."""
  return "index"


def match_except(params: EnvParams, filters: chex.Array) -> chex.Array:
  """`[N, F]` bool: cell matches every current filter except the one on column f."""
  return cl.match_except(params.codes, filters)


def _group_codes(params: EnvParams) -> chex.Array:
  return jnp.take(params.codes, params.prot_col, axis=1)  # [N, P]


def payload(params: EnvParams) -> chex.Array:
  """`[N, P, G, M, 3]`: each cell's statistics placed at its group of each protected column."""
  num_groups = params.tested.shape[-1]
  onehot = jax.nn.one_hot(_group_codes(params), num_groups, dtype=jnp.float32)  # [N, P, G]
  return onehot[:, :, :, None, None] * params.stats[:, None, None, :, :]


def _pixels_matmul(params: EnvParams, filters: chex.Array, num_values: int):
  n, f = params.codes.shape
  weights = match_except(params, filters).astype(jnp.float32)  # [N, F]
  design = jax.nn.one_hot(params.codes, num_values, dtype=jnp.float32) * weights[:, :, None]  # [N, F, C]
  pay = payload(params)
  k_shape = pay.shape[1:]
  pay = jnp.concatenate([pay.reshape(n, -1), params.rows[:, None]], axis=1)  # [N, K + 1]
  out = jnp.einsum("nfc,nk->fck", design, pay, precision=jax.lax.Precision.HIGHEST)
  stats = out[..., :-1].reshape((f, num_values) + k_shape)
  return stats, out[..., -1]


def _pixels_segment(params: EnvParams, filters: chex.Array, num_values: int):
  n, f = params.codes.shape
  p, g = params.tested.shape
  weights = match_except(params, filters).astype(jnp.float32)  # [N, F]
  groups = _group_codes(params)  # [N, P]
  flat = params.stats.reshape(n, -1)  # [N, M*3]

  def one_column(codes_f, w_f):  # [N], [N]
    data = flat * w_f[:, None]

    def one_protected(g_p):
      seg = jax.ops.segment_sum(data, codes_f * g + g_p, num_segments=num_values * g)
      return seg.reshape(num_values, g, -1)  # [C, G, M*3]

    per_p = jax.vmap(one_protected, in_axes=1, out_axes=1)(groups)  # [C, P, G, M*3]
    rows = jax.ops.segment_sum(params.rows * w_f, codes_f, num_segments=num_values)
    return per_p, rows

  stats, rows = jax.vmap(one_column, in_axes=(1, 1))(params.codes, weights)
  m = params.stats.shape[1]
  return stats.reshape(f, num_values, p, g, m, 3), rows


def _pixels_index(params: EnvParams, filters: chex.Array, num_values: int):
  num_f = params.codes.shape[1]
  p, g, width = params.root.shape[2:]
  on = filters >= 0
  value = jnp.maximum(filters, 0)
  cols = jnp.arange(num_f)
  lo, hi = params.starts[cols, value], params.starts[cols, value + 1]
  big = jnp.iinfo(jnp.int32).max
  size = jnp.where(on, hi - lo, big)
  a = jnp.argmin(size)  # the filter with the fewest cells
  b = jnp.argmin(size.at[a].set(big))  # the next one
  depth = jnp.sum(on)

  def sums(col, end_when, column):
    end = jnp.where(end_when, hi[col], lo[col])  # an empty slice when not needed
    return cl.chunked_sums(
      params.codes,
      params.stats,
      params.rows,
      params.prot_col,
      params.order,
      col,
      lo[col],
      end,
      filters,
      column,
      num_values=num_values,
      num_groups=g,
    )

  grid = sums(a, depth > 0, None)  # every column but a: S_f lies in a's cells
  row_a = jnp.where(depth > 1, sums(b, depth > 1, a), params.root[a])  # S_a: in b's cells, or every cell
  grid = jnp.where(depth > 0, grid.at[a].set(row_a), params.root)
  rows = jnp.max(jnp.sum(grid[..., -1], axis=-1), axis=-1)  # [F, C]: every cell has one group per protected column
  return grid[..., :-1].reshape(grid.shape[:4] + (-1, 3)), rows


def pixel_stats(params: EnvParams, filters: chex.Array, *, num_values: int, method: str = "index"):
  """Statistics of every cohort one action away from `filters`.

  Args:
    params: an unbatched `EnvParams`.
    filters: `[F]` int32, category code per column or -1 for "all".
    num_values: C, the padded number of categories (static).
    method: "index", "matmul" or "segment" (same numbers up to float rounding).

  Returns:
    (stats `[F, C + 1, P, G, M, 3]`, rows `[F, C + 1]`); column C is "all".
  """
  if method == "index":
    stats, rows = _pixels_index(params, filters, num_values)
  elif method == "matmul":
    stats, rows = _pixels_matmul(params, filters, num_values)
  elif method == "segment":
    stats, rows = _pixels_segment(params, filters, num_values)
  else:
    raise ValueError(f"unknown group-by method {method!r}; choose from {GROUPBY_METHODS}")
  stats = jnp.concatenate([stats, stats.sum(axis=1, keepdims=True)], axis=1)
  rows = jnp.concatenate([rows, rows.sum(axis=1, keepdims=True)], axis=1)
  return stats, rows


def family_stats(params: EnvParams, filters: chex.Array, *, method: str = "index"):
  """Statistics of a cohort and of each parent (one filter removed), read off its grid.

  Returns:
    (stats `[F + 1, P, G, M, 3]`, rows `[F + 1]`): row 0 is the cohort, row
    1 + f the parent without the filter on f (equal to the cohort where f is
    unfiltered; callers mask those).
  """
  c = params.root.shape[1]
  stats, rows = pixel_stats(params, filters, num_values=c, method=method)
  here = jnp.where(filters[0] >= 0, filters[0], c)  # the cohort is pixel (0, its value on column 0 or "all")
  return (
    jnp.concatenate([stats[0, here][None], stats[:, c]]),
    jnp.concatenate([rows[0, here][None], rows[:, c]]),
  )
