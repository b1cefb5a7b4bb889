"""muzero_jax.fine_tune: an agent taught marked moves ranks them first, at its root and through its model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import muzero_jax
from muzero_jax import support

CONFIG = muzero_jax.MuZeroConfig(network="resnet", channels=8, num_blocks=1, dynamics_blocks=1, head_channels=4)
SHAPE = (2, 3, 4)  # channels, H, W: a grid of 12 moves


def _positions(seed: int, n: int, k: int = 4) -> muzero_jax.MarkedPositions:
  """The marked move is the pixel where channel 0 peaks; channel 1 is noise; a fifth of the positions mark none."""
  rng = np.random.default_rng(seed)
  obs = rng.normal(size=(n, *SHAPE)).astype(np.float32)
  a = SHAPE[1] * SHAPE[2]
  legal = np.ones((n, a), bool)
  best = obs[:, 0].reshape(n, -1).argmax(axis=1)
  has = rng.random(n) < 0.8
  marked = np.zeros((n, a), bool)
  marked[np.arange(n)[has], best[has]] = True
  others = np.stack([rng.permutation(np.setdiff1d(np.arange(a), [b]))[: k - 1] for b in best])
  actions = np.concatenate([best[:, None], others], axis=1).astype(np.int32)
  labels = np.take_along_axis(marked, actions, axis=1).astype(np.float32)
  return muzero_jax.MarkedPositions(obs, legal, marked, actions, labels, np.ones((n, k), np.float32))


def _values(params, network, obs, actions):
  latent = network.apply(params, obs, method="represent")
  nxt, _ = network.apply(params, latent, actions, method="dynamics")
  _, logits, _ = network.apply(params, nxt, method="predict")
  return np.asarray(support.logits_to_scalar(logits, CONFIG.support_size, CONFIG.value_transform_eps))


def test_fine_tune_teaches_the_marked_move():
  network = muzero_jax.make_network(CONFIG, SHAPE[1] * SHAPE[2], SHAPE)
  params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE)), jnp.zeros((1,), jnp.int32))
  train, test = _positions(0, 256), _positions(1, 200)
  tune = muzero_jax.FineTuneConfig(steps=300, batch_size=32, learning_rate=3e-3, value_weight=4.0)
  tuned, history = muzero_jax.fine_tune(params, CONFIG, [train], seed=0, tune=tune)
  assert history.shape == (300, 5) and np.isfinite(history).all()
  assert history[-50:, 1].mean() < 0.5 * history[:50, 1].mean()  # the policy term fell
  obs = jnp.asarray(test.obs)
  policy, _, _ = network.apply(tuned, network.apply(tuned, obs, method="represent"), method="predict")
  best = test.obs[:, 0].reshape(len(obs), -1).argmax(axis=1)
  before, _, _ = network.apply(params, network.apply(params, obs, method="represent"), method="predict")
  hit = np.mean(np.asarray(policy).argmax(axis=1) == best)
  assert hit >= 0.6 and hit > np.mean(np.asarray(before).argmax(axis=1) == best) + 0.4  # chance: 1 in 12
  # through the model: the marked move's successor is valued above an unmarked one's (what a search's Q orders)
  on = _values(tuned, network, obs, jnp.asarray(best, jnp.int32))
  off = _values(tuned, network, obs, jnp.asarray(test.actions[:, 1]))
  assert np.mean(on > off) >= 0.8 and off.mean() < 0.1
  again, _ = muzero_jax.fine_tune(params, CONFIG, [train], seed=0, tune=tune)
  for x, y in zip(jax.tree_util.tree_leaves(tuned), jax.tree_util.tree_leaves(again), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # seeded


def test_marked_positions_refuse_inconsistent_arrays():
  good = _positions(0, 4)
  with pytest.raises(ValueError, match="not legal"):
    muzero_jax.MarkedPositions(good.obs, good.legal & False, good.marked, good.actions, good.labels, good.weights)
  with pytest.raises(ValueError, match="labels"):
    muzero_jax.MarkedPositions(good.obs, good.legal, good.marked, good.actions, good.labels[:, :2], good.weights)
  with pytest.raises(ValueError, match="outside"):
    muzero_jax.MarkedPositions(good.obs, good.legal, good.marked, good.actions + 12, good.labels, good.weights)
  with pytest.raises(ValueError, match="at least one position"):
    muzero_jax.fine_tune({}, CONFIG, [], seed=0)
