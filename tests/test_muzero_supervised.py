"""muzero_jax.fine_tune: an agent taught marked moves ranks them first, at its root and through its model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import muzero_jax
from muzero_jax import supervised, support

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


def test_loss_terms_by_hand():
  """The policy term is the cross-entropy to the uniform distribution over the marked legal moves, averaged over
  positions with a mark; a sample of weight 0 changes no term; the value term is the weighted mean CE."""
  network = muzero_jax.make_network(CONFIG, SHAPE[1] * SHAPE[2], SHAPE)
  params = network.init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE)), jnp.zeros((1,), jnp.int32))
  p = _positions(3, 3)
  marked = p.marked.copy()
  marked[1] = False  # one position without a mark: no policy term
  marked[2, :2] = True  # another with three marked moves
  batch = (p.obs, p.legal, marked, p.actions, p.labels, p.weights)
  tune = muzero_jax.FineTuneConfig()
  _, terms = supervised._loss(params, network, CONFIG, tune, tuple(map(jnp.asarray, batch)))
  latent = network.apply(params, jnp.asarray(p.obs), method="represent")
  logits = np.asarray(network.apply(params, latent, method="predict")[0], np.float64)
  logp = (
    logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
  )
  ce = [-logp[i][marked[i]].mean() for i in (0, 2)]
  np.testing.assert_allclose(float(terms[1]), np.mean(ce), rtol=1e-5)
  # A padded sample (weight 0) with another move and label changes nothing.
  pad = lambda a, v: np.concatenate([a, np.full((3, 1), v, a.dtype)], axis=1)  # noqa: E731
  padded = (p.obs, p.legal, marked, pad(p.actions, 5), pad(p.labels, 1.0), pad(p.weights, 0.0))
  _, padded_terms = supervised._loss(params, network, CONFIG, tune, tuple(map(jnp.asarray, padded)))
  np.testing.assert_allclose(np.asarray(padded_terms), np.asarray(terms), rtol=1e-5, atol=1e-7)
  # The value term: the weighted mean of the successors' cross-entropies to the two-hot of each mark.
  w = np.array([[1.0, 2.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 1.0, 1.0]], np.float32)
  weighted = (p.obs, p.legal, marked, p.actions, p.labels, w)
  _, wt = supervised._loss(params, network, CONFIG, tune, tuple(map(jnp.asarray, weighted)))
  nxt, _ = network.apply(params, jnp.repeat(latent, 4, axis=0), jnp.asarray(p.actions.reshape(-1)), method="dynamics")
  v_logits = np.asarray(network.apply(params, nxt, method="predict")[1], np.float64)
  target = np.asarray(support.scalar_to_support(jnp.asarray(p.labels.reshape(-1)), CONFIG.support_size))
  v_logp = v_logits - v_logits.max(1, keepdims=True)
  v_logp = v_logp - np.log(np.exp(v_logp).sum(1, keepdims=True))
  ce_v = -(target * v_logp).sum(1)
  np.testing.assert_allclose(float(wt[2]), (w.reshape(-1) * ce_v).sum() / w.sum(), rtol=1e-4)
  with pytest.raises(ValueError, match="steps and batch_size"):
    muzero_jax.FineTuneConfig(steps=0)
  with pytest.raises(ValueError, match="finite and >= 0"):
    muzero_jax.FineTuneConfig(value_weight=-1.0)
