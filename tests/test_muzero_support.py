"""Value transform, two-hot support and the typed config."""

import dataclasses
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muzero_jax import MuZeroConfig, support

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(x=finite, eps=st.sampled_from([0.0, 0.001, 0.01]))
def test_value_transform_round_trip(x, eps):
  y = support.value_transform(jnp.float32(x), eps)
  back = float(support.inverse_value_transform(y, eps))
  assert back == pytest.approx(x, rel=1e-4, abs=1e-3)


def test_value_transform_hand_values():
  # h(3) = sqrt(4) - 1 + 0.001*3 = 1.003 ; h(-8) = -(3 - 1) - 0.008 = -2.008
  np.testing.assert_allclose(
    support.value_transform(jnp.array([0.0, 3.0, -8.0]), 0.001), [0.0, 1.003, -2.008], rtol=1e-6
  )
  np.testing.assert_allclose(support.inverse_value_transform(jnp.array([1.003, -2.008]), 0.001), [3.0, -8.0], rtol=1e-5)


@settings(max_examples=200, deadline=None)
@given(y=st.floats(min_value=-5.0, max_value=5.0, allow_nan=False, width=32))
def test_two_hot_expectation_and_mass(y):
  probs = support.two_hot(jnp.float32(y), 5)
  assert probs.shape == (11,)
  assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
  assert int((probs > 0).sum()) <= 2
  assert float(support.two_hot_expectation(probs, 5)) == pytest.approx(y, abs=1e-5)


def test_two_hot_hand_example_and_clipping():
  np.testing.assert_allclose(support.two_hot(jnp.float32(1.25), 2), [0, 0, 0, 0.75, 0.25], atol=1e-6)
  np.testing.assert_allclose(support.two_hot(jnp.float32(9.0), 2), [0, 0, 0, 0, 1], atol=1e-6)
  np.testing.assert_allclose(support.two_hot(jnp.float32(-2.0), 2), [1, 0, 0, 0, 0], atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(x=st.floats(min_value=-400.0, max_value=400.0, allow_nan=False, width=32))
def test_scalar_support_round_trip(x):
  probs = support.scalar_to_support(jnp.float32(x), 20)
  logits = jnp.log(jnp.maximum(probs, 1e-30))
  assert float(support.logits_to_scalar(logits, 20)) == pytest.approx(x, rel=1e-3, abs=1e-2)


def test_scalar_support_batched_jit_matches_eager():
  x = jnp.array([[0.0, 1.5, -7.0], [100.0, -0.3, 42.0]])
  eager = support.scalar_to_support(x, 12)
  jitted = jax.jit(support.scalar_to_support, static_argnums=1)(x, 12)
  assert eager.shape == (2, 3, 25)
  np.testing.assert_allclose(eager, jitted, atol=1e-6)


def test_support_bound_is_inverse_of_h():
  assert support.support_bound(10, 0.001) == pytest.approx(
    float(support.inverse_value_transform(10.0, 0.001)), rel=1e-4
  )


def test_check_support_raises_on_small_support():
  support.check_support(20, 300.0)  # h(300) ~ 16.6
  with pytest.raises(ValueError, match="too small"):
    support.check_support(10, 300.0)


def test_config_check_supports():
  cfg = MuZeroConfig(support_size=5, max_reward=10.0, max_episode_steps=64)
  with pytest.raises(ValueError, match="episode return"):
    cfg.check_supports()
  cfg = MuZeroConfig(support_size=30, reward_support_size=1, max_reward=10.0, max_episode_steps=64)
  with pytest.raises(ValueError, match="one-step reward"):
    cfg.check_supports()
  MuZeroConfig(support_size=30, reward_support_size=3, max_reward=10.0, max_episode_steps=64).check_supports()


def test_config_rejects_unknown_fields_and_is_frozen():
  with pytest.raises(TypeError):
    MuZeroConfig(num_simulation=20)  # typo
  with pytest.raises(ValueError, match="num_simulation"):
    MuZeroConfig.from_dict({"num_simulation": 20})
  with pytest.raises(ValueError, match="bogus"):
    MuZeroConfig().replace(bogus=1)
  cfg = MuZeroConfig()
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.num_simulations = 3  # type: ignore[misc]
  with pytest.raises(TypeError):
    MuZeroConfig(0)  # keyword-only


def test_config_validation_and_round_trip():
  with pytest.raises(ValueError, match="num_simulations"):
    MuZeroConfig(num_simulations=0)
  with pytest.raises(ValueError, match="search"):
    MuZeroConfig(search="alphazero")
  with pytest.raises(ValueError, match="replay_capacity"):
    MuZeroConfig(replay_capacity=64, num_envs=16)
  cfg = MuZeroConfig(num_simulations=7, search="muzero")
  assert MuZeroConfig.from_dict(cfg.to_dict()) == cfg
  assert hash(cfg) == hash(MuZeroConfig.from_dict(cfg.to_dict()))
  assert cfg.window_length == cfg.unroll_steps + cfg.n_step + 1
  assert cfg.max_return == pytest.approx(10.0 * sum(0.997**t for t in range(32)))
  assert math.isclose(cfg.replace(reanalyse_fraction=0.5).num_reanalysed, 32)


def test_every_config_field_has_a_docstring():
  source = inspect.getsource(MuZeroConfig)
  for field in dataclasses.fields(MuZeroConfig):
    lines = source.split(f"\n  {field.name}:", 1)[1].splitlines()
    assert lines[1].strip().startswith('"""'), f"field {field.name} lacks a docstring"
