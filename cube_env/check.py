"""A reusable conformance check for environments (in the spirit of pgx's `api_test`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _assert_tree_close(a, b, what: str, atol: float = 1e-5):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb), f"{what}: different pytree structure"
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape, f"{what}: shapes {x.shape} != {y.shape}"
    if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
      assert np.array_equal(x, y), f"{what}: integer/bool leaves differ"
    else:
      assert np.allclose(x, y, atol=atol, rtol=1e-5), f"{what}: float leaves differ (max {np.abs(x - y).max()})"


def check_env(env, params, *, num_episodes: int = 2, batch: int = 4, seed: int = 0) -> dict:
  """Checks an environment against the protocol of DESIGN.md; raises AssertionError.

  Checks: shapes and dtypes of every output; finite observations and rewards;
  at least one legal action in every non-terminal state; jit and no-jit
  agree; vmap over a batch of states agrees with stepping one by one;
  illegal actions do not change the state's position; episodes end within the
  horizon when the env has one.

  Returns:
    dict with steps taken, episodes, and total reward (for the caller's logs).
  """
  key = jax.random.PRNGKey(seed)
  reset_j, step_j = jax.jit(env.reset), jax.jit(env.step)
  mask_j = jax.jit(env.action_mask)
  obs, state = reset_j(key, params)
  obs_nj, state_nj = env.reset(key, params)
  _assert_tree_close((obs, state), (obs_nj, state_nj), "reset jit vs no-jit")
  assert tuple(obs.shape) == tuple(env.observation_shape), f"obs shape {obs.shape} != {env.observation_shape}"
  assert obs.dtype == jnp.float32, f"obs dtype {obs.dtype}"
  mask = mask_j(state, params)
  assert mask.shape == (env.num_actions,) and mask.dtype == jnp.bool_, f"mask {mask.shape} {mask.dtype}"

  rng = np.random.default_rng(seed)
  steps, total, episodes = 0, 0.0, 0
  max_steps = getattr(env, "horizon", 200)
  checked_nojit = checked_illegal = False
  while episodes < num_episodes:
    obs, state = reset_j(jax.random.fold_in(key, episodes), params)
    for t in range(max_steps + 1):
      mask = np.asarray(mask_j(state, params))
      assert mask.any(), f"no legal action at step {t} of a non-terminal state"
      action = int(rng.choice(np.nonzero(mask)[0]))
      k = jax.random.fold_in(key, 1000 + steps)
      out = step_j(k, state, action, params)
      if not checked_nojit:
        _assert_tree_close(out[:5], env.step(k, state, action, params)[:5], "step jit vs no-jit")
        checked_nojit = True
      if not checked_illegal and not mask.all():
        bad = int(np.nonzero(~mask)[0][0])
        _, s_bad, r_bad, *_ = step_j(k, state, bad, params)
        if hasattr(state, "filters"):
          assert np.array_equal(np.asarray(s_bad.filters), np.asarray(state.filters)), "illegal action moved"
        assert float(r_bad) == 0.0, "illegal action was rewarded"
        checked_illegal = True
      obs, state, reward, terminated, truncated, _ = out
      assert np.isfinite(np.asarray(obs)).all(), "non-finite observation"
      assert np.isfinite(float(reward)), "non-finite reward"
      assert terminated.shape == () and truncated.shape == (), "terminated/truncated must be scalars"
      steps += 1
      total += float(reward)
      if bool(terminated) or bool(truncated):
        break
    else:
      raise AssertionError(f"episode did not end within the horizon {max_steps}")
    episodes += 1

  # vmap over a batch of states agrees with stepping one by one.
  keys = jax.random.split(key, batch)
  obs_b, states_b = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
  vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
  for _ in range(3):
    masks = np.asarray(jax.vmap(env.action_mask, in_axes=(0, None))(states_b, params))
    actions = np.array([rng.choice(np.nonzero(m)[0]) for m in masks], np.int32)
    out_b = vstep(keys, states_b, jnp.asarray(actions), params)
    for i in range(batch):
      one = step_j(keys[i], jax.tree.map(lambda x: x[i], states_b), int(actions[i]), params)
      _assert_tree_close(jax.tree.map(lambda x: x[i], out_b[:5]), one[:5], f"vmap vs single (env {i})")
    states_b = out_b[1]
  return {"steps": steps, "episodes": episodes, "total_reward": total}
