"""`muzero_jax.check_env` over every environment the project ships: the cube, the gymnax adapter, the test toys."""

import importlib.util
import inspect
import types

import jax
import numpy as np
import pytest

import cube_env
import muzero_jax
from experiments.control import gymnax_env  # imports gymnax only when an adapter is built
from muzero_jax import env_protocol, selfplay
from tests.checkpoint_worker import CONFIG
from tests.toy_envs import CoinGrid, make_coin_pool


def _cube(small_cube):
  env, params = cube_env.make_env(small_cube, max_depth=3, horizon=12, z_screen=4.0)  # as in test_env
  return env, params, lambda s: s.filters  # an illegal group-by leaves the cohort where it is


def _cartpole(_):
  return gymnax_env.GymnaxEnv("CartPole-v1"), gymnax_env.default_params("CartPole-v1"), None


def _coin_grid(flat: bool):
  def make(_):
    env = CoinGrid(flat=flat)
    return env, jax.tree.map(lambda x: x[0], make_coin_pool(env, 2, seed=0)), None

  return make


CASES = {
  "cube": _cube,
  "gymnax-cartpole": _cartpole,
  "coin-grid": _coin_grid(flat=False),
  "coin-grid-flat": _coin_grid(flat=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_shipped_environment_follows_the_protocol(name, small_cube):
  if name.startswith("gymnax") and importlib.util.find_spec("gymnax") is None:
    pytest.skip("the control extra is not installed: pip install -e '.[control]'")
  env, params, position = CASES[name](small_cube)
  summary = muzero_jax.check_env(env, params, num_episodes=2, batch=3, position=position)
  assert summary["episodes"] == 2
  horizon = getattr(env, "horizon", None)
  if horizon is not None:  # the cube and the coin grid end exactly at their horizon
    assert summary["steps"] == 2 * horizon
  assert summary["steps"] >= 2 and np.isfinite(summary["total_reward"])
  if name.startswith("coin-grid"):  # every pick collects a coin in [0, max_coin]
    assert 0.0 <= summary["total_reward"] <= 2 * env.horizon * env.max_coin


class _WrongMask(CoinGrid):
  def action_mask(self, state, params):
    return super().action_mask(state, params).astype(np.int32)


class _WrongShape(CoinGrid):
  @property
  def observation_shape(self):
    return (3, self.width, self.height)


class _RewardsIllegal(CoinGrid):
  def step(self, key, state, action, params):
    obs, new, reward, terminated, truncated, info = super().step(key, state, action, params)
    return obs, new, reward + 1.0, terminated, truncated, info


class _NeverEnds(CoinGrid):
  def step(self, key, state, action, params):
    obs, new, reward, _, truncated, info = super().step(key, state, action, params)
    return obs, new.replace(picked=state.picked), reward, jax.numpy.zeros((), bool), truncated, info


class _Impure(CoinGrid):
  """Counts its calls in Python: traced once under jit, so jit and no-jit rewards differ."""

  calls = 0

  def step(self, key, state, action, params):
    obs, new, reward, terminated, truncated, info = super().step(key, state, action, params)
    type(self).calls += 1
    return obs, new, reward + type(self).calls, terminated, truncated, info


class _StepShape(CoinGrid):
  """A step whose observation lost a value (reset's is right)."""

  def step(self, key, state, action, params):
    obs, *rest = super().step(key, state, action, params)
    return (obs.reshape(-1)[1:], *rest)


class _FloatDone(CoinGrid):
  def step(self, key, state, action, params):
    obs, new, reward, terminated, truncated, info = super().step(key, state, action, params)
    return obs, new, reward, terminated.astype(float), truncated, info


class _VectorReward(CoinGrid):
  def step(self, key, state, action, params):
    obs, new, reward, terminated, truncated, info = super().step(key, state, action, params)
    return obs, new, reward[None], terminated, truncated, info


class _OldGym(CoinGrid):
  """gymnax < 1.0: one `done`."""

  def step(self, key, state, action, params):
    obs, new, reward, terminated, truncated, info = super().step(key, state, action, params)
    return obs, new, reward, terminated | truncated, info


class _NanObs(CoinGrid):
  def step(self, key, state, action, params):
    obs, *rest = super().step(key, state, action, params)
    return (obs * jax.numpy.nan, *rest)


@pytest.mark.parametrize(
  ("env", "message"),
  [
    (_StepShape(), r"env.step returned obs of shape \(35,\), env.observation_shape is \(3, 3, 4\)"),
    (_FloatDone(), "env.step's terminated must be a bool scalar, got float"),
    (_VectorReward(), r"env.step's reward must be a scalar, got shape \(1,\)"),
    (_OldGym(), r"env.step must return \(obs, state, reward, terminated, truncated, info\).* got a tuple of 5"),
    (_NanObs(), "non-finite observation from step"),
    (_WrongMask(), "action_mask must return bool"),
    (_Impure(), r"step jit vs no-jit: reward differs by up to 1: \["),
    (_RewardsIllegal(), "illegal action was rewarded"),
    (_NeverEnds(), "did not end within 3 steps"),
  ],
)
def test_a_broken_environment_is_named(env, message):
  params = jax.tree.map(lambda x: x[0], make_coin_pool(env, 1, seed=0))
  with pytest.raises(AssertionError, match=message):
    muzero_jax.check_env(env, params, num_episodes=1, batch=2)


def test_a_broken_environment_is_named_under_python_O():
  """An RL audit: `check_env`'s checks were bare `assert` statements, which `python -O` strips, so a NaN observation
  and a rewarded illegal action passed there. The module compiled as -O compiles it (optimize=2) still refuses."""
  source = inspect.getsource(env_protocol)
  module = types.ModuleType("env_protocol_O")
  exec(compile(source, env_protocol.__file__, "exec", optimize=2), module.__dict__)
  for env, message in ((_NanObs(), "non-finite observation from step"), (_RewardsIllegal(), "illegal action was")):
    params = jax.tree.map(lambda x: x[0], make_coin_pool(env, 1, seed=0))
    with pytest.raises(AssertionError, match=message):
      module.check_env(env, params, num_episodes=1, batch=2)


def test_shapes_are_checked_without_running():
  env = CoinGrid()
  params = jax.tree.map(lambda x: x[0], make_coin_pool(env, 1, seed=0))
  muzero_jax.check_env_shapes(env, params)
  with pytest.raises(TypeError, match="lacks `reset`"):
    muzero_jax.check_env_shapes(object(), params)
  with pytest.raises(ValueError, match="observation_shape"):
    muzero_jax.check_env_shapes(_WrongShape(), params)
  # A library audit: an int shape failed as "'int' object is not iterable"; complex observations trained on with
  # their imaginary part dropped (check_env refused them, make_train's check did not).
  with pytest.raises(ValueError, match=r"observation_shape must be a tuple of positive ints, got 36"):
    muzero_jax.check_env_shapes(_IntShape(), params)
  with pytest.raises(ValueError, match="obs of dtype complex64: observations are real numbers"):
    muzero_jax.check_env_shapes(_ComplexObs(), params)


class _ResetSwapped(CoinGrid):
  def reset(self, key, params):
    obs, state = super().reset(key, params)
    return state, obs


class _ResetObsOnly(CoinGrid):
  def reset(self, key, params):
    return super().reset(key, params)[0]


class _StepSwapped(CoinGrid):
  def step(self, key, state, action, params):
    obs, new, *rest = super().step(key, state, action, params)
    return (new, obs, *rest)


def test_outputs_in_the_wrong_order_or_number_are_named():
  """An RL audit: a reset returning (state, obs) or obs alone failed as an AttributeError or an unpacking error."""
  params = jax.tree.map(lambda x: x[0], make_coin_pool(CoinGrid(), 1, seed=0))
  for env, got in (
    (_ResetSwapped(), "a tuple of 2: (CoinState, array float32[3, 3, 4])"),
    (_ResetObsOnly(), "array float32[3, 3, 4]"),
  ):
    with pytest.raises(ValueError) as err:
      muzero_jax.check_env_shapes(env, params)
    assert str(err.value) == f"env.reset must return (obs, state), obs an array of env.observation_shape, got {got}"
  with pytest.raises(ValueError) as err:
    muzero_jax.check_env_shapes(_StepSwapped(), params)
  assert str(err.value) == (
    "env.step must return (obs, state, reward, terminated, truncated, info), obs and the three scalars arrays, got "
    "a tuple of 6: (CoinState, array float32[3, 3, 4], array float32[], array bool[], array bool[], dict)"
  )


class _OneLayout(CoinGrid):
  """CoinGrid with its one layout built in: no params (None, {} or () as the pool)."""

  def _params(self):
    return jax.tree.map(lambda x: x[0], make_coin_pool(CoinGrid(flat=True), 1, seed=0))

  def reset(self, key, params):  # noqa: ARG002 (the protocol's argument, unused here)
    return super().reset(key, self._params())

  def step(self, key, state, action, params):  # noqa: ARG002
    return super().step(key, state, action, self._params())

  def action_mask(self, state, params):  # noqa: ARG002
    return super().action_mask(state, self._params())


def test_an_environment_without_params_trains_on_a_pool_of_one():
  """An RL audit: a pool without leaves (None) failed as 'pool leaves must share one leading axis; got sizes []'."""
  env = _OneLayout(flat=True)
  assert [selfplay.pool_size(p) for p in (None, {}, ())] == [1, 1, 1]
  trainer = muzero_jax.make_train(CONFIG.replace(updates_per_iteration=1), env, None)
  state, _ = trainer.iteration(trainer.init())
  assert int(state.moves) == CONFIG.num_envs * CONFIG.rollout_length


class _IntShape(CoinGrid):
  observation_shape = 36


class _ComplexObs(CoinGrid):
  def reset(self, key, params):
    obs, state = super().reset(key, params)
    return obs.astype(jax.numpy.complex64), state
