"""Shapes and invariants of the MuZero networks (image and MLP variants)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muzero_jax import MuZeroConfig, make_network
from muzero_jax.networks import conv_gradient_kind, min_max_normalize, patch_gradient_conv, uses_conv_policy

TINY = dict(
  channels=8,
  num_blocks=1,
  dynamics_blocks=1,
  head_channels=4,
  hidden_size=16,
  latent_size=12,
  support_size=4,
  reward_support_size=3,
)
B = 3


def _outputs(config, num_actions, obs_shape):
  net = make_network(config, num_actions, obs_shape)
  obs = jax.random.uniform(jax.random.PRNGKey(0), (B, *obs_shape))
  action = jnp.arange(B, dtype=jnp.int32) % num_actions

  @jax.jit
  def run(obs, action):
    params = net.init(jax.random.PRNGKey(1), obs[:1], action[:1])
    latent = net.apply(params, obs, method="represent")
    next_latent, reward_logits = net.apply(params, latent, action, method="dynamics")
    return (latent, next_latent, reward_logits, *net.apply(params, next_latent, method="predict"))

  return (net, *run(obs, action))


@pytest.mark.parametrize(
  "network,obs_shape,num_actions,latent_shape,conv",
  [
    ("resnet", (3, 4, 5), 20, (4, 5, 8), True),  # H*W == A: fully convolutional heads
    ("resnet", (3, 4, 5), 7, (4, 5, 8), False),  # A != H*W: dense heads
    ("mlp", (3, 4, 5), 20, (12,), False),  # image flattened by the MLP
    ("mlp", (10,), 6, (12,), False),  # flat observations
  ],
)
def test_output_shapes(network, obs_shape, num_actions, latent_shape, conv):
  cfg = MuZeroConfig(network=network, **TINY)
  net, latent, next_latent, reward_logits, policy, value, legal = _outputs(cfg, num_actions, obs_shape)
  assert net.conv_policy is conv
  assert latent.shape == (B, *latent_shape)
  assert next_latent.shape == (B, *latent_shape)
  assert reward_logits.shape == (B, 2 * 3 + 1)
  assert policy.shape == (B, num_actions)
  assert value.shape == (B, 2 * 4 + 1)
  assert legal.shape == (B, num_actions)
  for lat in (latent, next_latent):  # min-max normalised per sample
    flat = np.asarray(lat).reshape(B, -1)
    np.testing.assert_allclose(flat.min(1), 0.0, atol=1e-6)
    np.testing.assert_allclose(flat.max(1), 1.0, atol=1e-4)
  # Zero-initialised output layers: uniform policy, value and reward 0 at init.
  np.testing.assert_allclose(policy, 0.0, atol=1e-6)
  np.testing.assert_allclose(value, 0.0, atol=1e-6)


def test_min_max_normalize_per_sample():
  x = jnp.array([[1.0, 3.0, 2.0], [-5.0, -5.0, 5.0]])
  np.testing.assert_allclose(min_max_normalize(x), [[0, 1, 0.5], [0, 0, 1]], atol=1e-5)


def test_conv_policy_selection_and_errors():
  assert uses_conv_policy(MuZeroConfig(), 20, (3, 4, 5))
  assert not uses_conv_policy(MuZeroConfig(policy_head="dense"), 20, (3, 4, 5))
  with pytest.raises(ValueError, match="num_actions == H\\*W"):
    uses_conv_policy(MuZeroConfig(policy_head="conv"), 7, (3, 4, 5))
  with pytest.raises(ValueError, match="mlp"):
    make_network(MuZeroConfig(network="resnet"), 6, (10,))


@pytest.mark.parametrize(
  "kernel,padding,stride",
  [((3, 3), "SAME", 1), ((1, 1), "SAME", 1), ((3, 2), "VALID", 1), ((3, 3), ((2, 0), (1, 1)), 1), ((3, 3), "SAME", 2)],
)
def test_patch_gradient_conv_is_the_convolution_with_its_gradient(kernel, padding, stride):
  """`patch_gradient_conv`: XLA's convolution forward (exactly), its gradients up to rounding (stride 2: handed over)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (*kernel, 3, 4))
  dims = ("NHWC", "HWIO", "NHWC")

  def loss(conv, w, x):
    return jnp.sum(jnp.sin(conv(x, w, (stride, stride), padding, dimension_numbers=dims)))

  convs = (patch_gradient_conv, jax.lax.conv_general_dilated)
  got, want = (conv(x, w, (stride, stride), padding, dimension_numbers=dims) for conv in convs)
  np.testing.assert_array_equal(got, want)
  for argnum in (1, 2):
    got, want = (jax.jit(jax.grad(loss, argnum), static_argnums=0)(conv, w, x) for conv in convs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_gradient_setting_changes_no_parameter_no_output_and_gradients_only_by_rounding():
  """`MuZeroConfig.conv_gradient`: the same variables and outputs; the loss gradients agree up to rounding."""
  obs_shape, num_actions = (3, 4, 5), 20
  nets = [make_network(MuZeroConfig(conv_gradient=c, **TINY), num_actions, obs_shape) for c in ("patch", "lax")]
  obs = jax.random.uniform(jax.random.PRNGKey(0), (B, *obs_shape))
  action = jnp.arange(B, dtype=jnp.int32)
  params = nets[0].init(jax.random.PRNGKey(1), obs[:1], action[:1])
  other = nets[1].init(jax.random.PRNGKey(1), obs[:1], action[:1])
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, other)
  rng = np.random.default_rng(2)  # non-zero heads (numpy: one compiled normal draw per leaf shape costs ~20 s on a CPU)
  params = jax.tree.map(lambda x: x + 0.1 * rng.standard_normal(x.shape, np.float32), params)

  def outputs(net, params):
    latent = net.apply(params, obs, method="represent")
    nxt, reward = net.apply(params, latent, action, method="dynamics")
    return (latent, nxt, reward, *net.apply(params, nxt, method="predict"))

  # Compiled whole (op by op, every primitive of both networks and their gradients compiles on its own).
  for got, want in zip(*(jax.jit(outputs, static_argnums=0)(net, params) for net in nets)):
    np.testing.assert_array_equal(got, want)
  grads = [
    jax.jit(jax.grad(lambda p, net=net: sum(jnp.sum(jnp.sin(o)) for o in outputs(net, p))))(params) for net in nets
  ]
  for got, want in zip(*(jax.tree.leaves(g) for g in grads)):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
  with pytest.raises(ValueError, match="conv_gradient"):
    MuZeroConfig(conv_gradient="fft")


def test_conv_gradient_auto_is_patch_on_a_cpu_and_negative_padding_falls_back():
  assert conv_gradient_kind("auto") == ("patch" if jax.default_backend() == "cpu" else "lax")
  assert conv_gradient_kind("lax") == "lax" and MuZeroConfig().conv_gradient == "auto"
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 5, 6, 2))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 2))
  crop = ((-1, 1), (1, 0))  # a negative pad crops the input: handed to XLA's convolution, gradient included

  def loss(conv, w):
    return jnp.sum(jnp.sin(conv(x, w, (1, 1), crop, dimension_numbers=("NHWC", "HWIO", "NHWC"))))

  got, want = (jax.grad(loss, 1)(conv, w) for conv in (patch_gradient_conv, jax.lax.conv_general_dilated))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
