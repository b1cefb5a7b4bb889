"""Replay: n-step targets, priorities, sampling, reanalysis."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muzero_jax import MuZeroConfig, learner, make_network, trainer
from muzero_jax import replay as rl


def test_n_step_return_hand_computed():
  r = jnp.array([1.0, 2.0, 3.0])
  # 1 + 0.5*2 + 0.25*3 + 0.125*10
  assert float(rl.n_step_return(r, jnp.array([0, 0, 0]), jnp.float32(10.0), discount=0.5)) == pytest.approx(4.0)
  # The episode ends after step 1: no later reward, no bootstrap.
  assert float(rl.n_step_return(r, jnp.array([0, 1, 0]), jnp.float32(10.0), discount=0.5)) == pytest.approx(2.0)
  assert float(rl.n_step_return(r, jnp.array([1, 0, 0]), jnp.float32(10.0), discount=0.5)) == pytest.approx(1.0)
  # A time limit cuts the episode after step 1: the sum goes on from the value 7 of the observation it was cut at,
  # 1 + 0.5 (2 + 0.5 x 7); it was 2.0, as if the task had ended.
  cut = jnp.array([0.0, 7.0, 0.0])
  got = rl.n_step_return(r, jnp.array([0, 1, 0]), jnp.float32(10.0), discount=0.5, truncation_value=cut)
  assert float(got) == pytest.approx(3.75)


def test_n_step_targets_and_make_targets_hand_computed():
  cfg = MuZeroConfig(n_step=2, unroll_steps=2, discount=1.0)
  r = jnp.arange(1.0, 7.0)  # 1..6
  v = 10.0 * jnp.arange(1.0, 7.0)  # 10..60
  d = jnp.array([0, 0, 1, 0, 0, 0], bool)
  targets = jax.jit(lambda r, d, v: rl.n_step_targets(r, d, v, n=2, discount=1.0, num_targets=3))(r, d, v)
  np.testing.assert_allclose(targets, [1 + 2 + 30, 2 + 3, 3])
  policy = jnp.eye(6, 4)
  mask = jnp.ones((6, 4), bool)
  t = rl.make_targets(r, d, v, policy, mask, config=cfg)
  np.testing.assert_allclose(t.value, [33, 5, 3])
  np.testing.assert_allclose(t.reward, [0, 1, 2])
  np.testing.assert_allclose(t.alive, [1, 1, 1])
  # Episode ends at step 1: position 2 is absorbing (value 0, losses masked).
  d2 = jnp.array([0, 1, 0, 0, 0, 0], bool)
  t2 = rl.make_targets(r, d2, v, policy, mask, config=cfg)
  np.testing.assert_allclose(t2.value, [1 + 2, 2, 0])
  np.testing.assert_allclose(t2.reward, [0, 1, 2])
  np.testing.assert_allclose(t2.alive, [1, 1, 0])
  np.testing.assert_allclose(t2.policy, policy[:3])
  # Truncated at step 1 instead (the value 100 of the observation it was cut at): the targets bootstrap from it.
  # Position 2 is the observation it was cut at: its value target is that value, not the 0 of an absorbing end.
  u, cut = jnp.zeros(6).at[1].set(100.0), jnp.zeros(6, bool).at[1].set(True)
  t3 = rl.make_targets(r, d2, v, policy, mask, config=cfg, truncation_value=u, truncated=cut)
  np.testing.assert_allclose(t3.value, [1 + 2 + 100, 2 + 100, 100])
  np.testing.assert_allclose(t3.reward, [0, 1, 2])
  np.testing.assert_allclose(t3.alive, [1, 1, 0])
  np.testing.assert_allclose(t3.known, [1, 1, 1])
  np.testing.assert_allclose(t2.known, [1, 1, 1])  # a termination's absorbing targets are known: 0
  # One more unrolled step: past the cut observation value and reward are unknown (losses off), not 0 (a review).
  t4 = rl.make_targets(
    r, d2, v, jnp.eye(6, 4), mask, config=cfg.replace(unroll_steps=3), truncation_value=u, truncated=cut
  )
  np.testing.assert_allclose(t4.value, [103, 102, 100, 0])
  np.testing.assert_allclose(t4.reward, [0, 1, 2, 0])
  np.testing.assert_allclose(t4.known, [1, 1, 1, 0])
  np.testing.assert_allclose(t4.alive, [1, 1, 0, 0])


def _config(**kw):
  base = dict(
    num_envs=2,
    rollout_length=4,
    n_step=2,
    unroll_steps=1,
    replay_capacity=2 * 12,
    batch_size=8,
    discount=0.5,
    priority_eps=0.01,
  )
  return MuZeroConfig(**{**base, **kw})


def _trajectory(rng, steps=4, cols=2, num_actions=3, done_at=(), cut_at=()):
  done = np.zeros((steps, cols), bool)
  cut = np.zeros((steps, cols), np.float32)
  for t, c in done_at:
    done[t, c] = True
  for t, c, value in cut_at:
    done[t, c], cut[t, c] = True, value
  truncated = cut != 0
  return rl.Trajectory(
    obs=jnp.asarray(rng.standard_normal((steps, cols, 2)).astype(np.float32)),
    action=jnp.asarray(rng.integers(0, num_actions, (steps, cols)).astype(np.int32)),
    reward=jnp.asarray(rng.integers(0, 4, (steps, cols)).astype(np.float32)),
    done=jnp.asarray(done),
    policy=jnp.full((steps, cols, num_actions), 1.0 / num_actions),
    root_value=jnp.asarray(rng.uniform(0, 5, (steps, cols)).astype(np.float32)),
    mask=jnp.ones((steps, cols, num_actions), bool),
    truncation_value=jnp.asarray(cut),
    truncated=jnp.asarray(truncated),
  )


def test_add_sets_priorities_of_newly_valid_positions():
  cfg = _config()
  rng = np.random.default_rng(0)
  buf = rl.init_replay(cfg, (2,), 3)
  t1 = _trajectory(rng, done_at=[(1, 1)])
  buf = rl.add_trajectory(buf, t1, config=cfg)
  valid = np.asarray(rl.valid_positions(buf, cfg))
  # 4 rows written; a position needs K + n = 3 newer rows: only row 0 is valid.
  np.testing.assert_array_equal(valid[:, 0], [True] + [False] * 11)
  r, v, d = np.asarray(t1.reward), np.asarray(t1.root_value), np.asarray(t1.done)
  for c in range(2):
    target = r[0, c] + 0.5 * r[1, c] * (1 - d[0, c]) + 0.25 * v[2, c] * (1 - d[0, c]) * (1 - d[1, c])
    assert float(buf.priority[0, c]) == pytest.approx(abs(v[0, c] - target) + 0.01, rel=1e-5)
  assert (np.asarray(buf.priority)[1:] == 0).all()
  # Column 1 ends its episode at row 1: row 0's target is r0 + 0.5 r1, no bootstrap.
  assert float(buf.priority[0, 1]) == pytest.approx(abs(v[0, 1] - (r[0, 1] + 0.5 * r[1, 1])) + 0.01, rel=1e-5)
  # Truncated at row 1 instead, at an observation worth 6: row 0's target bootstraps from it, and a sample carries it.
  cut = rl.add_trajectory(
    rl.init_replay(cfg, (2,), 3),
    t1.replace(
      done=t1.done.at[1, 1].set(True),
      truncation_value=t1.truncation_value.at[1, 1].set(6.0),
      truncated=t1.truncated.at[1, 1].set(True),
    ),
    config=cfg,
  )
  target = r[0, 1] + 0.5 * (r[1, 1] + 0.5 * 6.0)
  assert float(cut.priority[0, 1]) == pytest.approx(abs(v[0, 1] - target) + 0.01, rel=1e-5)
  drawn = rl.sample(cut, jax.random.PRNGKey(0), config=cfg)
  assert drawn.truncation_value.shape == drawn.reward.shape
  rows = (np.asarray(drawn.row)[:, None] + np.arange(cfg.window_length)[None]) % 12
  np.testing.assert_array_equal(
    drawn.truncation_value, np.asarray(cut.truncation_value)[rows, np.asarray(drawn.col)[:, None]]
  )
  assert (np.asarray(drawn.truncation_value)[np.asarray(drawn.col) == 1, 1] == 6.0).all() and (drawn.col == 1).any()
  assert np.asarray(drawn.truncated)[np.asarray(drawn.col) == 1, 1].all()
  buf = rl.add_trajectory(buf, _trajectory(rng), config=cfg)
  valid = np.asarray(rl.valid_positions(buf, cfg))
  np.testing.assert_array_equal(valid[:, 0], [True] * 5 + [False] * 7)
  assert (np.asarray(buf.priority)[:5] > 0).all()
  assert int(buf.next_row) == 8 and int(buf.rows_written) == 8


def test_ring_wraps_and_invalidates_overwritten_positions():
  cfg = _config()
  rng = np.random.default_rng(1)
  buf = rl.init_replay(cfg, (2,), 3)
  for _ in range(4):  # 16 rows into a 12-row ring
    buf = rl.add_trajectory(buf, _trajectory(rng), config=cfg)
  assert int(buf.next_row) == 4 and int(buf.rows_written) == 12
  valid = np.asarray(rl.valid_positions(buf, cfg))[:, 0]
  # Newest rows are 0..3 (ages 3..0); rows 1,2,3 lack K+n newer rows.
  np.testing.assert_array_equal(valid, [True, False, False, False] + [True] * 8)


def test_sample_windows_weights_and_priority_update():
  cfg = _config(priority_alpha=1.0, priority_beta=1.0)
  rng = np.random.default_rng(2)
  buf = rl.init_replay(cfg, (2,), 3)
  for _ in range(3):
    buf = rl.add_trajectory(buf, _trajectory(rng), config=cfg)
  valid = np.asarray(rl.valid_positions(buf, cfg))
  s = jax.jit(lambda b, k: rl.sample(b, k, config=cfg, num_windows=3))(buf, jax.random.PRNGKey(0))
  rows, cols = np.asarray(s.row), np.asarray(s.col)
  assert valid[rows, cols].all()
  assert s.window_obs.shape == (3, cfg.window_length, 2) and s.obs.shape == (8, 2)
  win = (rows[:, None] + np.arange(cfg.window_length)) % cfg.replay_rows
  np.testing.assert_array_equal(s.reward, np.asarray(buf.reward)[win, cols[:, None]])
  np.testing.assert_array_equal(s.obs, np.asarray(buf.obs)[rows, cols])
  np.testing.assert_array_equal(s.window_obs, np.asarray(buf.obs)[win[:3], cols[:3, None]])
  # Importance weights (N P(i))^-beta normalised by the batch maximum.
  p = np.where(valid, np.asarray(buf.priority), 0.0)
  prob = p[rows, cols] / p.sum()
  w = (valid.sum() * prob) ** -1.0
  np.testing.assert_allclose(s.weight, w / w.max(), rtol=1e-4)
  # Priority update is NaN-safe: a NaN error gets the max priority (at least 1).
  buf2 = rl.update_priorities(buf, s.row[:2], s.col[:2], jnp.array([0.5, jnp.nan]), config=cfg)
  assert float(buf2.priority[rows[0], cols[0]]) == pytest.approx(0.51)
  assert float(buf2.priority[rows[1], cols[1]]) == pytest.approx(max(float(buf.priority.max()), 1.0))


def test_sampling_follows_priorities():
  cfg = _config(priority_alpha=1.0, batch_size=256)
  rng = np.random.default_rng(3)
  buf = rl.init_replay(cfg, (2,), 3)
  for _ in range(3):
    buf = rl.add_trajectory(buf, _trajectory(rng), config=cfg)
  valid = np.asarray(rl.valid_positions(buf, cfg))
  prio = np.where(valid, 0.01, 0.0)
  prio[2, 1] = 10.0
  buf = buf.replace(priority=jnp.asarray(prio, jnp.float32))
  s = rl.sample(buf, jax.random.PRNGKey(1), config=cfg)
  hits = np.mean((np.asarray(s.row) == 2) & (np.asarray(s.col) == 1))
  expected = 10.0 / prio.sum()
  assert hits == pytest.approx(expected, abs=0.03)
  uniform = rl.sample(buf, jax.random.PRNGKey(1), config=cfg.replace(priority_alpha=0.0))
  np.testing.assert_allclose(uniform.weight, 1.0)


def test_a_position_of_zero_weight_has_no_mass_in_the_sampling_cdf():
  """A cold audit: XLA:CPU's float32 cumsum sums neighbouring outputs in different orders, so a run of zero weights
  (the newest rows, whose windows are not complete) could get a positive cdf step; `sample` then drew such a
  position (about 1e-8 of the mass) and its importance weight, from a floored probability, took every other
  sample's weight to ~1e-10. The sampling cdf gives every zero weight a zero step."""
  rng = np.random.default_rng(0)
  cdf_of = jax.jit(rl.sampling_cdf)
  for _ in range(20):
    n = 4096
    p = ((rng.random(n) * 2 + 0.01) ** 0.6).astype(np.float32)
    start = rng.integers(0, n - 2000)
    zero = np.zeros(n, bool)
    zero[start : start + rng.integers(10, 2000)] = True
    p[zero] = 0.0
    cdf = np.asarray(cdf_of(jnp.asarray(p)), np.float64)
    step = np.diff(np.concatenate([[0.0], cdf]))
    assert np.all(step[zero] == 0.0) and np.all(step >= 0.0)
    np.testing.assert_allclose(cdf[-1], p.astype(np.float64).sum(), rtol=1e-5)  # the mass is the weights' sum
    # And searchsorted as `sample` uses it never lands on one.
    u = (np.arange(512) + rng.random(512)) / 512 * cdf[-1] * (1 - 1e-6)
    drawn = np.asarray(jnp.searchsorted(jnp.asarray(cdf, jnp.float32), jnp.asarray(u, jnp.float32), side="right"))
    assert not zero[drawn].any()


def _reanalysis_setup(seed: int, **kw):
  """(config, replay of 3 trajectories, network, initial parameters) of a tiny MLP agent reanalysing half a batch."""
  cfg = _config(
    network="mlp",
    hidden_size=16,
    latent_size=8,
    mlp_layers=1,
    support_size=4,
    reward_support_size=3,
    num_simulations=4,
    max_num_considered_actions=3,
    reanalyse_fraction=0.5,
    **kw,
  )
  rng = np.random.default_rng(seed)
  buf = rl.init_replay(cfg, (2,), 3)
  for _ in range(3):
    buf = rl.add_trajectory(buf, _trajectory(rng), config=cfg)
  net = make_network(cfg, 3, (2,))
  params = jax.jit(net.init)(jax.random.PRNGKey(1), jnp.zeros((1, 2)), jnp.zeros((1,), jnp.int32))
  return cfg, buf, net, params


def test_reanalysis_refreshes_targets_with_current_params():
  cfg, buf, net, params_a = _reanalysis_setup(4, discount=0.9)
  noise = np.random.default_rng(5)
  params_b = jax.tree.map(lambda x: x + noise.standard_normal(x.shape).astype(np.float32), params_a)

  @jax.jit
  def targets(params, key):
    sample = rl.sample(buf, jax.random.PRNGKey(0), config=cfg, num_windows=cfg.num_reanalysed)
    re = learner.reanalyse(params, key, sample, network=net, config=cfg)
    stored = learner.make_batch(sample, config=cfg).targets
    return re, learner.make_batch(re, config=cfg).targets, stored

  key = jax.random.PRNGKey(2)
  _, t_a, stored = targets(params_a, key)
  _, t_a2, _ = targets(params_a, key)
  re_b, t_b, _ = targets(params_b, key)
  m = cfg.num_reanalysed
  np.testing.assert_allclose(t_a.value, t_a2.value)  # deterministic given params and key
  # Reanalysed samples get new policy and value targets; the others keep the stored ones.
  assert not np.allclose(t_a.value[:m], t_b.value[:m])
  assert not np.allclose(t_a.policy[:m], t_b.policy[:m])
  np.testing.assert_allclose(t_a.value[m:], stored.value[m:])
  np.testing.assert_allclose(t_b.policy[m:], stored.policy[m:])
  # The value target bootstraps from the reanalysed root value n steps ahead.
  k0 = rl.n_step_targets(
    re_b.reward[0],
    re_b.done[0],
    re_b.root_value[0],
    n=cfg.n_step,
    discount=cfg.discount,
    num_targets=cfg.unroll_steps + 1,
  )
  alive = np.asarray(t_b.alive[0])
  np.testing.assert_allclose(t_b.value[0], np.asarray(k0) * alive, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(re_b.policy[:m]).sum(-1), 1.0, atol=1e-5)


def test_learner_loop_matches_updates_that_carry_the_whole_replay():
  """`trainer.learn_updates` carries only parameters, optimiser state and priorities through its scan: the same
  parameters and priorities as a loop of `learn_step` that hands the whole replay from update to update
  (reanalysis on, so the priorities change), and a guard refuses an update that changes anything else."""
  cfg, buf, net, params = _reanalysis_setup(6, updates_per_iteration=3, min_replay_size=0)
  opt = learner.make_optimizer(cfg)
  key = jax.random.PRNGKey(3)
  learn = functools.partial(trainer.learn_updates, network=net, optimizer=opt, config=cfg)
  (p_new, _, r_new), out = jax.jit(learn)(params, opt.init(params), buf, key, jnp.array(True))
  p_old, o_old, r_old = params, opt.init(params), buf
  step = jax.jit(functools.partial(learner.learn_step, network=net, optimizer=opt, config=cfg))
  for k in jax.random.split(key, cfg.updates_per_iteration):
    p_old, o_old, r_old, *_ = step(p_old, o_old, r_old, k)
  assert bool(jnp.all(out.ran)) and not np.array_equal(np.asarray(r_new.priority), np.asarray(buf.priority))
  np.testing.assert_array_equal(np.asarray(r_new.priority), np.asarray(r_old.priority))
  for a, b in zip(jax.tree.leaves(p_new), jax.tree.leaves(p_old), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(NotImplementedError, match=r"changed the replay's \['reward'\]"):
    trainer._check_only_priorities_change(buf, buf.replace(reward=buf.reward + 1.0))
