"""gymnax CartPole-v1 behind muzero_jax's protocol: adapter conformance and a short training run."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax", reason="the control extra is not installed: pip install -e '.[control]'")

from experiments import train
from experiments.control import cartpole, gymnax_env
from muzero_jax import check_env_shapes, make_train, search, selfplay

ENV = gymnax_env.GymnaxEnv("CartPole-v1")
PARAMS = gymnax_env.default_params("CartPole-v1")


def _rollout(step, reset, key, actions):
  """Steps the adapter along `actions`, returning per-step (obs, reward, terminated, truncated)."""
  obs, state = reset(key, PARAMS)
  out = []
  for t, a in enumerate(actions):
    obs, state, r, term, trunc, _ = step(jax.random.fold_in(key, t), state, jnp.int32(a), PARAMS)
    out.append((np.asarray(obs), float(r), bool(term), bool(trunc)))
  return out


def test_adapter_follows_the_protocol_and_matches_gymnax():
  gym_env, gym_params = gymnax_env.make_gymnax("CartPole-v1")
  assert ENV.num_actions == 2 and ENV.observation_shape == (5,)
  assert hash(ENV) == hash(gymnax_env.GymnaxEnv("CartPole-v1"))  # compiled code is shared between equal envs
  pool = gymnax_env.params_pool("CartPole-v1", 3)
  check_env_shapes(ENV, jax.tree.map(lambda x: x[0], pool))  # the full check: test_env_protocol
  assert jax.tree.leaves(pool)[0].shape[0] == 3

  key = jax.random.PRNGKey(3)
  obs, state = ENV.reset(key, PARAMS)
  ref_obs, ref_state = gym_env.reset(key, gym_params)
  np.testing.assert_array_equal(obs[:4], ref_obs)
  assert obs.dtype == jnp.float32 and float(obs[4]) == 0.0
  np.testing.assert_array_equal(ENV.action_mask(state, PARAMS), [True, True])

  # Side by side with gymnax's own step (which auto-resets: compare until the episode ends).
  rng = np.random.default_rng(0)
  ended = False
  step = jax.jit(ENV.step)
  for t in range(200):
    a = int(rng.integers(2))
    k = jax.random.PRNGKey(100 + t)
    obs, state, r, term, trunc, _ = step(k, state, a, PARAMS)
    ref_obs, ref_state, ref_r, ref_term, ref_trunc, _ = gym_env.step(k, ref_state, a, gym_params)
    assert float(r) == float(ref_r) == 1.0
    assert bool(term) == bool(ref_term)
    assert not bool(trunc) and not bool(ref_trunc)
    assert float(obs[4]) == pytest.approx((t + 1) / 500)
    if bool(term):
      # gymnax has already reset; the adapter returns the state the pole fell in.
      ended = True
      assert abs(float(state.inner.theta)) > float(gym_params.theta_threshold_radians) or abs(
        float(state.inner.x)
      ) > float(gym_params.x_threshold)
      break
    np.testing.assert_allclose(obs[:4], ref_obs, rtol=1e-6, atol=1e-7)
  assert ended and 8 <= t < 200  # random actions drop the pole within tens of steps


def test_adapter_jit_and_vmap_agree_with_eager():
  actions = [0, 1, 1, 0]
  key = jax.random.PRNGKey(7)
  eager = _rollout(ENV.step, ENV.reset, key, actions)
  jitted = _rollout(jax.jit(ENV.step), jax.jit(ENV.reset), key, actions)
  for (o1, r1, a1, b1), (o2, r2, a2, b2) in zip(eager, jitted):
    np.testing.assert_allclose(o1, o2, rtol=1e-6, atol=1e-7)
    assert (r1, a1, b1) == (r2, a2, b2)
  pool = gymnax_env.params_pool("CartPole-v1", 4)
  keys = jax.random.split(key, 4)
  obs, states = jax.vmap(ENV.reset)(keys, pool)
  assert obs.shape == (4, 5)
  obs2, _, r, term, trunc, _ = jax.vmap(ENV.step)(keys, states, jnp.array([0, 1, 0, 1]), pool)
  reset, step = jax.jit(ENV.reset), jax.jit(ENV.step)
  for i in range(4):
    one_obs, one_state = reset(keys[i], PARAMS)
    np.testing.assert_allclose(obs[i], one_obs)
    o, *_ = step(keys[i], one_state, jnp.int32([0, 1, 0, 1][i]), PARAMS)
    np.testing.assert_allclose(obs2[i], o, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(r, 1.0)


def test_time_limit_ends_the_task_where_the_observation_shows_it_and_cuts_it_otherwise():
  """Pardo et al.'s two treatments: with the time feature the limit is part of the task (terminated; the value
  targets end there); with gymnax's raw observation it is truncated (the targets bootstrap past it). A fall is
  terminated either way."""
  _, state = ENV.reset(jax.random.PRNGKey(0), PARAMS)
  upright = state.inner.replace(
    x=jnp.float32(0), x_dot=jnp.float32(0), theta=jnp.float32(0), theta_dot=jnp.float32(0), time=jnp.int32(499)
  )
  obs, new, r, term, trunc, _ = ENV.step(jax.random.PRNGKey(1), state.replace(inner=upright), 1, PARAMS)
  assert (bool(term), bool(trunc), float(r)) == (True, False, 1.0)
  assert float(obs[4]) == 1.0 and int(new.inner.time) == 500
  raw = gymnax_env.GymnaxEnv("CartPole-v1", time_feature=False)
  _, _, r, term, trunc, _ = raw.step(jax.random.PRNGKey(1), state.replace(inner=upright), 1, PARAMS)
  assert (bool(term), bool(trunc), float(r)) == (False, True, 1.0)
  # One step earlier nothing ends.
  _, _, _, term, trunc, _ = ENV.step(
    jax.random.PRNGKey(1), state.replace(inner=upright.replace(time=jnp.int32(10))), 1, PARAMS
  )
  assert (bool(term), bool(trunc)) == (False, False)
  # A pole past 12 degrees at the time limit: terminated, not truncated (the fall wins).
  falling = upright.replace(theta=jnp.float32(0.2), theta_dot=jnp.float32(1.0))  # 0.2 + 0.02 * 1 > 0.2094 rad
  _, _, r, term, trunc, _ = ENV.step(jax.random.PRNGKey(1), state.replace(inner=falling), 1, PARAMS)
  assert (bool(term), bool(trunc), float(r)) == (True, False, 1.0)
  _, _, r, term, trunc, _ = raw.step(jax.random.PRNGKey(1), state.replace(inner=falling), 1, PARAMS)
  assert (bool(term), bool(trunc), float(r)) == (True, False, 1.0)
  # Without the time feature the observation is gymnax's own.
  assert raw.observation_shape == (4,)
  assert raw.reset(jax.random.PRNGKey(0), PARAMS)[0].shape == (4,)


def test_self_play_stores_the_value_of_the_observation_a_time_limit_cut_the_episode_at():
  """Self-play resets a slot in place, so the observation an episode was truncated at is not kept: the rollout
  stores the network's value of it (`Trajectory.truncation_value`), for the targets to bootstrap from, and 0 where
  no episode was cut (a fall, a step inside the limit, or the time feature's task end)."""
  limit = 3
  pool = gymnax_env.params_pool("CartPole-v1", 2, max_steps_in_episode=limit)  # two copies of one instance
  for env, cut_expected in ((gymnax_env.GymnaxEnv("CartPole-v1", time_feature=False), True), (ENV, False)):
    config = cartpole.make_config("smoke").replace(num_envs=4, rollout_length=2 * limit, network="mlp")
    trainer = make_train(config, env, pool)
    state = trainer.init()
    rollout = jax.jit(
      lambda p, a, k, env=env, config=config, net=trainer.network: selfplay.rollout(
        p, a, pool, k, env=env, network=net, config=config, imitate=False
      )
    )
    _, traj, stats = rollout(state.params, state.actor, jax.random.PRNGKey(2))
    value, done = np.asarray(traj.truncation_value), np.asarray(traj.done)
    assert int(stats.truncations) == int(np.asarray(traj.truncated).sum())  # the driver's warning reads it
    length = np.cumsum(np.ones_like(done), axis=0)  # steps since the rollout began; every slot starts fresh
    at_limit = done & (length % limit == 0)
    assert at_limit.any()
    if not cut_expected:
      assert (value == 0).all() and not np.asarray(traj.truncated).any()
      continue
    assert (value[~at_limit] == 0).all() and (value[at_limit] != 0).all()
    np.testing.assert_array_equal(np.asarray(traj.truncated), at_limit)
    # The value is the network's at the observation after the last step: the raw observation is CartPole's whole
    # state, so that step is replayed from the stored observation and action.
    t, b = np.argwhere(at_limit)[0]
    x, x_dot, theta, theta_dot = (jnp.float32(v) for v in np.asarray(traj.obs[t, b]))
    inner = env.gymnax_env.reset_env(jax.random.PRNGKey(0), PARAMS)[1].replace(
      x=x, x_dot=x_dot, theta=theta, theta_dot=theta_dot, time=jnp.int32(limit - 1)
    )
    one = PARAMS.replace(max_steps_in_episode=limit)
    after, *_ = env.step(jax.random.PRNGKey(0), gymnax_env.GymnaxState(inner=inner), traj.action[t, b], one)
    want = search.root_output(trainer.network, config, state.params, after[None]).value[0]
    np.testing.assert_allclose(value[t, b], want, rtol=1e-5)


def test_missing_gymnax_names_the_extra(tmp_path, capsys):
  gymnax_env.make_gymnax.cache_clear()
  try:
    with pytest.MonkeyPatch.context() as patch:
      patch.setitem(sys.modules, "gymnax", None)  # import gymnax -> ImportError
      with pytest.raises(ImportError, match=r"pip install -e '\.\[control\]'"):
        _ = gymnax_env.GymnaxEnv().num_actions
      assert train.main(["--env", "cartpole", "--logdir", str(tmp_path / "tb")]) == 2
      assert "pip install -e '.[control]'" in capsys.readouterr().err
  finally:
    gymnax_env.make_gymnax.cache_clear()
  with pytest.raises(ValueError, match="unknown gymnax environment"):
    gymnax_env.make_gymnax("NoSuchEnv-v0")


def test_config_supports_hold_cartpole_returns():
  for preset in cartpole.PRESETS:
    config = cartpole.make_config(preset)
    config.check_supports()  # raises if h(max discounted return) exceeds the support
    assert config.max_episode_steps == 500 and config.max_reward == 1.0
  # discount 0.99 over 500 steps: returns below 100, h(99.3) = 9.06 + 0.1 <= 10.
  assert cartpole.make_config("cpu").max_return == pytest.approx((1 - 0.99**500) / 0.01, rel=1e-6)
  with pytest.raises(ValueError, match="unknown cartpole preset"):
    cartpole.make_config("huge")


SHORT_RUN_ITERATIONS = 250
# Measured (smoke preset, 250 iterations, 6 seeds, jax 0.10.2 on CPU): the untrained greedy agent
# returns 9.4 on average (it pushes one way until the pole falls); after training 99.8-388.4.
MARGIN = 50.0


def test_short_cli_run_beats_the_untrained_agent(tmp_path, capsys):
  """`experiments.train --env cartpole --preset smoke`: about 10 s of training after compilation (which
  dominates: 30-45 CPU seconds with jax 0.10.2)."""
  logdir = tmp_path / "tb"
  code = train.main(
    [
      "--env",
      "cartpole",
      "--preset",
      "smoke",
      "--iterations",
      str(SHORT_RUN_ITERATIONS),
      "--logdir",
      str(logdir),
      "--checkpoint-dir",
      str(tmp_path / "ckpt"),
    ]
  )
  assert code == 0
  report = json.loads((logdir / "evaluation.json").read_text())
  history = report["history"]
  untrained, final = history[0], history[-1]
  assert untrained["iteration"] == 0 and final["iteration"] == SHORT_RUN_ITERATIONS
  assert untrained["episodes"] == final["episodes"] == 100
  print(
    f"greedy mean return: untrained {untrained['return_mean']:.1f}, after {SHORT_RUN_ITERATIONS} "
    f"iterations {final['return_mean']:.1f}"
  )
  assert untrained["return_mean"] < 30.0
  assert final["return_mean"] >= untrained["return_mean"] + MARGIN
  assert final["moves"] == SHORT_RUN_ITERATIONS * 16 * 16  # smoke: 16 environments x 16 steps per iteration
  assert report["summary"]["final_return_mean"] == final["return_mean"]
  # TensorBoard: training scalars and the evaluation curves (against iterations, moves and seconds).
  # The evaluations are a run of their own (`eval`): in the training's directory a resumed run's restart marker
  # (a purge step, an iteration) made TensorBoard drop every evaluation at a larger step, moves and seconds too.
  events = [p for p in os.listdir(logdir) if p.startswith("events.out.tfevents")]
  eval_events = [p for p in os.listdir(logdir / "eval") if p.startswith("events.out.tfevents")]
  assert events and not [p for p in events if p.endswith(".eval")] and eval_events
  blob = (logdir / "eval" / eval_events[0]).read_bytes()
  for tag in (b"eval/return_mean", b"eval/return_vs_moves", b"eval/return_vs_seconds"):
    assert tag in blob
  # The checkpoint records the task and config: resuming it as the cube task, or with another seed, is refused
  # (before anything is built). Continuing it is the library's resume, tested in test_muzero_train.
  capsys.readouterr()
  assert train.main(["--resume", str(tmp_path / "ckpt"), "--eval-only", "--logdir", str(tmp_path / "tb2")]) == 2
  assert "written with --env cartpole, not --env cube" in capsys.readouterr().err
  assert train.main(["--env", "cartpole", "--resume", str(tmp_path / "ckpt"), "--seed", "3"]) == 2
  assert "--seed 3 (checkpoint: 0)" in capsys.readouterr().err
  assert train.main(["--env", "cartpole", "--horizon", "8"]) == 2  # a cube flag is refused, not ignored
  assert "--env cartpole does not take --horizon" in capsys.readouterr().err
  # A resume into the same --logdir keeps the evaluations before it (an --eval-only one re-evaluates the last).
  assert (
    train.main(["--env", "cartpole", "--resume", str(tmp_path / "ckpt"), "--eval-only", "--logdir", str(logdir)]) == 0
  )
  again = json.loads((logdir / "evaluation.json").read_text())["history"]
  assert [h["iteration"] for h in again] == [0, SHORT_RUN_ITERATIONS] and again[0] == untrained
  assert again[-1]["train_s"] >= final["train_s"]  # its clock goes on (it began at 0 again: curves ran backwards)
  # What training would refuse of the config against the environment is a usage error naming the flags.
  capsys.readouterr()
  for flags, message in (
    (["--support-size", "3"], "Use --support-size >= 10 or lower --max-reward (1) or --max-episode-steps (500"),
    (["--network", "resnet"], "--network='resnet' needs observations [C, H, W]; got shape (5,)"),
    (["--iterations", "-1"], "--iterations must be >= 0"),
    (["--min-replay-size", "100000000"], "--min-replay-size=100000000 is more than the replay holds"),
  ):
    assert train.main(["--env", "cartpole", "--preset", "smoke", "--logdir", "None", *flags]) == 2
    assert message in capsys.readouterr().err
