"""MuZero networks in Flax linen: representation, dynamics and prediction.

Schrittwieser et al., "Mastering Atari, Go, chess and shogi by planning with a
learned model" (Nature 2020), Appendix E-F:

* representation ``h``: observation -> latent state (min-max normalised per sample);
* dynamics ``g``: (latent, action) -> (next latent, reward logits);
* prediction ``f``: latent -> (policy logits, value logits, legality logits).

Two torsos: a pre-activation ResNet over a channels-first grid ``[C, H, W]``
(transposed to NHWC inside) and an MLP over flattened observations. With the
ResNet and ``num_actions == H * W`` the policy and legality heads are fully
convolutional (action ``a`` is pixel ``(a // W, a % W)``) and the dynamics
receive the action as a one-hot plane; otherwise heads are dense and the action
enters as a learned embedding.

The legality head is an addition to MuZero: it predicts the environment's action
mask so that the search can avoid illegal actions below the root, where mctx
does no masking.

All methods take batched inputs ``[B, ...]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from muzero_jax.config import MuZeroConfig

__all__ = ["MuZeroNetwork", "make_network", "min_max_normalize", "uses_conv_policy"]

_zeros = nn.initializers.zeros


def lecun_normal_flat(key: chex.PRNGKey, shape, dtype=jnp.float32) -> chex.Array:
  """Flax's default ``lecun_normal`` kernel init, drawn as a 1-D vector then reshaped.

  Same distribution (truncated normal, variance 1/fan_in); a 1-D draw because
  multi-dimensional threefry draws compile several times slower on CPU.
  """
  fan_in = math.prod(shape[:-1])
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # std of N(0,1) truncated to [-2, 2]
  flat = jax.random.truncated_normal(key, -2.0, 2.0, (math.prod(shape),), dtype)
  return (flat * std).reshape(shape)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _patch_form(lhs: chex.Array, rhs: chex.Array, padding, precision) -> chex.Array:
  """A stride-1 NHWC/HWIO convolution as shifted slices and one matrix product (im2col)."""
  kh, kw = rhs.shape[:2]
  (top, bottom), (left, right) = padding
  _, height, width, _ = lhs.shape
  out_h, out_w = height + top + bottom - kh + 1, width + left + right - kw + 1
  padded = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right), (0, 0)))
  windows = [padded[:, i : i + out_h, j : j + out_w, :] for i in range(kh) for j in range(kw)]
  cols = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)  # [B, H', W', kh kw Ci]
  return jnp.dot(cols, rhs.reshape(-1, rhs.shape[-1]), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_patch_gradient(lhs: chex.Array, rhs: chex.Array, padding, precision) -> chex.Array:
  return jax.lax.conv_general_dilated(lhs, rhs, (1, 1), padding, dimension_numbers=_NHWC, precision=precision)


def _conv_patch_gradient_fwd(lhs, rhs, padding, precision):
  return _conv_patch_gradient(lhs, rhs, padding, precision), (lhs, rhs)


def _conv_patch_gradient_bwd(padding, precision, residuals, cotangent):
  _, vjp = jax.vjp(lambda a, b: _patch_form(a, b, padding, precision), *residuals)
  return vjp(cotangent)


_conv_patch_gradient.defvjp(_conv_patch_gradient_fwd, _conv_patch_gradient_bwd)


def patch_gradient_conv(
  lhs: chex.Array,
  rhs: chex.Array,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count: int = 1,
  precision=None,
) -> chex.Array:
  """``lax.conv_general_dilated`` whose gradient is that of shifted slices and one matrix product (for ``nn.Conv``).

  The forward pass is XLA's convolution itself (the same numbers as
  ``nn.Conv``'s default); the backward pass differentiates the same
  convolution written as im2col (the ``kh x kw`` shifted windows of the padded
  input concatenated on the channel axis, times the kernel flattened to
  ``[kh kw Ci, Co]``): slices, pads and matrix products. Why: on XLA:CPU a
  convolution's own gradient inside a loop body (the learner's updates run in
  a ``lax.scan``) ran 7-10x slower than at top level; the im2col gradient runs
  as fast anywhere (benchmarks/README, *Learner*). Equal to the convolution's
  gradient up to float rounding (tests/test_muzero_networks.py). Used for
  stride 1 without dilation or groups in NHWC/HWIO layout and padding >= 0
  (what this module's layers use); anything else is
  ``lax.conv_general_dilated`` unchanged. Being a ``custom_vjp``, it supports
  reverse-mode differentiation only (``jax.jvp`` / ``jacfwd`` raise).
  """
  plain = (
    tuple(window_strides) == (1, 1)
    and lhs.ndim == 4
    and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
    and feature_group_count == 1
    and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  )
  if plain:
    if isinstance(padding, str):  # "SAME" / "VALID", as nn.Conv passes them
      padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    plain = min(min(pair) for pair in padding) >= 0  # a negative pad crops: not the im2col form's case
  if not plain:
    return jax.lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      precision=precision,
    )
  return _conv_patch_gradient(lhs, rhs, padding, precision)


CONV_GRADIENTS = {"patch": patch_gradient_conv, "lax": jax.lax.conv_general_dilated}  # MuZeroConfig.conv_gradient


def conv_gradient_kind(setting: str, learner_loop: str = "scan") -> str:
  """The key of ``CONV_GRADIENTS`` for ``MuZeroConfig.conv_gradient`` when the updates run as ``learner_loop`` says.

  "auto" is "patch" on a CPU when the updates run inside a loop (``scan``),
  "lax" otherwise. The im2col gradient was measured only on XLA:CPU, where
  XLA's own convolution gradient is slow inside loops and faster at top
  level (``host``, ``overlap``); accelerators keep their own (cuDNN on a GPU)
  until measured there.
  """
  if setting == "auto":
    return "patch" if jax.default_backend() == "cpu" and learner_loop == "scan" else "lax"
  return setting


def _conv(features: int, kernel_size, conv_gradient: str, kernel_init=lecun_normal_flat) -> nn.Conv:
  """``nn.Conv`` differentiated as ``CONV_GRADIENTS[conv_gradient]`` says (the same parameters and outputs either way)."""
  return nn.Conv(
    features,
    kernel_size,
    kernel_init=kernel_init,
    conv_general_dilated=CONV_GRADIENTS[conv_gradient_kind(conv_gradient)],
  )


_Dense = functools.partial(nn.Dense, kernel_init=lecun_normal_flat)


def min_max_normalize(x: chex.Array, eps: float = 1e-5) -> chex.Array:
  """Scales each sample of ``x`` ``[B, ...]`` to ``[0, 1]`` (MuZero Appendix G)."""
  axes = tuple(range(1, x.ndim))
  lo = jnp.min(x, axis=axes, keepdims=True)
  hi = jnp.max(x, axis=axes, keepdims=True)
  return (x - lo) / (hi - lo + eps)


def _norm() -> nn.Module:
  """LayerNorm over a whole sample ``[H, W, C]`` with per-channel scale and bias.

  Normalising each pixel's channels separately (plain LayerNorm) erases the
  magnitude differences between pixels that the observation planes encode, and
  learned several times slower on the test environments.
  """
  return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1)


class ResBlock(nn.Module):
  """Pre-activation residual block: (sample LayerNorm, ReLU, 3x3 conv) x 2 + skip."""

  channels: int
  conv_gradient: str = "auto"  # MuZeroConfig.conv_gradient

  @nn.compact
  def __call__(self, x: chex.Array) -> chex.Array:  # [B, H, W, C]
    y = _conv(self.channels, (3, 3), self.conv_gradient)(nn.relu(_norm()(x)))
    y = _conv(self.channels, (3, 3), self.conv_gradient)(nn.relu(_norm()(y)))
    return x + y


class ConvTorso(nn.Module):
  """3x3 stem convolution then residual blocks; output ``[B, H, W, channels]``."""

  channels: int
  num_blocks: int
  conv_gradient: str = "auto"  # MuZeroConfig.conv_gradient

  @nn.compact
  def __call__(self, x: chex.Array) -> chex.Array:
    x = _conv(self.channels, (3, 3), self.conv_gradient)(x)
    for _ in range(self.num_blocks):
      x = ResBlock(self.channels, self.conv_gradient)(x)
    return nn.relu(_norm()(x))


class Mlp(nn.Module):
  """Dense layers with LayerNorm and ReLU."""

  sizes: Sequence[int]

  @nn.compact
  def __call__(self, x: chex.Array) -> chex.Array:
    for size in self.sizes:
      x = nn.relu(nn.LayerNorm()(_Dense(size)(x)))
    return x


class GridLogits(nn.Module):
  """One logit per pixel: 1x1 conv features + global mean pool -> 1x1 conv.

  The pooled features are broadcast back to every pixel so a pixel's logit can
  depend on the whole grid (useful when actions compete), at 1x1-conv cost.
  """

  head_channels: int
  conv_gradient: str = "auto"  # MuZeroConfig.conv_gradient

  @nn.compact
  def __call__(self, x: chex.Array) -> chex.Array:  # [B, H, W, C] -> [B, H*W]
    y = nn.relu(_conv(self.head_channels, (1, 1), self.conv_gradient)(x))
    pooled = jnp.broadcast_to(jnp.mean(y, axis=(1, 2), keepdims=True), y.shape)
    y = nn.relu(_conv(self.head_channels, (1, 1), self.conv_gradient)(jnp.concatenate([y, pooled], -1)))
    y = _conv(1, (1, 1), self.conv_gradient, kernel_init=_zeros)(y)
    return y.reshape(y.shape[0], -1)


class DenseLogits(nn.Module):
  """Flatten (after a 1x1 conv for image input), then a zero-initialised linear layer."""

  head_channels: int
  num_outputs: int
  conv_gradient: str = "auto"  # MuZeroConfig.conv_gradient

  @nn.compact
  def __call__(self, x: chex.Array) -> chex.Array:
    if x.ndim == 4:
      x = nn.relu(_conv(self.head_channels, (1, 1), self.conv_gradient)(x))
    x = x.reshape(x.shape[0], -1)
    return _Dense(self.num_outputs, kernel_init=_zeros)(x)


class ScalarLogits(nn.Module):
  """Value or reward logits: (image: 1x1 conv, global mean and max pool), hidden layer, linear.

  Pooling makes the head translation invariant, so "the reward at the chosen
  pixel" is learnt once rather than once per position.
  """

  head_channels: int
  hidden_size: int
  num_bins: int
  conv_gradient: str = "auto"  # MuZeroConfig.conv_gradient

  @nn.compact
  def __call__(self, x: chex.Array) -> chex.Array:
    if x.ndim == 4:
      y = nn.relu(_conv(self.head_channels, (1, 1), self.conv_gradient)(x))
      x = jnp.concatenate([jnp.mean(y, axis=(1, 2)), jnp.max(y, axis=(1, 2))], axis=-1)
    x = nn.relu(_Dense(self.hidden_size)(x))
    return _Dense(self.num_bins, kernel_init=_zeros)(x)


class MuZeroNetwork(nn.Module):
  """Representation, dynamics and prediction functions of MuZero.

  Sizes come from ``config`` (one source of hyperparameters; build it with
  :func:`make_network`). Variables come from ``net.init(key, obs[None],
  action[None])``; then call the three functions with ``net.apply(variables,
  ..., method="represent")`` etc.
  """

  config: MuZeroConfig  # sizes: the torso (network, channels, blocks, widths) and the supports
  num_actions: int
  observation_shape: tuple[int, ...]
  conv_policy: bool  # fully convolutional policy/legality heads (see uses_conv_policy)
  action_embedding_size: int = 8

  @property
  def kind(self) -> str:
    return self.config.network

  @property
  def value_bins(self) -> int:
    return 2 * self.config.support_size + 1

  @property
  def reward_bins(self) -> int:
    return 2 * self.config.reward_support_size + 1

  def setup(self) -> None:
    c = self.config
    if self.kind == "resnet":
      self.repr_torso = ConvTorso(c.channels, c.num_blocks, c.conv_gradient)
      self.dyn_torso = ConvTorso(c.channels, c.dynamics_blocks, c.conv_gradient)
    else:
      self.repr_torso = Mlp((c.hidden_size,) * c.mlp_layers)
      self.repr_out = _Dense(c.latent_size)
      self.dyn_torso = Mlp((c.hidden_size,) * c.mlp_layers)
      self.dyn_out = _Dense(c.latent_size)
      self.pred_torso = Mlp((c.hidden_size,))
    if not self.conv_policy:
      self.action_embed = _Dense(self.action_embedding_size)
    self.reward_head = ScalarLogits(c.head_channels, c.hidden_size, self.reward_bins, c.conv_gradient)
    self.value_head = ScalarLogits(c.head_channels, c.hidden_size, self.value_bins, c.conv_gradient)
    if self.conv_policy:
      self.policy_head = GridLogits(c.head_channels, c.conv_gradient)
      self.legality_head = GridLogits(c.head_channels, c.conv_gradient)
    else:
      self.policy_head = DenseLogits(c.head_channels, self.num_actions, c.conv_gradient)
      self.legality_head = DenseLogits(c.head_channels, self.num_actions, c.conv_gradient)

  def __call__(self, obs: chex.Array, action: chex.Array):
    """Initial inference then one recurrent step (used by ``init``)."""
    latent = self.represent(obs)
    next_latent, reward_logits = self.dynamics(latent, action)
    return self.predict(next_latent), reward_logits

  def represent(self, obs: chex.Array) -> chex.Array:
    """Observation ``[B, *observation_shape]`` -> latent ``[B, H, W, channels]`` or ``[B, latent_size]``."""
    chex.assert_shape(obs, (None, *self.observation_shape))
    obs = obs.astype(jnp.float32)
    if self.kind == "resnet":
      return min_max_normalize(self.repr_torso(jnp.transpose(obs, (0, 2, 3, 1))))
    x = self.repr_torso(obs.reshape(obs.shape[0], -1))
    return min_max_normalize(self.repr_out(x))

  def dynamics(self, latent: chex.Array, action: chex.Array) -> tuple[chex.Array, chex.Array]:
    """(latent ``[B, ...]``, action ``[B]`` int) -> (next latent ``[B, ...]``, reward logits ``[B, reward_bins]``)."""
    chex.assert_rank(action, 1)
    batch = latent.shape[0]
    one_hot = jax.nn.one_hot(action, self.num_actions, dtype=latent.dtype)
    if self.kind == "resnet":
      height, width = latent.shape[1:3]
      if self.conv_policy:
        action_planes = one_hot.reshape(batch, height, width, 1)
      else:
        emb = self.action_embed(one_hot)[:, None, None, :]
        action_planes = jnp.broadcast_to(emb, (batch, height, width, emb.shape[-1]))
      x = self.dyn_torso(jnp.concatenate([latent, action_planes], axis=-1))
      return min_max_normalize(x), self.reward_head(x)
    x = self.dyn_torso(jnp.concatenate([latent, one_hot], axis=-1))
    return min_max_normalize(self.dyn_out(x)), self.reward_head(x)

  def predict(self, latent: chex.Array) -> tuple[chex.Array, chex.Array, chex.Array]:
    """Latent -> (policy logits ``[B, A]``, value logits ``[B, value_bins]``, legality logits ``[B, A]``)."""
    x = latent if self.kind == "resnet" else self.pred_torso(latent)
    return self.policy_head(x), self.value_head(x), self.legality_head(x)


def uses_conv_policy(config: MuZeroConfig, num_actions: int, observation_shape: Sequence[int]) -> bool:
  """Whether the policy/legality heads are fully convolutional for this env."""
  grid = config.network == "resnet" and len(observation_shape) == 3
  fits = grid and observation_shape[1] * observation_shape[2] == num_actions
  if config.policy_head == "conv" and not fits:
    raise ValueError(
      f"policy_head='conv' needs network='resnet', observations [C, H, W] and "
      f"num_actions == H*W; got observation_shape={tuple(observation_shape)}, "
      f"num_actions={num_actions}"
    )
  return fits and config.policy_head != "dense"


def make_network(
  config: MuZeroConfig, num_actions: int, observation_shape: Sequence[int], *, learner_loop: str | None = None
) -> MuZeroNetwork:
  """The network for an environment with these action and observation sizes.

  ``learner_loop``: the loop its updates will run in (``MuZeroConfig.learner_loop``, resolved): the
  network's ``conv_gradient`` is then resolved for it (:func:`conv_gradient_kind`); None keeps the
  config's setting (``auto`` then differentiates as inside a scan). Parameters and outputs are the
  same either way.
  """
  if learner_loop is not None:
    config = config.replace(conv_gradient=conv_gradient_kind(config.conv_gradient, learner_loop))
  observation_shape = tuple(int(d) for d in observation_shape)
  if config.network == "resnet" and len(observation_shape) != 3:
    raise ValueError(
      f"network='resnet' needs observations [C, H, W]; got shape {observation_shape}. "
      "Use network='mlp' for flat observations."
    )
  return MuZeroNetwork(
    config=config,
    num_actions=int(num_actions),
    observation_shape=observation_shape,
    conv_policy=uses_conv_policy(config, num_actions, observation_shape),
  )
