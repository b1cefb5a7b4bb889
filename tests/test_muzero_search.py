"""The mctx wiring: root masking, legality masking inside the tree, outputs."""

import jax
import jax.numpy as jnp
import mctx
import numpy as np
import pytest

from muzero_jax import MuZeroConfig, make_network, run_search
from muzero_jax.search import ILLEGAL_LOGIT, make_recurrent_fn, max_backup_qvalues, root_output

OBS_SHAPE = (2, 3, 4)
NUM_ACTIONS = 12
BATCH = 64
TINY = dict(
  network="mlp",
  hidden_size=16,
  latent_size=8,
  mlp_layers=1,
  support_size=4,
  reward_support_size=3,
  num_simulations=6,
  max_num_considered_actions=4,
)


@pytest.fixture(scope="module")
def setup():
  net = make_network(MuZeroConfig(**TINY), NUM_ACTIONS, OBS_SHAPE)
  key_obs, key_mask, key_init, key_noise = jax.random.split(jax.random.PRNGKey(0), 4)
  obs = jax.random.uniform(key_obs, (BATCH, *OBS_SHAPE))
  params = jax.jit(net.init)(key_init, obs[:1], jnp.zeros((1,), jnp.int32))
  # Large random weights: peaked priors that often favour illegal actions (numpy
  # noise: eager jax.random per leaf shape would compile once per shape).
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: x + 2.0 * rng.standard_normal(x.shape).astype(np.float32), params)
  mask = jax.random.bernoulli(key_mask, 0.3, (BATCH, NUM_ACTIONS))
  mask = mask.at[:, 0].set(mask[:, 0] | ~mask.any(-1))  # at least one legal action
  mask = mask.at[0].set(False).at[0, 7].set(True)  # exactly one legal action
  return net, params, obs, mask


_SEARCH_FNS = {}


def _search_fn(net, search="gumbel", greedy=False):
  """One jitted search per (search, greedy), shared by the tests of this module."""
  if (search, greedy) not in _SEARCH_FNS:
    cfg = MuZeroConfig(search=search, **TINY)
    _SEARCH_FNS[search, greedy] = jax.jit(
      lambda p, k, o, m: run_search(p, k, o, m, network=net, config=cfg, greedy=greedy)
    )
  return _SEARCH_FNS[search, greedy]


@pytest.mark.parametrize("search", ["gumbel", "muzero"])
@pytest.mark.parametrize("greedy", [False, True])
def test_search_never_selects_masked_action(setup, search, greedy):
  net, params, obs, mask = setup
  fn = _search_fn(net, search, greedy)
  for seed in range(3):
    out = fn(params, jax.random.PRNGKey(seed), obs, mask)
    action = np.asarray(out.action)
    assert action.shape == (BATCH,)
    assert np.asarray(mask)[np.arange(BATCH), action].all()
    assert action[0] == 7
    weights = np.asarray(out.action_weights)
    assert weights.shape == (BATCH, NUM_ACTIONS)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert (weights[~np.asarray(mask)] < 1e-6).all()
    assert out.root_value.shape == (BATCH,) and np.isfinite(np.asarray(out.root_value)).all()


def test_recurrent_fn_masks_predicted_illegal_actions(setup):
  net, params, obs, _ = setup
  cfg = MuZeroConfig(legality_threshold=0.5, **TINY)
  action = jnp.arange(BATCH, dtype=jnp.int32) % NUM_ACTIONS

  @jax.jit
  def run(params, obs):
    latent = net.apply(params, obs, method="represent")
    out, next_latent = make_recurrent_fn(net, cfg)(params, jax.random.PRNGKey(0), action, latent)
    return out, net.apply(params, next_latent, method="predict")

  out, (policy, _, legal_logits) = run(params, obs)
  predicted_illegal = np.asarray(jax.nn.sigmoid(legal_logits) < 0.5)
  assert predicted_illegal.any() and (~predicted_illegal).any()
  prior = np.asarray(out.prior_logits)
  np.testing.assert_array_equal(prior[predicted_illegal], ILLEGAL_LOGIT)
  np.testing.assert_allclose(prior[~predicted_illegal], np.asarray(policy)[~predicted_illegal], rtol=1e-6)
  np.testing.assert_allclose(out.discount, cfg.discount)


def test_all_illegal_row_does_not_produce_nan(setup):
  net, params, obs, mask = setup
  mask = mask.at[1].set(False)
  out = _search_fn(net)(params, jax.random.PRNGKey(0), obs, mask)
  assert np.isfinite(np.asarray(out.action_weights)).all()
  assert 0 <= int(out.action[1]) < NUM_ACTIONS


def _max_value(tree, b: int, node: int) -> float:
  """Reference max backup by recursion: best of the node's network value and its children's reward + discount x max."""
  best = float(tree.raw_values[b, node])
  for a, child in enumerate(tree.children_index[b, node]):
    if child >= 0:
      best = max(
        best,
        float(tree.children_rewards[b, node, a] + tree.children_discounts[b, node, a] * _max_value(tree, b, child)),
      )
  return best


def test_max_backup_matches_a_recursive_reference(setup):
  net, params, obs, mask = setup
  cfg = MuZeroConfig(**{**TINY, "num_simulations": 24})

  @jax.jit  # compiled whole: run eagerly, mctx's search compiles op by op
  def search(params, key, obs):
    root = root_output(net, cfg, params, obs)
    out = mctx.muzero_policy(params, key, root, make_recurrent_fn(net, cfg), num_simulations=24)
    return out, max_backup_qvalues(out.search_tree)

  out, got = search(params, jax.random.PRNGKey(3), obs[:8])
  tree = jax.device_get(out.search_tree)
  assert int(np.max(np.sum(tree.children_index[:, 1:] >= 0, axis=(1, 2)))) > 0  # deeper than one level
  got = np.asarray(got)
  mean_q = np.asarray(out.search_tree.summary().qvalues)
  for b in range(8):
    for a, child in enumerate(tree.children_index[b, 0]):
      if child >= 0:
        want = tree.children_rewards[b, 0, a] + tree.children_discounts[b, 0, a] * _max_value(tree, b, child)
        np.testing.assert_allclose(got[b, a], want, rtol=1e-5, atol=1e-5)
        assert got[b, a] >= mean_q[b, a] - 1e-5  # a max is never below the mean of the same values
  searched = jax.jit(lambda p, k, o, m: run_search(p, k, o, m, network=net, config=cfg, greedy=True, backup="max"))(
    params, jax.random.PRNGKey(3), obs[:8], mask[:8]
  )
  assert np.isfinite(np.asarray(searched.action_values)).all()
  with pytest.raises(ValueError, match="backup must be one of"):
    run_search(params, jax.random.PRNGKey(3), obs[:8], mask[:8], network=net, config=cfg, backup="median")
