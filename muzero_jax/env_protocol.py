"""The environment protocol ``muzero_jax`` trains on, and its conformance check.

An environment is a stateless object (gymnax 1.0 style, no auto-reset)::

    env.reset(key, params) -> (obs, state)
    env.step(key, state, action, params) -> (obs, state, reward, terminated, truncated, info)
    env.action_mask(state, params) -> bool[num_actions]
    env.num_actions: int; env.observation_shape: tuple[int, ...]

``params`` is one environment instance (a pytree); training draws instances
from a pool whose leaves carry a leading ``[P, ...]`` axis (see
:mod:`muzero_jax.selfplay`). Observations are ``[*observation_shape]`` real numbers
(float32, or integers or booleans, which training casts to float32);
``reward`` is a real scalar, ``terminated`` and ``truncated`` bool scalars. An illegal action is
never rewarded. ``terminated`` ends the task (its value past the end is 0); ``truncated`` cuts an episode the world
would go on with (a time limit), and training bootstraps its value targets from the network's value of the
observation it was cut at (:mod:`muzero_jax.replay`). An environment whose time limit is part of its task (as the
cube's budget is) says ``terminated`` and shows the time left in its observation.
An environment without params takes ``None`` as its pool (one instance).

:func:`check_env` is the reusable conformance test of the protocol (in the
spirit of pgx's ``api_test``); :func:`check_env_shapes` is its cheap first part
(abstract evaluation only), run by :func:`muzero_jax.make_train`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Environment", "check_env", "check_env_shapes"]

_ATTRIBUTES = ("reset", "step", "action_mask", "num_actions", "observation_shape")


class Environment(Protocol):
  """What ``muzero_jax`` needs of an environment (structural: no base class to inherit)."""

  num_actions: int
  observation_shape: tuple[int, ...]

  def reset(self, key: chex.PRNGKey, params: Any) -> tuple[chex.Array, Any]: ...

  def step(self, key: chex.PRNGKey, state: Any, action: chex.Array, params: Any) -> tuple: ...

  def action_mask(self, state: Any, params: Any) -> chex.Array: ...


def _real(dtype) -> bool:
  """Observations as training takes them: any real numbers (cast to float32 for the network), not complex or text."""
  return jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer) or dtype == jnp.bool_


def check_env_shapes(env, params) -> None:
  """Checks the protocol's attributes and every output's shape and dtype on one instance ``params``.

  Abstract evaluation only (``jax.eval_shape`` of ``reset``, ``action_mask`` and one ``step``): nothing is compiled
  or run. An environment already checked with parameters of the same shapes passes at once (when it is hashable).

  Raises:
    TypeError: an attribute of the protocol is missing.
    ValueError: ``reset``, ``action_mask`` or ``step`` returns the wrong shape, dtype or structure.
  """
  for name in _ATTRIBUTES:
    if not hasattr(env, name):
      raise TypeError(f"environment {type(env).__name__} lacks `{name}` (see muzero_jax.env_protocol)")
  leaves, tree = jax.tree.flatten(params)
  try:
    seen = (env, tree, tuple((np.shape(x), jnp.result_type(x)) for x in leaves))
    hash(seen)
  except TypeError:
    seen = None
  if seen is not None and seen in _CHECKED:
    return
  if not isinstance(env.observation_shape, tuple | list) or not all(
    isinstance(d, int | np.integer) and d > 0 for d in env.observation_shape
  ):
    raise ValueError(f"env.observation_shape must be a tuple of positive ints, got {env.observation_shape!r}")
  shape = tuple(env.observation_shape)
  first = jax.eval_shape(env.reset, jax.random.PRNGKey(0), params)
  if not isinstance(first, tuple | list) or len(first) != 2 or not isinstance(first[0], jax.ShapeDtypeStruct):
    raise ValueError(
      f"env.reset must return (obs, state), obs an array of env.observation_shape, got {_outline(first)}"
    )
  obs, state = first
  if tuple(obs.shape) != shape:
    raise ValueError(f"env.reset returned obs of shape {obs.shape}, env.observation_shape is {shape}")
  if not _real(obs.dtype):
    raise ValueError(f"env.reset returned obs of dtype {obs.dtype}: observations are real numbers (float, int or bool)")
  mask = jax.eval_shape(env.action_mask, state, params)
  if tuple(mask.shape) != (env.num_actions,) or mask.dtype != jnp.bool_:
    raise ValueError(f"env.action_mask must return bool[{env.num_actions}], got {mask.dtype}{list(mask.shape)}")
  out = jax.eval_shape(env.step, jax.random.PRNGKey(0), state, jnp.int32(0), params)
  if not isinstance(out, tuple) or len(out) != 6:
    got = f"{type(out).__name__} of {len(out)}" if isinstance(out, tuple | list) else type(out).__name__
    raise ValueError(
      "env.step must return (obs, state, reward, terminated, truncated, info), terminated and truncated apart "
      f"(gymnax >= 1.0), got a {got}"
    )
  obs2, state2, reward, terminated, truncated, _ = out
  if not all(isinstance(x, jax.ShapeDtypeStruct) for x in (obs2, reward, terminated, truncated)):
    raise ValueError(
      "env.step must return (obs, state, reward, terminated, truncated, info), obs and the three scalars arrays, "
      f"got {_outline(out)}"
    )
  if tuple(obs2.shape) != shape:
    raise ValueError(f"env.step returned obs of shape {obs2.shape}, env.observation_shape is {shape}")
  for name, x in (("reward", reward), ("terminated", terminated), ("truncated", truncated)):
    if tuple(x.shape) != ():
      raise ValueError(f"env.step's {name} must be a scalar, got shape {tuple(x.shape)}")
  for name, x in (("terminated", terminated), ("truncated", truncated)):
    if x.dtype != jnp.bool_:
      raise ValueError(f"env.step's {name} must be a bool scalar, got {x.dtype}")
  if not (jnp.issubdtype(reward.dtype, jnp.floating) or jnp.issubdtype(reward.dtype, jnp.integer)):
    raise ValueError(f"env.step's reward must be a real number, got {reward.dtype}")
  differs = leaf_mismatch(state2, state)
  if differs == ():
    raise ValueError("env.step's state has another pytree structure than env.reset's (self-play carries it in a scan)")
  if differs is not None:
    where, got, want = differs
    raise ValueError(
      f"env.step's state{where} is {got}, env.reset's {want}: a step must keep the state's shapes and dtypes "
      "(self-play carries it in a scan)"
    )
  if seen is not None:
    _CHECKED.add(seen)


_CHECKED: set = set()  # (env, params' tree and shapes) that passed `check_env_shapes`


def _outline(out) -> str:
  """What an env function returned, in brief: '(array float32[36], CoinState)' (an RL audit: a reset that returned
  (state, obs) or obs alone failed deep inside with an AttributeError or an unpacking error)."""

  def one(x) -> str:
    if isinstance(x, jax.ShapeDtypeStruct):
      return f"array {x.dtype}{list(x.shape)}"
    return type(x).__name__

  if isinstance(out, tuple | list):
    return f"a {type(out).__name__} of {len(out)}: (" + ", ".join(one(x) for x in out) + ")"
  return one(out)


def leaf_mismatch(tree, reference) -> tuple[str, ...] | None:
  """Where pytree `tree` differs from `reference` in shape or dtype (arrays or `ShapeDtypeStruct`s): None where they
  agree, `()` where their structures differ, else the first leaf's path and both as `dtype[shape]` (tree's first)."""
  got, want = jax.tree_util.tree_flatten_with_path(tree), jax.tree_util.tree_flatten_with_path(reference)
  if got[1] != want[1]:
    return ()
  for (path, x), (_, r) in zip(got[0], want[0]):
    shape, dtype = tuple(np.shape(x)), getattr(x, "dtype", None)
    if shape != tuple(r.shape) or dtype != r.dtype:
      return jax.tree_util.keystr(path), f"{dtype}{list(shape)}", f"{r.dtype}{list(r.shape)}"
  return None


def _require(condition, message: str) -> None:
  """``AssertionError(message)`` unless ``condition``: an explicit raise, which ``python -O`` keeps (bare ``assert``
  statements are stripped there, and ``check_env`` passed a NaN observation and a rewarded illegal action: an
  audit)."""
  if not condition:
    raise AssertionError(message)


def _assert_tree_close(a, b, what: str, atol: float = 1e-5, names: tuple[str, ...] = ()) -> None:
  """Leaf by leaf, named by its place in the output (``names`` for the top-level items) and pytree path."""
  la, _ = jax.tree_util.tree_flatten_with_path(a)
  lb = jax.tree.leaves(b)
  _require(len(la) == len(lb), f"{what}: different pytree structure")
  for (path, x), y in zip(la, lb):
    where = jax.tree_util.keystr(path)
    if names and path and isinstance(path[0], jax.tree_util.SequenceKey) and path[0].idx < len(names):
      where = names[path[0].idx] + jax.tree_util.keystr(path[1:])
    x, y = np.asarray(x), np.asarray(y)
    _require(x.shape == y.shape, f"{what}: {where}: shapes {x.shape} != {y.shape}")
    # The messages only on failure: their numbers cost, and an empty leaf has no max.
    if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
      if not np.array_equal(x, y):
        raise AssertionError(f"{what}: {where} differs: {_head(x)} against {_head(y)}")
    elif not np.allclose(x, y, atol=atol, rtol=1e-5, equal_nan=True):  # a NaN is its own check's
      raise AssertionError(f"{what}: {where} differs by up to {np.abs(x - y).max():g}: {_head(x)} against {_head(y)}")


def _head(x: np.ndarray) -> str:
  """The first few values of an array, for a message."""
  flat = x.reshape(-1)
  return np.array2string(flat[:6]) + (" ..." if flat.size > 6 else "")


def check_env(
  env,
  params,
  *,
  num_episodes: int = 2,
  batch: int = 4,
  seed: int = 0,
  max_episode_steps: int | None = None,
  position: Callable[[Any], Any] | None = None,
) -> dict:
  """Checks an environment against the protocol on one instance ``params``; raises ``AssertionError``.

  Checks: the attributes, shapes and dtypes of every output; finite
  observations and rewards; scalar ``terminated``/``truncated``; at least one
  legal action in every non-terminal state; jit and no-jit agree; vmap over a
  batch of states agrees with stepping one by one; an illegal action is not
  rewarded (and leaves ``position(state)`` unchanged when ``position`` is
  given); random episodes end within ``max_episode_steps``.

  Args:
    env: the environment.
    params: one instance (no pool axis).
    num_episodes: random episodes played.
    batch: states stepped together in the vmap check.
    seed: seed of the random actions and keys.
    max_episode_steps: an episode must end within this many steps (default:
      ``env.horizon`` when the environment has one, else 200).
    position: the part of a state an illegal action must not change (e.g. the
      cube's filters); None skips that check.

  Returns:
    dict with steps taken, episodes, and total reward (for the caller's logs).
  """
  try:
    check_env_shapes(env, params)
  except (TypeError, ValueError) as err:
    raise AssertionError(str(err)) from err
  key = jax.random.PRNGKey(seed)
  reset_j, step_j = jax.jit(env.reset), jax.jit(env.step)
  mask_j = jax.jit(env.action_mask)
  obs, state = reset_j(key, params)
  _assert_tree_close((obs, state), env.reset(key, params), "reset jit vs no-jit", names=("obs", "state"))
  _require(tuple(obs.shape) == tuple(env.observation_shape), f"obs shape {obs.shape} != {env.observation_shape}")
  _require(np.isfinite(np.asarray(obs, np.float32)).all(), "non-finite observation from reset")
  _require(_real(obs.dtype), f"obs dtype {obs.dtype}: observations are real numbers (float, int or bool)")
  mask = mask_j(state, params)
  _require(mask.shape == (env.num_actions,) and mask.dtype == jnp.bool_, f"mask {mask.shape} {mask.dtype}")

  rng = np.random.default_rng(seed)
  max_steps = max_episode_steps if max_episode_steps is not None else getattr(env, "horizon", 200)
  steps, total, episodes = 0, 0.0, 0
  checked_nojit = checked_illegal = False
  while episodes < num_episodes:
    obs, state = reset_j(jax.random.fold_in(key, episodes), params)
    for t in range(max_steps + 1):
      mask = np.asarray(mask_j(state, params))
      _require(mask.any(), f"no legal action at step {t} of a non-terminal state")
      action = jnp.int32(rng.choice(np.nonzero(mask)[0]))  # an int32 array, as self-play passes it
      k = jax.random.fold_in(key, 1000 + steps)
      out = step_j(k, state, action, params)
      if not checked_nojit:
        names = ("obs", "state", "reward", "terminated", "truncated")
        _assert_tree_close(out[:5], env.step(k, state, action, params)[:5], "step jit vs no-jit", names=names)
        checked_nojit = True
      if not checked_illegal and not mask.all():
        bad = jnp.int32(np.nonzero(~mask)[0][0])
        _, s_bad, r_bad, *_ = step_j(k, state, bad, params)
        if position is not None:
          _assert_tree_close(position(s_bad), position(state), "illegal action moved the state")
        _require(float(r_bad) == 0.0, "illegal action was rewarded")
        checked_illegal = True
      obs, state, reward, terminated, truncated, _ = out
      _require(np.isfinite(np.asarray(obs, np.float32)).all(), "non-finite observation from step")
      _require(np.isfinite(float(reward)), "non-finite reward")
      _require(terminated.shape == () and truncated.shape == (), "terminated/truncated must be scalars")
      steps += 1
      total += float(reward)
      if bool(terminated) or bool(truncated):
        break
    else:
      raise AssertionError(f"episode did not end within {max_steps} steps")
    episodes += 1
  _check_vmap(env, params, jax.random.split(key, batch), rng, step_j)
  return {"steps": steps, "episodes": episodes, "total_reward": total}


def _check_vmap(env, params, keys: chex.Array, rng: np.random.Generator, step_j: Callable) -> None:
  """Three steps of ``len(keys)`` states under ``vmap`` agree with stepping each state alone (each step with keys of
  its own, not the reset's: a stochastic environment's steps would otherwise draw what its reset drew)."""
  _, states = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
  vstep = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
  for t in range(3):
    masks = np.asarray(jax.vmap(env.action_mask, in_axes=(0, None))(states, params))
    actions = np.array([rng.choice(np.nonzero(m)[0]) for m in masks], np.int32)
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t + 1)
    out = vstep(step_keys, states, jnp.asarray(actions), params)
    for i in range(len(keys)):
      one = step_j(step_keys[i], jax.tree.map(lambda x, i=i: x[i], states), int(actions[i]), params)
      _assert_tree_close(jax.tree.map(lambda x, i=i: x[i], out[:5]), one[:5], f"vmap vs single (env {i})")
    states = out[1]
