"""What a finding is: significant and new disparities of one cohort.

A test is a (protected column p, group g, measure m) of a cohort: group g
versus the rest of the cohort. It is *significant* when valid and
`|z| >= z_screen`. It is *new* (DESIGN.md, Statistics) when, for every parent
(the cohort with one filter removed), either the parent has no significant
disparity for the same (p, g, m) with the same sign, or the child's effect is
significantly stronger, in its own direction, than the effect in the rest of
the parent (`sign(z_child) * z_het >= z_screen`, where z_het compares the
child's difference with that of parent-minus-child). A gap merely inherited
from the parent is not new; a gap concentrated in the child is new even when
it also shows, diluted, in the parent. The root has no parent.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from cube_env import stats as st
from cube_env.params import EnvParams


def test_mask(params: EnvParams, prot_filtered: chex.Array) -> chex.Array:
  """`[P, G, M]` bool: tests that exist (real, tested group, p not filtered)."""
  ok_pg = params.tested & params.prot_valid[:, None] & ~prot_filtered[:, None]
  return ok_pg[:, :, None] & params.measure_valid[None, None, :]


def compare_cohort(params: EnvParams, cohort: chex.Array, prot_filtered: chex.Array) -> st.Comparison:
  """Group versus rest for every (p, g, m) of one cohort.

  Args:
    cohort: `[P, G, M, 3]` sufficient statistics of the cohort by group.
    prot_filtered: `[P]` bool, protected column filtered in this cohort.

  Returns:
    `Comparison` of shape `[P, G, M]`; `valid` also encodes `test_mask`.
  """
  chex.assert_rank(cohort, 4)
  total = cohort.sum(axis=1, keepdims=True)  # [P, 1, M, 3]
  rest = total - cohort
  cmp = st.compare(cohort, rest, params.shift[None, None, :], params.is_binary[None, None, :],
                   min_group=params.min_group)
  valid = cmp.valid & test_mask(params, prot_filtered)
  return cmp.replace(valid=valid, z=jnp.where(valid, cmp.z, 0.0), p_value=jnp.where(valid, cmp.p_value, 1.0))


def significant(params: EnvParams, cmp: st.Comparison) -> chex.Array:
  return cmp.valid & (jnp.abs(cmp.z) >= params.z_screen)


def protected_filtered(params: EnvParams, filters: chex.Array) -> chex.Array:
  """`[P]` bool: protected column p is filtered under `filters` [F]."""
  return (jnp.take(filters, params.prot_col) >= 0) & params.prot_valid


def assess(params: EnvParams, prot_filtered: chex.Array, cohort: chex.Array, parents: chex.Array,
           parent_valid: chex.Array):
  """Significant and new findings of a cohort, given its parents' statistics.

  Args:
    prot_filtered: `[P]` bool, protected column filtered in the cohort
      (`protected_filtered(params, filters)`).
    cohort: `[P, G, M, 3]` its statistics by group.
    parents: `[J, P, G, M, 3]` statistics of its parents (one filter removed each).
    parent_valid: `[J]` bool, which rows of `parents` are real parents.

  Returns:
    (Comparison `[P, G, M]`, significant `[P, G, M]`, new `[P, G, M]`).
  """
  cmp = compare_cohort(params, cohort, prot_filtered)
  sig = significant(params, cmp)

  def blocked_by(parent, is_parent):
    # A parent lacks one filter; if that filter is on protected column p, p is
    # not tested in the child anyway, so the child's test mask is the right one.
    cmp_p = compare_cohort(params, parent, prot_filtered)
    same = significant(params, cmp_p) & (jnp.sign(cmp_p.z) == jnp.sign(cmp.z))
    other = compare_cohort(params, parent - cohort, prot_filtered)
    het = st.heterogeneity_z(cmp, other)
    stronger = jnp.sign(cmp.z) * het >= params.z_screen
    return is_parent & same & ~stronger

  blocks = jax.vmap(blocked_by)(parents, parent_valid)  # [J, P, G, M]
  new = sig & ~jnp.any(blocks, axis=0)
  return cmp, sig, new


def pixel_summary(params: EnvParams, filters: chex.Array, pix: chex.Array, num_values: int):
  """Strongest |z| and number of significant tests of every pixel's cohort.

  Args:
    pix: `[F, C + 1, P, G, M, 3]` from `groupby.pixel_stats`.

  Returns:
    (max_abs_z `[F, C + 1]`, n_significant `[F, C + 1]`).
  """
  num_f = filters.shape[0]
  base = protected_filtered(params, filters)  # [P]
  cols = jnp.arange(num_f)

  def one(f, v, cohort):
    # Target cohort = filters with f set to v (v == C: cleared).
    on_f = params.prot_col == f
    prot_f = jnp.where(on_f, v < num_values, base) & params.prot_valid
    cmp = compare_cohort(params, cohort, prot_f)
    sig = significant(params, cmp)
    return jnp.max(jnp.where(cmp.valid, jnp.abs(cmp.z), 0.0)), jnp.sum(sig)

  vs = jnp.arange(num_values + 1)
  fn = jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)), in_axes=(0, None, 0))
  return fn(cols, vs, pix)
