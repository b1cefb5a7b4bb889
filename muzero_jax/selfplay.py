"""Self-play (Anakin style) and greedy evaluation over the environment protocol.

The environment follows :mod:`muzero_jax.env_protocol` (stateless,
``reset``/``step``/``action_mask``, no auto-reset).

Training draws environment instances from a *pool*: a pytree whose leaves have a
leading ``[P, ...]`` axis. Each of the ``B`` slots keeps its pool index and
draws a new uniform one at every reset, so one batch mixes many instances.
The environment does not auto-reset; :func:`rollout` does.

Imitation (a warm start, ``config.imitation_iterations``): an environment may
offer an expert, ``env.expert_logits(obs, state, params) -> float[num_actions]``
(an optional part of the protocol). While ``imitate`` is true, :func:`rollout`
plays the expert's choice (sampled from its softmax at
``config.imitation_temperature``) and stores that softmax over the legal actions
as the policy target; the search still runs, for the root values the value
targets bootstrap from. The agent so begins where a heuristic stops (Silver et
al. 2016 warm-started AlphaGo's policy from expert moves in the same spirit).

The expert inside the search (``config.expert_prior`` = beta > 0): self-play and
:func:`make_evaluate` add beta x the log of the expert's softmax to the root's
prior logits (:func:`bias_from_expert`; :func:`expert_bias` for one batch), so every search starts from the expert's
preference and its value estimates may overrule it. Self-play's policy targets
(mctx's improved policy) carry that bias, so the network learns the expert's
preference too; reanalysis, which holds only observations, searches without it.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import struct

from muzero_jax.config import MuZeroConfig
from muzero_jax.networks import MuZeroNetwork, make_network
from muzero_jax.replay import Trajectory
from muzero_jax.search import SearchOutput, root_output, run_search

__all__ = [
  "ActorState",
  "RolloutStats",
  "EvalResult",
  "bias_from_expert",
  "check_expert",
  "expert_bias",
  "expert_policy",
  "pool_size",
  "select_params",
  "init_actor",
  "rollout",
  "act",
  "make_evaluate",
  "evaluate",
]


@struct.dataclass
class ActorState:
  """The ``B`` environments of self-play."""

  env_state: Any  # pytree, leaves [B, ...]
  obs: chex.Array  # [B, *obs_shape] current observations
  pool_index: chex.Array  # [B] int32, pool entry each slot plays
  episode_return: chex.Array  # [B] float32, undiscounted return so far
  episode_length: chex.Array  # [B] int32, steps so far


@struct.dataclass
class RolloutStats:
  """Totals over one rollout of ``T`` steps x ``B`` environments."""

  episodes: chex.Array  # [] int32 episodes finished
  return_sum: chex.Array  # [] float32 sum of finished episodes' returns
  return_max: chex.Array  # [] float32 best finished return (-inf if none)
  length_sum: chex.Array  # [] int32 sum of finished episodes' lengths
  reward_sum: chex.Array  # [] float32 sum of all step rewards
  root_value_sum: chex.Array  # [] float32 sum of search root values
  reward_abs_max: chex.Array  # [] float32 largest |step reward| (beyond config.max_reward the targets are clipped)
  length_max: chex.Array  # [] int32 longest episode so far, ended or not (past config.max_episode_steps: warned)
  truncations: chex.Array  # [] int32 episodes cut by `truncated` (not terminated): their values are bootstrapped


@struct.dataclass
class EvalResult:
  """Greedy evaluation of ``E`` environment instances, one episode each."""

  returns: chex.Array  # [E] float32 undiscounted episode returns
  lengths: chex.Array  # [E] int32 steps until done (num_steps if never done)
  actions: chex.Array  # [E, T] int32 actions played, -1 after the episode ended
  rewards: chex.Array  # [E, T] float32 rewards, 0 after the episode ended


def pool_size(pool) -> int:
  """Leading size ``P`` shared by every leaf of the pool (``ValueError`` if a leaf has none or they disagree); 1
  for a pool without leaves (``None``, ``{}``: an environment without params, one instance; an RL audit)."""
  if not jax.tree.leaves(pool):
    return 1
  sizes = set()
  for path, leaf in jax.tree_util.tree_leaves_with_path(pool):
    if jnp.ndim(leaf) == 0:
      raise ValueError(
        f"env params pool leaves need a leading pool axis [P, ...]; leaf {jax.tree_util.keystr(path) or '(root)'} "
        "is a scalar: stack instances (e.g. jax.tree.map(lambda *x: jnp.stack(x), params_a, params_b)), or add the "
        "axis to one (jax.tree.map(lambda x: x[None], params))"
      )
    sizes.add(int(leaf.shape[0]))
  if len(sizes) != 1:
    raise ValueError(f"env params pool leaves must share one leading axis; got sizes {sorted(sizes)}")
  return sizes.pop()


def select_params(pool, index: chex.Array):
  """Pool entries at ``index`` ``[B]`` -> params pytree with leaves ``[B, ...]``."""
  return jax.tree.map(lambda x: x[index], pool)


def _tree_where(cond: chex.Array, a, b):
  def pick(x, y):
    return jnp.where(cond.reshape(cond.shape + (1,) * (x.ndim - cond.ndim)), x, y)

  return jax.tree.map(pick, a, b)


def init_actor(env, pool, key: chex.PRNGKey, num_envs: int) -> ActorState:
  """Resets ``num_envs`` slots on uniformly drawn pool entries."""
  key_index, key_reset = jax.random.split(key)
  index = jax.random.randint(key_index, (num_envs,), 0, pool_size(pool))
  obs, state = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs), select_params(pool, index))
  return ActorState(
    env_state=state,
    obs=obs.astype(jnp.float32),
    pool_index=index.astype(jnp.int32),
    episode_return=jnp.zeros((num_envs,), jnp.float32),
    episode_length=jnp.zeros((num_envs,), jnp.int32),
  )


def expert_policy(env, obs, env_state, slot_params, mask, temperature: float) -> chex.Array:
  """``[B, A]`` the expert's softmax over the legal actions at ``temperature`` (``env.expert_logits``)."""
  if not hasattr(env, "expert_logits"):
    raise TypeError(
      f"config.imitation_iterations > 0 needs an expert: environment {type(env).__name__} lacks `expert_logits`"
    )
  return _expert_softmax(jax.vmap(env.expert_logits)(obs, env_state, slot_params), mask, temperature)


def _expert_softmax(logits: chex.Array, mask: chex.Array, temperature: float) -> chex.Array:
  """A row with no legal action counts every action legal, as the search does (`search.run_search`): its softmax
  over -inf everywhere was NaN, and a stored NaN target made every batch that sampled it be skipped."""
  logits = logits.astype(jnp.float32)
  chex.assert_equal_shape([logits, mask])
  legal = mask | ~jnp.any(mask, axis=-1, keepdims=True)
  return jax.nn.softmax(jnp.where(legal, logits / temperature, -jnp.inf), axis=-1)


def bias_from_expert(logits: chex.Array, mask: chex.Array, config: MuZeroConfig) -> chex.Array:
  """``[..., A]`` ``expert_prior`` x the log of the expert's softmax (``imitation_temperature``) over the legal
  actions of ``logits``; 0 on illegal ones (the search masks them at the root) and on rows with none legal."""
  chex.assert_equal_shape([logits, mask])
  legal = mask & jnp.any(mask, axis=-1, keepdims=True)
  scaled = jnp.where(legal, logits.astype(jnp.float32) / config.imitation_temperature, -1e30)
  return jnp.where(legal, config.expert_prior * jax.nn.log_softmax(scaled, axis=-1), 0.0)


def expert_bias(env, obs, env_state, slot_params, mask, config: MuZeroConfig) -> chex.Array | None:
  """``[B, A]`` the search root's bias from the expert (``config.expert_prior``, :func:`bias_from_expert`), or
  None when it is off."""
  if config.expert_prior == 0:  # static: configs without it compile as before
    return None
  check_expert(env, config)
  return bias_from_expert(jax.vmap(env.expert_logits)(obs, env_state, slot_params), mask, config)


def check_expert(env, config: MuZeroConfig) -> None:
  """Raises ``ValueError`` naming the setting when ``config`` uses an expert the environment lacks."""
  if (config.imitation_iterations > 0 or config.expert_prior > 0) and not hasattr(env, "expert_logits"):
    raise ValueError(
      f"MuZeroConfig.imitation_iterations={config.imitation_iterations} and expert_prior={config.expert_prior} "
      f"need an expert, and environment {type(env).__name__} has no `expert_logits(obs, state, params)`"
    )


def _actor_step(params, actor: ActorState, key, pool, *, env, network, config, imitate):
  """One search + environment step of all slots, with auto-reset (the expert's move while ``imitate``)."""
  num_envs = actor.obs.shape[0]
  # The expert's draw has a key of its own: `fold_in(key_search, 1)` is a key mctx derives from `key_search` too
  # (`split(k)[1]`, Gumbel MuZero's root noise, Dirichlet's with PUCT), so the imitated move was the argmax of the
  # search's own noise plus the expert's log-probabilities (an RL audit). `split(key, n)[i]` does not depend on `n`
  # under JAX's default partitionable threefry: the other four keys are unchanged.
  key_search, key_step, key_reset, key_index, key_expert = jax.random.split(key, 5)
  slot_params = select_params(pool, actor.pool_index)
  mask = jax.vmap(env.action_mask)(actor.env_state, slot_params)
  chex.assert_shape(mask, (num_envs, network.num_actions))
  # The expert's logits, computed once for both of their uses (static: configs without an expert compile as before).
  logits = None
  if config.imitation_iterations > 0 or config.expert_prior > 0:
    check_expert(env, config)
    logits = jax.vmap(env.expert_logits)(actor.obs, actor.env_state, slot_params)
  bias = bias_from_expert(logits, mask, config) if config.expert_prior > 0 else None
  out = run_search(params, key_search, actor.obs, mask, network=network, config=config, root_bias=bias)
  action, policy = out.action, out.action_weights
  if config.imitation_iterations > 0:
    expert = _expert_softmax(logits, mask, config.imitation_temperature)
    expert_action = jax.random.categorical(key_expert, jnp.log(expert)).astype(action.dtype)
    action = jnp.where(imitate, expert_action, action)
    policy = jnp.where(imitate, expert, policy)
  obs, state, reward, terminated, truncated, _ = jax.vmap(env.step)(
    jax.random.split(key_step, num_envs), actor.env_state, action, slot_params
  )
  reward = reward.astype(jnp.float32)
  done = jnp.logical_or(terminated, truncated)
  chex.assert_shape([reward, done], (num_envs,))
  # A time limit cuts the episode, the world goes on: the targets bootstrap from the value of the observation it was
  # cut at (`replay.n_step_return`), which the reset below overwrites. Only steps where some slot truncated pay for
  # the extra initial inference.
  cut = jnp.logical_and(truncated, jnp.logical_not(terminated))
  truncation_value = jax.lax.cond(
    jnp.any(cut),
    lambda o: jnp.where(cut, root_output(network, config, params, o.astype(jnp.float32)).value, 0.0),
    lambda _: jnp.zeros((num_envs,), jnp.float32),
    obs,
  )
  new_index = jax.random.randint(key_index, (num_envs,), 0, pool_size(pool)).astype(jnp.int32)

  def reset_all(_):
    reset_obs, reset_state = jax.vmap(env.reset)(jax.random.split(key_reset, num_envs), select_params(pool, new_index))
    # lax.cond needs identical types in both branches (weak types may differ).
    return reset_obs.astype(obs.dtype), jax.tree.map(lambda r, x: r.astype(x.dtype), reset_state, state)

  # Resets cost as much as steps for data-heavy envs; skip them when no episode ended
  # (with a fixed horizon all slots finish together, so most steps skip).
  reset_obs, reset_state = jax.lax.cond(jnp.any(done), reset_all, lambda _: (obs, state), None)
  ep_return = actor.episode_return + reward
  ep_length = actor.episode_length + 1
  next_actor = ActorState(
    env_state=_tree_where(done, reset_state, state),
    obs=jnp.where(done.reshape(-1, *([1] * (obs.ndim - 1))), reset_obs, obs).astype(jnp.float32),
    pool_index=jnp.where(done, new_index, actor.pool_index),
    episode_return=jnp.where(done, 0.0, ep_return),
    episode_length=jnp.where(done, 0, ep_length),
  )
  step = Trajectory(
    obs=actor.obs,
    action=action,
    reward=reward,
    done=done,
    policy=policy,
    root_value=out.root_value,
    mask=mask,
    truncation_value=truncation_value,
    truncated=cut,
  )
  stats = RolloutStats(
    episodes=jnp.sum(done).astype(jnp.int32),
    return_sum=jnp.sum(jnp.where(done, ep_return, 0.0)),
    return_max=jnp.max(jnp.where(done, ep_return, -jnp.inf)),
    length_sum=jnp.sum(jnp.where(done, ep_length, 0)).astype(jnp.int32),
    reward_sum=jnp.sum(reward),
    root_value_sum=jnp.sum(out.root_value),
    reward_abs_max=jnp.max(jnp.abs(reward)),
    length_max=jnp.max(ep_length).astype(jnp.int32),
    truncations=jnp.sum(cut).astype(jnp.int32),
  )
  return next_actor, (step, stats)


def rollout(
  params,
  actor: ActorState,
  pool,
  key: chex.PRNGKey,
  *,
  env,
  network: MuZeroNetwork,
  config: MuZeroConfig,
  imitate: chex.Array | bool = False,
) -> tuple[ActorState, Trajectory, RolloutStats]:
  """``config.rollout_length`` self-play steps of all slots (``lax.scan`` over time).

  ``imitate`` (a traced bool, so one compiled rollout serves both phases): play
  the environment's expert instead of the search (see the module docstring);
  ignored unless ``config.imitation_iterations > 0``.
  Returns the new actor state, the ``[T, B, ...]`` trajectory and summed stats.
  """
  step_fn = functools.partial(
    _actor_step, params, pool=pool, env=env, network=network, config=config, imitate=jnp.asarray(imitate)
  )
  keys = jax.random.split(key, config.rollout_length)
  actor, (traj, stats) = jax.lax.scan(step_fn, actor, keys)
  total = RolloutStats(
    episodes=jnp.sum(stats.episodes),
    return_sum=jnp.sum(stats.return_sum),
    return_max=jnp.max(stats.return_max),
    length_sum=jnp.sum(stats.length_sum),
    reward_sum=jnp.sum(stats.reward_sum),
    root_value_sum=jnp.sum(stats.root_value_sum),
    reward_abs_max=jnp.max(stats.reward_abs_max),
    length_max=jnp.max(stats.length_max),
    truncations=jnp.sum(stats.truncations),
  )
  return actor, traj, total


@functools.partial(jax.jit, static_argnames=("config", "greedy", "backup"))
def act(
  params,
  obs: chex.Array,
  mask: chex.Array,
  key: chex.PRNGKey,
  config: MuZeroConfig,
  *,
  greedy: bool = True,
  backup: str = "mean",
  root_bias: chex.Array | None = None,
) -> SearchOutput:
  """Searches from a batch of observations ``[B, *obs_shape]`` with masks ``[B, A]``.

  ``greedy=True`` (evaluation): no root noise, temperature 0. ``backup``: how the
  output's ``action_values`` read the tree (:func:`muzero_jax.search.run_search`).
  ``root_bias``: ``[B, A]`` added to the root's prior logits (:func:`expert_bias`).
  The network is rebuilt from ``config`` and the shapes, so ``params`` must match them.
  """
  network = make_network(config, mask.shape[-1], obs.shape[1:])
  return run_search(
    params, key, obs, mask, network=network, config=config, greedy=greedy, backup=backup, root_bias=root_bias
  )


def make_evaluate(config: MuZeroConfig, env, *, num_steps: int | None = None, greedy: bool = True):
  """Jitted ``evaluate(params, env_params_batch, key) -> EvalResult``.

  Plays one episode (no reset) on each of the ``E`` instances in
  ``env_params_batch`` (leaves ``[E, ...]``) for ``num_steps`` steps
  (default ``config.max_episode_steps``); steps after ``done`` are ignored.
  """
  num_steps = config.max_episode_steps if num_steps is None else num_steps
  network = make_network(config, env.num_actions, env.observation_shape)

  def evaluate_fn(params, env_params_batch, key):
    num_env = pool_size(env_params_batch)
    key_reset, key_loop = jax.random.split(key)
    obs, state = jax.vmap(env.reset)(jax.random.split(key_reset, num_env), env_params_batch)

    def body(carry, key_t):
      obs, state, alive = carry
      key_search, key_step = jax.random.split(key_t)
      mask = jax.vmap(env.action_mask)(state, env_params_batch)
      bias = expert_bias(env, obs, state, env_params_batch, mask, config)
      out = run_search(
        params, key_search, obs.astype(jnp.float32), mask, network=network, config=config, greedy=greedy, root_bias=bias
      )
      obs2, state2, reward, term, trunc, _ = jax.vmap(env.step)(
        jax.random.split(key_step, num_env), state, out.action, env_params_batch
      )
      record = (jnp.where(alive, out.action, -1), jnp.where(alive, reward.astype(jnp.float32), 0.0), alive)
      alive = alive & ~(term | trunc)
      return (obs2, state2, alive), record

    init = (obs, state, jnp.ones((num_env,), bool))
    _, (actions, rewards, alive) = jax.lax.scan(body, init, jax.random.split(key_loop, num_steps))
    return EvalResult(
      returns=rewards.sum(0), lengths=alive.sum(0).astype(jnp.int32), actions=actions.T, rewards=rewards.T
    )

  return jax.jit(evaluate_fn)


def evaluate(
  params,
  config: MuZeroConfig,
  env,
  env_params_batch,
  key: chex.PRNGKey,
  *,
  num_steps: int | None = None,
  greedy: bool = True,
) -> EvalResult:
  """One greedy episode per instance of ``env_params_batch``; see :func:`make_evaluate`.

  The jitted function is cached per ``(config, env, num_steps, greedy)`` when
  ``env`` is hashable; otherwise it is rebuilt (and recompiled) on every call.
  """
  try:
    fn = _cached_evaluate(config, env, num_steps, greedy)
  except TypeError:  # unhashable environment object
    fn = make_evaluate(config, env, num_steps=num_steps, greedy=greedy)
  return fn(params, env_params_batch, key)


@functools.lru_cache(maxsize=16)
def _cached_evaluate(config, env, num_steps, greedy):
  return make_evaluate(config, env, num_steps=num_steps, greedy=greedy)
