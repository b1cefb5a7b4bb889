"""What a finding is: significant and new disparities of one cohort.

A test is a (protected column p, group g, measure m) of a cohort: group g
versus the rest of the cohort. It is *significant* when valid and
`|z| >= z_screen`. It is *new* (docs/design.md, What a finding is) when, for every parent
(the cohort with one filter removed), either the parent has no significant
disparity for the same (p, g, m) with the same sign, or the child's effect is
significantly stronger, in its own direction, than the effect in the rest of
the parent (`sign(z_child) * z_het >= z_screen`, where z_het compares the
child's difference with that of parent-minus-child). A gap merely inherited
from the parent is not new; a gap concentrated in the child is new even when
it also shows, diluted, in the parent. The root has no parent.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from cube_env.environment import stats as st
from cube_env.environment.params import EnvParams


def test_mask(params: EnvParams, prot_filtered: chex.Array) -> chex.Array:
  """`[P, G, M]` bool: tests that exist (real, tested group, p not filtered)."""
  ok_pg = params.tested & params.prot_valid[:, None] & ~prot_filtered[:, None]
  return ok_pg[:, :, None] & params.measure_valid[None, None, :]


def compare_cohort(
  params: EnvParams, cohort: chex.Array, prot_filtered: chex.Array, *, z_method: str = "exact"
) -> st.Comparison:
  """Group versus rest for every (p, g, m) of one cohort.

  Args:
    cohort: `[P, G, M, 3]` sufficient statistics of the cohort by group.
    prot_filtered: `[P]` bool, protected column filtered in this cohort.

  Returns:
    `Comparison` of shape `[P, G, M]`; `valid` also encodes `test_mask`.
  """
  chex.assert_rank(cohort, 4)
  return jax.tree.map(lambda x: x[0], compare_batch(params, cohort[None], prot_filtered[None], z_method=z_method))


def significant(params: EnvParams, cmp: st.Comparison) -> chex.Array:
  return cmp.valid & (jnp.abs(cmp.z) >= params.z_screen)


def protected_filtered(params: EnvParams, filters: chex.Array) -> chex.Array:
  """`[P]` bool: protected column p is filtered under `filters` [F]."""
  return (jnp.take(filters, params.prot_col) >= 0) & params.prot_valid


def _flat_tests(params: EnvParams, cohorts: chex.Array, prot_filtered: chex.Array):
  """Every test of cohorts `[..., P, G, M, 3]` (prot_filtered `[..., P]`) as flat arrays.

  Returns:
    ((group `[K, 3]`, rest `[K, 3]`, shift `[K]`, is_binary `[K]`, exists `[K]`), the tests' shape `[..., P, G, M]`),
    where exists is `test_mask`. Flat, XLA:CPU vectorizes the tests (`pixel_features`).
  """
  shape = cohorts.shape[:-1]
  rest = cohorts.sum(axis=-3, keepdims=True) - cohorts  # the rest of the cohort: every other group of p
  lead = prot_filtered.reshape(-1, prot_filtered.shape[-1])
  exists = jax.vmap(functools.partial(test_mask, params))(lead)
  shift = jnp.broadcast_to(params.shift, shape).reshape(-1)
  binary = jnp.broadcast_to(params.is_binary, shape).reshape(-1)
  return (cohorts.reshape(-1, 3), rest.reshape(-1, 3), shift, binary, exists.reshape(-1)), shape


def compare_batch(
  params: EnvParams,
  cohorts: chex.Array,
  prot_filtered: chex.Array,
  *,
  z_method: str = "exact",
  only: chex.Array | None = None,
) -> st.Comparison:
  """`compare_cohort` over a batch: cohorts `[B, P, G, M, 3]`, prot_filtered `[B, P]`.

  `only` (`[B, P, G, M]` bool, default all): the tests wanted; the others are
  not run and come back invalid (`stats.compare`).

  Callers stack every comparison a step needs into one call, so the compiled
  program holds one copy of the (large) incomplete-beta kernel. The tests
  run on flat arrays (see `pixel_features`; here without a barrier, which
  measured slower).
  """
  (group, rest, shift, binary, exists), shape = _flat_tests(params, cohorts, prot_filtered)
  cmp = st.compare(
    group,
    rest,
    shift,
    binary,
    min_group=params.min_group,
    z_method=z_method,
    only=None if only is None else jnp.broadcast_to(only, shape).reshape(-1),
  )
  valid = cmp.valid & exists
  cmp = cmp.replace(valid=valid, z=jnp.where(valid, cmp.z, 0.0), p_value=jnp.where(valid, cmp.p_value, 1.0))
  return jax.tree.map(lambda x: x.reshape(shape), cmp)


def novelty(
  params: EnvParams, child: st.Comparison, parents: st.Comparison, others: st.Comparison, parent_valid: chex.Array
):
  """Significant and new flags of a cohort from precomputed comparisons.

  Args:
    child: Comparison `[P, G, M]` of the cohort.
    parents: Comparison `[J, P, G, M]` of its parents, compared under the
      child's test mask (if the removed filter is on protected column p, p is
      not tested in the child anyway).
    others: Comparison `[J, P, G, M]` of parent-minus-child.
    parent_valid: `[J]` bool, which rows are real parents.

  Returns:
    (significant `[P, G, M]`, new `[P, G, M]`).
  """
  sig = significant(params, child)

  def blocked_by(cmp_p, cmp_o, is_parent):
    same = significant(params, cmp_p) & (jnp.sign(cmp_p.z) == jnp.sign(child.z))
    het = st.heterogeneity_z(child, cmp_o)
    stronger = jnp.sign(child.z) * het >= params.new_z
    return is_parent & same & ~stronger

  blocks = jax.vmap(blocked_by)(parents, others, parent_valid)  # [J, P, G, M]
  return sig, sig & ~jnp.any(blocks, axis=0)


def assess(
  params: EnvParams, prot_filtered: chex.Array, cohort: chex.Array, parents: chex.Array, parent_valid: chex.Array
):
  """Significant and new findings of a cohort, given its parents' statistics.

  Args:
    prot_filtered: `[P]` bool, protected column filtered in the cohort
      (`protected_filtered(params, filters)`).
    cohort: `[P, G, M, 3]` its statistics by group.
    parents: `[J, P, G, M, 3]` statistics of its parents (one filter removed each).
    parent_valid: `[J]` bool, which rows of `parents` are real parents.

  Returns:
    (Comparison `[P, G, M]`, significant `[P, G, M]`, new `[P, G, M]`). The
    parents' tests are run only where the child may be significant (the
    others cannot block anything).
  """
  j = parents.shape[0]
  prot = jnp.broadcast_to(prot_filtered, (j + 1,) + prot_filtered.shape)
  # A parent's test matters only where the child may be significant: |t| >= |z| bounds it (no exact p needed).
  # The slack covers float32 rounding of Wallace's z, which can exceed |t| by an ulp at df ~1e7.
  bound = compare_batch(params, cohort[None], prot[:1], z_method="bound")
  maybe = bound.valid & (jnp.abs(bound.z) >= params.z_screen * (1.0 - 1e-5))  # [1, P, G, M]
  wanted = jnp.concatenate([jnp.ones_like(maybe), maybe & parent_valid[:, None, None, None]])
  batch = jnp.concatenate([cohort[None], parents])
  cmp = compare_batch(params, batch, prot, only=wanted)
  # Heterogeneity needs only differences and standard errors: no exact p.
  others = jnp.where(parent_valid[:, None, None, None, None], parents - cohort[None], 0.0)
  others = compare_batch(params, others, prot[1:], z_method="bound")
  child = jax.tree.map(lambda x: x[0], cmp)
  sig, new = novelty(params, child, jax.tree.map(lambda x: x[1:], cmp), others, parent_valid)
  return child, sig, new


def pixel_protected(params: EnvParams, filters: chex.Array, num_values: int) -> chex.Array:
  """`[F, C + 1, P]` bool: protected column p is filtered in pixel (f, v)'s cohort."""
  num_f = filters.shape[0]
  base = protected_filtered(params, filters)  # [P]
  f = jnp.arange(num_f)[:, None, None]
  v = jnp.arange(num_values + 1)[None, :, None]
  on_f = params.prot_col[None, None, :] == f
  return jnp.where(on_f, v < num_values, base[None, None, :]) & params.prot_valid


def pixel_features(params: EnvParams, pix: chex.Array, prot_pix: chex.Array):
  """Strongest |z| and number of significant tests per pixel (the observation's features).

  Args:
    pix: `[F, C + 1, P, G, M, 3]` statistics of every pixel's cohort.
    prot_pix: `[F, C + 1, P]` bool, protected column filtered in that cohort.

  Returns:
    (max_abs_z `[F, C + 1]`, n_significant `[F, C + 1]`), from Wallace's z
    (`stats.screen`, the numbers of `compare_cohort(..., z_method="wallace")`).

  The tests run on flat arrays, fenced off from the per-pixel reductions by
  optimization barriers: XLA:CPU vectorizes the flat loop, while fused into
  the reductions over (P, G, M) the same arithmetic ran 3.6x slower
  (benchmarks/README).
  """
  args, shape = _flat_tests(params, pix, prot_pix)
  group, rest, shift, binary, exists = jax.lax.optimization_barrier(args)
  z, valid = st.screen(group, rest, shift, binary, min_group=params.min_group)
  abs_z = jnp.where(valid & exists, jnp.abs(z), 0.0)
  abs_z, sig = jax.lax.optimization_barrier((abs_z, abs_z >= params.z_screen))
  per_pixel = shape[:2] + (-1,)
  return jnp.max(abs_z.reshape(per_pixel), axis=-1), jnp.sum(sig.reshape(per_pixel), axis=-1)
