"""A gymnax environment behind `muzero_jax`'s environment protocol (thin adapter, no algorithm).

gymnax (`pip install -e '.[control]'`) is optional: it is imported only when an
adapter is built, and a missing install raises an `ImportError` that says how to
get it. `muzero_jax` itself never imports gymnax.

What the adapter changes, and why:

* **No auto-reset.** gymnax's public `step` resets inside; `muzero_jax` resets
  itself (it draws a new pool entry per episode), so the adapter calls the
  environment's pure `step_env` and reports the natural end (the pole fell) as `terminated`.
* **The time limit** (`max_steps_in_episode`), the two treatments of Pardo et al., "Time Limits in Reinforcement
  Learning" (ICML 2018). `time_feature=True` (the default) appends the fraction of the limit used to the
  observation: the limit is then part of the task and its Markov state, and it is reported as `terminated`, so the
  value targets end there, exactly. `time_feature=False` (gymnax's raw observation) reports it as `truncated`, and
  `muzero_jax` bootstraps the targets from the value of the observation the episode was cut at (partial-episode
  bootstrapping). Up to 2026-12-07 both said `truncated` and `muzero_jax` ended the value at either flag, which
  biased the raw observation's values near the limit downwards; the default's training is unchanged.
* **All actions legal**: `action_mask` is all True (gymnax's discrete spaces).

Only environments with a `Discrete` action space and an array observation are
supported. Params pools are gymnax `EnvParams` with a leading axis; see
:func:`params_pool`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

__all__ = ["INSTALL_HINT", "GymnaxEnv", "GymnaxState", "make_gymnax", "params_pool", "default_params"]

INSTALL_HINT = "gymnax is not installed; install the control extra: pip install -e '.[control]'"


def _import_gymnax():
  try:
    import gymnax  # noqa: PLC0415 (optional dependency)
  except ImportError as err:  # ModuleNotFoundError, or gymnax failing to import its own deps
    raise ImportError(f"{INSTALL_HINT} ({err})") from err
  return gymnax


@functools.cache
def make_gymnax(name: str):
  """gymnax's `(env, default_params)` for a registered id such as `CartPole-v1` (cached)."""
  gymnax = _import_gymnax()
  if name not in gymnax.registered_envs:
    raise ValueError(f"unknown gymnax environment {name!r}; registered: {sorted(gymnax.registered_envs)}")
  return gymnax.make(name)


@struct.dataclass
class GymnaxState:
  """The wrapped gymnax state (its `time` field counts steps since reset)."""

  inner: Any  # gymnax EnvState pytree


@dataclasses.dataclass(frozen=True)
class GymnaxEnv:
  """`muzero_jax` protocol over a gymnax environment (hashable, so compiled code is cached).

  `reset(key, params) -> (obs, state)`, `step(key, state, action, params) ->
  (obs, state, reward, terminated, truncated, info)`, `action_mask(state, params)`;
  `params` is one gymnax `EnvParams` (leaves as arrays, see :func:`params_pool`).
  Observations are float32 `[D]` (`[D + 1]` with the time feature).
  """

  name: str = "CartPole-v1"
  time_feature: bool = True

  @property
  def gymnax_env(self):
    return make_gymnax(self.name)[0]

  @property
  def num_actions(self) -> int:
    space = self.gymnax_env.action_space(make_gymnax(self.name)[1])
    if not hasattr(space, "n"):
      raise ValueError(f"{self.name}: only discrete action spaces are supported, got {type(space).__name__}")
    return int(space.n)

  @property
  def observation_shape(self) -> tuple[int, ...]:
    env, params = make_gymnax(self.name)
    obs, _ = jax.eval_shape(env.reset_env, jax.random.PRNGKey(0), params)
    size = math.prod(obs.shape)
    return (size + 1,) if self.time_feature else (size,)

  def _obs(self, obs: chex.Array, inner, params) -> chex.Array:
    obs = obs.reshape(-1).astype(jnp.float32)
    if not self.time_feature:
      return obs
    used = jnp.asarray(inner.time, jnp.float32) / jnp.asarray(params.max_steps_in_episode, jnp.float32)
    return jnp.concatenate([obs, used[None]])

  def reset(self, key: chex.PRNGKey, params):
    obs, inner = self.gymnax_env.reset_env(key, params)
    inner = jax.tree.map(jnp.asarray, inner)  # gymnax starts `time` as a Python int
    return self._obs(obs, inner, params), GymnaxState(inner=inner)

  def step(self, key: chex.PRNGKey, state: GymnaxState, action: chex.Array, params):
    env = self.gymnax_env
    obs, inner, reward, _, info = env.step_env(key, state.inner, action, params)
    fell = jnp.asarray(env.is_terminated(inner, params), bool)
    limit = jnp.asarray(env.is_truncated(inner, params), bool) & ~fell
    terminated = fell | limit if self.time_feature else fell  # the limit is the task's end where the obs shows it
    truncated = jnp.zeros((), bool) if self.time_feature else limit
    return (
      self._obs(obs, inner, params),
      GymnaxState(inner=inner),
      jnp.asarray(reward, jnp.float32),
      terminated,
      truncated,
      info,
    )

  def action_mask(self, state: GymnaxState, params) -> chex.Array:
    del state, params
    return jnp.ones((self.num_actions,), bool)


def default_params(name: str = "CartPole-v1"):
  """gymnax's default `EnvParams` of `name` with every leaf a JAX array (so it can be traced)."""
  return jax.tree.map(jnp.asarray, make_gymnax(name)[1])


def params_pool(name: str = "CartPole-v1", size: int = 1, **changes):
  """`size` copies of the default params (with `changes`, e.g. `max_steps_in_episode=200`), leaves `[size]`."""
  params = make_gymnax(name)[1].replace(**changes) if changes else make_gymnax(name)[1]
  return jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (size, *jnp.shape(x))), params)
