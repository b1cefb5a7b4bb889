"""Categorical value/reward support with MuZero's invertible value transform.

MuZero (Schrittwieser et al., 2020, Appendix F) represents values and rewards as
a categorical distribution over the integers ``[-S, S]`` after squashing the
scalar with

    h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps * x          (Pohlen et al., 2018)

A scalar is encoded as a *two-hot* vector (the probability mass split between
the two neighbouring integers so that the expectation is exact) and decoded as
``h^-1(E[support])``.

All functions are elementwise over leading axes; the support axis is last.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

__all__ = [
  "DEFAULT_EPS",
  "value_transform",
  "inverse_value_transform",
  "two_hot",
  "two_hot_expectation",
  "scalar_to_support",
  "logits_to_scalar",
  "support_bound",
  "check_support",
]

DEFAULT_EPS = 0.001


def value_transform(x: chex.Array, eps: float = DEFAULT_EPS) -> chex.Array:
  """``h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x``, elementwise."""
  return jnp.sign(x) * (jnp.sqrt(jnp.abs(x) + 1.0) - 1.0) + eps * x


def inverse_value_transform(y: chex.Array, eps: float = DEFAULT_EPS) -> chex.Array:
  """Exact inverse of :func:`value_transform`, elementwise.

  Solving ``|y| = sqrt(|x|+1) - 1 + eps |x|`` for ``|x|`` (a quadratic in
  ``sqrt(|x|+1)``) gives
  ``|x| = ((sqrt(1 + 4 eps (|y| + 1 + eps)) - 1) / (2 eps))^2 - 1``;
  the root is computed as ``2 c / (sqrt(1 + 4 eps c) + 1)`` with
  ``c = |y| + 1 + eps`` (same value, no cancellation, valid for ``eps = 0``).
  """
  c = jnp.abs(y) + 1.0 + eps
  root = 2.0 * c / (jnp.sqrt(1.0 + 4.0 * eps * c) + 1.0)
  return jnp.sign(y) * (root**2 - 1.0)


def two_hot(y: chex.Array, support_size: int) -> chex.Array:
  """Two-hot encoding of ``y`` (already transformed) on ``[-S, S]``.

  Args:
    y: ``[...]`` values; clipped to ``[-S, S]``.
    support_size: ``S``.

  Returns:
    ``[..., 2S + 1]`` probabilities whose expectation over the integer
    support equals ``clip(y, -S, S)``.
  """
  y = jnp.clip(y, -support_size, support_size)
  low = jnp.floor(y)
  frac = y - low
  idx_low = (low + support_size).astype(jnp.int32)
  idx_high = jnp.minimum(idx_low + 1, 2 * support_size)
  n = 2 * support_size + 1
  return jax.nn.one_hot(idx_low, n) * (1.0 - frac)[..., None] + jax.nn.one_hot(idx_high, n) * frac[..., None]


def two_hot_expectation(probs: chex.Array, support_size: int) -> chex.Array:
  """Expectation ``sum_i p_i * i`` over the integer support ``[-S, S]``."""
  chex.assert_axis_dimension(probs, -1, 2 * support_size + 1)
  support = jnp.arange(-support_size, support_size + 1, dtype=probs.dtype)
  return jnp.sum(probs * support, axis=-1)


def scalar_to_support(x: chex.Array, support_size: int, eps: float = DEFAULT_EPS) -> chex.Array:
  """Scalar ``[...]`` -> two-hot target ``[..., 2S + 1]`` of ``h(x)``."""
  return two_hot(value_transform(x, eps), support_size)


def logits_to_scalar(logits: chex.Array, support_size: int, eps: float = DEFAULT_EPS) -> chex.Array:
  """Logits ``[..., 2S + 1]`` -> scalar ``h^-1(E[softmax(logits)])`` ``[...]``."""
  probs = jax.nn.softmax(logits, axis=-1)
  return inverse_value_transform(two_hot_expectation(probs, support_size), eps)


def support_bound(support_size: int, eps: float = DEFAULT_EPS) -> float:
  """Largest ``|x|`` that the support represents, ``h^-1(S)`` (Python float)."""
  c = support_size + 1.0 + eps
  root = 2.0 * c / (math.sqrt(1.0 + 4.0 * eps * c) + 1.0)
  return root**2 - 1.0


def _h(magnitude: float, eps: float) -> float:
  """:func:`value_transform` of a magnitude ``>= 0`` as a Python float (the host-side checks')."""
  return math.sqrt(magnitude + 1.0) - 1.0 + eps * magnitude


def support_size_for(max_abs_value: float, eps: float = DEFAULT_EPS) -> int:
  """The smallest support size that holds ``|x| <= max_abs_value``: ``ceil(h(max_abs_value))``."""
  return math.ceil(_h(abs(max_abs_value), eps))


def check_support(
  support_size: int,
  max_abs_value: float,
  *,
  eps: float = DEFAULT_EPS,
  what: str = "value",
  size_field: str = "support_size",
  declared_by: str = "the declared maximum",
) -> None:
  """Raises ``ValueError`` when ``h(max_abs_value) > support_size``, naming the config fields that fix it
  (``size_field``, and ``declared_by``, what sets the maximum).

  Targets beyond the support are clipped, which silently biases the learned
  values; this check runs at start-up so that a mis-sized support fails loudly.
  """
  needed = abs(max_abs_value)
  needed_h = _h(needed, eps)
  if needed_h > support_size:
    raise ValueError(
      f"The categorical support [-{support_size}, {support_size}] is too small for "
      f"the largest {what} {needed:g}: h({needed:g}) = {needed_h:.2f} > {support_size} "
      f"(the support covers |x| <= {support_bound(support_size, eps):.1f}). "
      f"Use {size_field} >= {support_size_for(needed, eps)} or lower {declared_by}."
    )
