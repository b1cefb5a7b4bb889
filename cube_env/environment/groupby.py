"""The one group-by pass per step: statistics of every cohort one action away.

For the current filters, the pixel `(f, v)` of the action grid is the cohort
"current filters, with column f set to v" (`v = C` clears it). For column `f`
that is the cells matching every current filter except the one on `f`, grouped
by their code on `f`; the "all" column is the sum over codes. Each pixel
holds, per protected column p and group g, the sufficient statistics of every
measure: `[F, C + 1, P, G, M, 3]`, plus the cohort's row count `[F, C + 1]`.

Two formulations compute the same numbers (see `experiments.benchmark env`):
  * "matmul": one-hot design `[N, F*C]` times cell payload `[N, P*G*M*3]`, a
    single GEMM (tensor-core friendly on GPUs; run at HIGHEST precision so
    TF32 does not round the sums).
  * "segment": `segment_sum` of the payload over keys `(code_f, group_p)`, per
    filter and protected column (no wasted multiply-by-zero on CPUs).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from cube_env.environment.params import EnvParams

GROUPBY_METHODS = ("matmul", "segment")


def default_groupby() -> str:
  """The formulation measured faster on the current backend (benchmarks/README)."""
  return "segment" if jax.default_backend() == "cpu" else "matmul"


def match_except(params: EnvParams, filters: chex.Array) -> chex.Array:
  """`[N, F]` bool: cell matches every current filter except the one on column f."""
  ok = (params.codes == filters[None, :]) | (filters[None, :] < 0)  # [N, F]
  n_bad = jnp.sum(~ok, axis=1)  # [N]
  return (n_bad[:, None] - (~ok).astype(n_bad.dtype)) == 0


def cohort_mask(params: EnvParams, filters: chex.Array) -> chex.Array:
  """`[N]` bool: cell is in the cohort given by `filters` ([F], -1 = all)."""
  ok = (params.codes == filters[None, :]) | (filters[None, :] < 0)
  return jnp.all(ok, axis=1)


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


def pixel_stats(params: EnvParams, filters: chex.Array, *, num_values: int, method: str = "segment"):
  """Statistics of every cohort one action away from `filters`.

  Args:
    params: an unbatched `EnvParams`.
    filters: `[F]` int32, category code per column or -1 for "all".
    num_values: C, the padded number of categories (static).
    method: "matmul" or "segment" (same numbers up to float rounding).

  Returns:
    (stats `[F, C + 1, P, G, M, 3]`, rows `[F, C + 1]`); column C is "all".
  """
  if method == "matmul":
    stats, rows = _pixels_matmul(params, filters, num_values)
  elif method == "segment":
    stats, rows = _pixels_segment(params, filters, num_values)
  else:
    raise ValueError(f"unknown group-by method {method!r}; choose from {GROUPBY_METHODS}")
  stats = jnp.concatenate([stats, stats.sum(axis=1, keepdims=True)], axis=1)
  rows = jnp.concatenate([rows, rows.sum(axis=1, keepdims=True)], axis=1)
  return stats, rows


def family_stats(params: EnvParams, filters: chex.Array):
  """Statistics of a cohort and of each parent (one filter removed), without the grid.

  Returns:
    (stats `[F + 1, P, G, M, 3]`, rows `[F + 1]`): row 0 is the cohort, row
    1 + f the parent without the filter on f (equal to the cohort where f is
    unfiltered; callers mask those).
  """
  weights = jnp.concatenate([cohort_mask(params, filters)[:, None], match_except(params, filters)], axis=1).astype(
    jnp.float32
  )  # [N, F + 1]
  n = params.codes.shape[0]
  pay = payload(params)
  k_shape = pay.shape[1:]
  pay = jnp.concatenate([pay.reshape(n, -1), params.rows[:, None]], axis=1)
  out = jnp.einsum("nj,nk->jk", weights, pay, precision=jax.lax.Precision.HIGHEST)
  return out[:, :-1].reshape((-1,) + k_shape), out[:, -1]
