"""``make_train``: the pure, jitted functions of training (the loop that calls them is :mod:`muzero_jax.driver`).

Shape of training (purejaxrl / Anakin, Hessel et al. 2021): one
``iteration(state) -> (state, metrics)`` runs ``config.rollout_length`` self-play
steps of ``config.num_envs`` environments (``lax.scan``), writes them to the
device-resident replay, then does ``config.updates_per_iteration`` learner
updates, all on one device: in one jitted program (``MuZeroConfig.learner_loop``
``scan``, the updates in a ``lax.scan``), or as jitted pieces the host calls in
turn (``host``; ``overlap`` runs the updates beside self-play in a second host
thread). The whole training state is one pytree, :class:`TrainState`, so it can
be checkpointed and resumed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from muzero_jax import learner as learner_lib
from muzero_jax import replay as replay_lib
from muzero_jax import selfplay
from muzero_jax.config import MuZeroConfig
from muzero_jax.env_protocol import check_env_shapes
from muzero_jax.networks import MuZeroNetwork, make_network

__all__ = ["TrainState", "Trainer", "learn_from_rollout", "learn_updates", "make_train", "one_update"]


@struct.dataclass
class TrainState:
  """Everything training needs to continue exactly (the env params pool aside)."""

  params: Any  # network variables
  opt_state: Any  # optax state
  replay: replay_lib.Replay
  actor: selfplay.ActorState
  key: chex.Array  # [2] uint32 raw PRNG key
  iteration: chex.Array  # [] int32 iterations done
  updates: chex.Array  # [] int32 learner updates applied (skipped ones excluded)
  moves: chex.Array  # [] int32 environment steps taken in self-play (all slots)
  episodes: chex.Array  # [] int32 self-play episodes finished
  skipped_updates: chex.Array  # [] int32 updates skipped for non-finite loss or gradients


def _check_initial_masks(env, actor, pool) -> None:
  """Raises unless every self-play slot's first state has a legal action: a mask with none trained on without a word
  (the search reads such a row as all legal, meant for terminal states; a library audit). Run once, unjitted."""
  params = jax.tree.map(lambda x: x[actor.pool_index], pool)
  legal = np.asarray(jax.vmap(env.action_mask)(actor.env_state, params)).any(axis=-1)
  if not legal.all():
    raise ValueError(
      f"env.action_mask gave no legal action in the first state of self-play slot(s) {np.flatnonzero(~legal)[:5]} "
      f"(pool entries {np.asarray(actor.pool_index)[~legal][:5]}): a state that is not terminal needs one"
    )


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The pure functions of one training setup (built by :func:`make_train`).

  ``iteration(state)`` is ``iteration_fn(state, pool)`` with the pool bound; the
  pool is an argument of the jitted functions, not a compile-time constant.
  ``iteration_fn`` is one jitted program (``learner_loop`` ``scan``) or host
  calls of jitted pieces (``host``, ``overlap``), which block until self-play
  and the replay's warmth are known.
  """

  config: MuZeroConfig
  network: MuZeroNetwork
  optimizer: optax.GradientTransformation
  init: Callable[..., TrainState]  # init(key=None) -> TrainState (key default: PRNGKey(config.seed))
  iteration: Callable[[TrainState], tuple[TrainState, dict]]
  # (state, pool): one jitted program, or host calls of jitted pieces (`learner_loop`)
  iteration_fn: Callable[[TrainState, Any], tuple[TrainState, dict]]
  evaluate: Callable  # evaluate(params, env_params_batch, key) -> EvalResult (jitted, greedy)
  pool: Any


@struct.dataclass
class _LearnOut:
  """Per-update results of one iteration's learner scan (``U`` updates)."""

  terms: learner_lib.LossTerms  # fields [U]
  grad_norm: chex.Array  # [U]
  finite: chex.Array  # [U] bool, update applied (loss and gradients finite)
  ran: chex.Array  # [U] bool, replay was warm enough to update


def learn_updates(params, opt_state, replay, key, can_learn, *, network, optimizer, config: MuZeroConfig):
  """``config.updates_per_iteration`` learner updates (``lax.scan``), skipped while the replay is cold.

  The scan carries only what an update changes (parameters, optimiser state and the replay's
  priorities); the replay's positions are read from outside the loop, so they are not carried
  (and copied) through the scan and its cond. Training (:func:`learn_from_rollout`) and
  ``muzero_jax.bench`` run it. Returns ``((params, opt_state, replay), out)``, ``out`` the
  per-update losses, gradient norms and flags ``[U]``.
  """

  def scan_step(carry, key_u):
    params, opt_state, priority = carry

    def do(_):
      p, o, new_priority, out = one_update(
        params, opt_state, replay.replace(priority=priority), key_u, network=network, optimizer=optimizer, config=config
      )
      return (p, o, new_priority), out

    def skip(_):
      return (params, opt_state, priority), _skipped_update()

    return jax.lax.cond(can_learn, do, skip, None)

  keys = jax.random.split(key, config.updates_per_iteration)
  (params, opt_state, priority), out = jax.lax.scan(scan_step, (params, opt_state, replay.priority), keys)
  return (params, opt_state, replay.replace(priority=priority)), out


def _skipped_update() -> _LearnOut:
  """What an update skipped while the replay is cold reports: zero losses, ``ran`` false."""
  zero = jnp.zeros((), jnp.float32)
  terms = learner_lib.LossTerms(total=zero, policy=zero, value=zero, reward=zero, legality=zero, value_error=zero)
  return _LearnOut(terms, zero, jnp.array(True), jnp.array(False))


def one_update(params, opt_state, replay: replay_lib.Replay, key_u, *, network, optimizer, config: MuZeroConfig):
  """One learner update as :func:`learn_updates` runs it, compiled alone (``learner_loop`` ``host``/``overlap``).

  Returns ``(params, opt_state, priority, out)``, ``out`` a ``_LearnOut`` of scalars.
  """
  p, o, r, terms, gnorm, finite = learner_lib.learn_step(
    params, opt_state, replay, key_u, network=network, optimizer=optimizer, config=config
  )
  _check_only_priorities_change(replay, r)
  return p, o, r.priority, _LearnOut(terms, gnorm, finite, jnp.array(True))


def _check_only_priorities_change(before: replay_lib.Replay, after: replay_lib.Replay) -> None:
  """Trace-time guard of :func:`learn_updates`'s carry: an update may change the replay's priorities only."""
  changed = [
    f.name
    for f in dataclasses.fields(after)
    if f.name != "priority" and getattr(after, f.name) is not getattr(before, f.name)
  ]
  if changed:
    raise NotImplementedError(
      f"a learner update changed the replay's {changed}; learn_updates carries only its priorities"
    )


def _metrics(
  state: TrainState, new_state: TrainState, stats: selfplay.RolloutStats, out: _LearnOut, config: MuZeroConfig
) -> dict[str, chex.Array]:
  """Scalar metrics of one iteration (means over applied updates and finished episodes; the learner's are 0 while
  the replay is cold, and NaN when updates ran and every one was skipped for a non-finite loss or gradient)."""
  applied = out.ran & out.finite
  all_skipped = (jnp.sum(out.ran) > 0) & (jnp.sum(applied) == 0)

  def mean(x):  # over the applied updates
    return jnp.where(all_skipped, jnp.nan, jnp.sum(jnp.where(applied, x, 0.0)) / jnp.maximum(jnp.sum(applied), 1))

  def per_episode(x):  # NaN when no episode finished
    return jnp.where(stats.episodes > 0, x / jnp.maximum(stats.episodes, 1), jnp.nan)

  moves = config.rollout_length * config.num_envs
  valid = replay_lib.valid_positions(new_state.replay, config)
  t = out.terms
  return {
    "loss/total": mean(t.total),
    "loss/policy": mean(t.policy),
    "loss/value": mean(t.value),
    "loss/reward": mean(t.reward),
    "loss/legality": mean(t.legality),
    "learner/value_error": mean(t.value_error),
    "learner/grad_norm": mean(out.grad_norm),
    "learner/updates": new_state.updates - state.updates,
    "learner/skipped_updates": new_state.skipped_updates - state.skipped_updates,
    "learner/learning_rate": learner_lib.learning_rate_schedule(config)(state.updates),
    "selfplay/episodes": stats.episodes,
    "selfplay/return_mean": per_episode(stats.return_sum),
    "selfplay/return_max": jnp.where(stats.episodes > 0, stats.return_max, jnp.nan),
    "selfplay/episode_length": per_episode(stats.length_sum),
    "selfplay/reward_per_step": stats.reward_sum / moves,
    "selfplay/reward_abs_max": stats.reward_abs_max,
    "selfplay/episode_length_max": stats.length_max,
    "selfplay/truncations": stats.truncations,
    "selfplay/root_value": stats.root_value_sum / moves,
    "replay/positions": jnp.sum(valid).astype(jnp.int32),
    "replay/priority_mean": jnp.sum(jnp.where(valid, new_state.replay.priority, 0.0)) / jnp.maximum(jnp.sum(valid), 1),
    "total/moves": new_state.moves,
    "total/updates": new_state.updates,
    "total/episodes": new_state.episodes,
    "total/skipped_updates": new_state.skipped_updates,
  }


def _iteration(state: TrainState, pool, *, env, network, optimizer, config: MuZeroConfig):
  """Self-play rollout, replay insertion, then the learner updates; returns ``(state, metrics)``."""
  key, key_act, key_learn = jax.random.split(state.key, 3)
  imitate = state.iteration < config.imitation_iterations
  actor, traj, stats = selfplay.rollout(
    state.params, state.actor, pool, key_act, env=env, network=network, config=config, imitate=imitate
  )
  return learn_from_rollout(
    state.replace(key=key), actor, traj, stats, key_learn, network=network, optimizer=optimizer, config=config
  )


def learn_from_rollout(
  state: TrainState,
  actor: selfplay.ActorState,
  traj,
  stats: selfplay.RolloutStats,
  key_learn: chex.PRNGKey,
  *,
  network,
  optimizer,
  config: MuZeroConfig,
):
  """The learner half of an iteration: replay insertion, then the learner updates.

  ``traj`` ``[T, B]`` (``T = config.rollout_length``, ``B = config.num_envs``) was
  played from ``state.actor`` and ended at ``actor``; ``stats`` are its totals.
  Self-play fan-out (:mod:`muzero_jax.distributed`) calls this with rollouts made
  elsewhere. ``state.key`` is kept as is. Returns ``(state, metrics)``.
  """
  replay = replay_lib.add_trajectory(state.replay, traj, config=config)
  (params, opt_state, replay), out = learn_updates(
    state.params,
    state.opt_state,
    replay,
    key_learn,
    _can_learn(replay, config),
    network=network,
    optimizer=optimizer,
    config=config,
  )
  return _next_state(state, params, opt_state, replay, actor, stats, out, config)


def _can_learn(replay: replay_lib.Replay, config: MuZeroConfig) -> chex.Array:
  """[] bool: the replay holds at least ``config.min_replay_size`` (and one) valid positions."""
  return jnp.sum(replay_lib.valid_positions(replay, config)) >= max(config.min_replay_size, 1)


def _next_state(state: TrainState, params, opt_state, replay, actor, stats, out: _LearnOut, config: MuZeroConfig):
  """``(state, metrics)`` after an iteration that played ``stats`` and learned ``out`` (``[U]`` leaves)."""
  new_state = TrainState(
    params=params,
    opt_state=opt_state,
    replay=replay,
    actor=actor,
    key=state.key,
    iteration=state.iteration + 1,
    updates=state.updates + jnp.sum(out.ran & out.finite).astype(jnp.int32),
    moves=state.moves + config.rollout_length * config.num_envs,
    episodes=state.episodes + stats.episodes,
    skipped_updates=state.skipped_updates + jnp.sum(out.ran & ~out.finite).astype(jnp.int32),
  )
  return new_state, _metrics(state, new_state, stats, out, config)


def _init_state(key: chex.PRNGKey, pool, *, env, network, optimizer, config: MuZeroConfig) -> TrainState:
  """Fresh parameters, optimiser state, empty replay and freshly reset environments."""
  obs_shape = tuple(env.observation_shape)
  key, key_net, key_actor = jax.random.split(key, 3)
  params = network.init(key_net, jnp.zeros((1, *obs_shape), jnp.float32), jnp.zeros((1,), jnp.int32))
  zero = jnp.zeros((), jnp.int32)
  return TrainState(
    params=params,
    opt_state=optimizer.init(params),
    replay=replay_lib.init_replay(config, obs_shape, env.num_actions),
    actor=selfplay.init_actor(env, pool, key_actor, config.num_envs),
    key=key,
    iteration=zero,
    updates=zero,
    moves=zero,
    episodes=zero,
    skipped_updates=zero,
  )


# The second host thread of `learner_loop="overlap"` (self-play plays there while the updates run here).
_SELFPLAY_THREAD = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="muzero-selfplay")


def _host_iteration(state: TrainState, pool, *, fns: dict, config: MuZeroConfig, overlap: bool):
  """One iteration as jitted pieces called from the host (``learner_loop`` ``host`` or ``overlap``).

  ``host``: the steps of :func:`_iteration` in its order (play, insert, update
  ``U`` times, each update a top-level program). ``overlap``: the updates read
  the replay before this iteration's moves, while self-play plays in
  ``_SELFPLAY_THREAD``; the moves are inserted once both are done. Either way
  the result depends on the inputs only, not on the threads' timing. JAX's
  thread-local settings (``jax.default_device``, ``jax.debug_nans`` as
  context managers) do not reach that thread: set them globally
  (``jax.config.update``) for ``overlap``.
  """
  key, key_act, keys_u, imitate = fns["keys"](state)

  def play():
    return jax.block_until_ready(fns["rollout"](state.params, state.actor, pool, key_act, imitate=imitate))

  def learn(replay):
    params, opt_state, outs = state.params, state.opt_state, []
    if bool(fns["can_learn"](replay)):
      for key_u in keys_u:
        params, opt_state, priority, out = fns["update"](params, opt_state, replay, key_u)
        replay = replay.replace(priority=priority)
        outs.append(out)
    else:
      outs = [fns["skipped"]()] * config.updates_per_iteration
    return params, opt_state, replay, outs

  if overlap:
    played = _SELFPLAY_THREAD.submit(play)
    try:
      params, opt_state, replay, outs = learn(state.replay)
    except Exception:
      concurrent.futures.wait([played])  # no self-play left running behind an error (Ctrl-C does not wait)
      raise
    actor, traj, stats = played.result()
    replay = fns["insert"](replay, traj)
  else:
    actor, traj, stats = play()
    params, opt_state, replay, outs = learn(fns["insert"](state.replay, traj))
  return fns["finish"](state.replace(key=key), params, opt_state, replay, actor, stats, outs)


def _host_fns(config: MuZeroConfig, env) -> tuple[MuZeroNetwork, optax.GradientTransformation, dict]:
  """Network, optimiser and the jitted pieces of :func:`_host_iteration` (one set for ``host`` and ``overlap``)."""
  network = make_network(config, env.num_actions, env.observation_shape, learner_loop="host")
  optimizer = learner_lib.make_optimizer(config)

  def keys(state):
    key, key_act, key_learn = jax.random.split(state.key, 3)
    keys_u = jax.random.split(key_learn, config.updates_per_iteration)
    return key, key_act, list(keys_u), state.iteration < config.imitation_iterations

  def finish(state, params, opt_state, replay, actor, stats, outs):
    out = jax.tree.map(lambda *x: jnp.stack(x), *outs)
    return _next_state(state, params, opt_state, replay, actor, stats, out, config)

  fns = dict(
    keys=jax.jit(keys),
    rollout=jax.jit(functools.partial(selfplay.rollout, env=env, network=network, config=config)),
    insert=jax.jit(functools.partial(replay_lib.add_trajectory, config=config)),
    can_learn=jax.jit(functools.partial(_can_learn, config=config)),
    update=jax.jit(functools.partial(one_update, network=network, optimizer=optimizer, config=config)),
    skipped=jax.jit(_skipped_update),
    finish=jax.jit(finish),
  )
  return network, optimizer, fns


_host_fns_cached = functools.lru_cache(maxsize=8)(_host_fns)


def _build(config: MuZeroConfig, env):
  """Network, optimiser, ``init_fn(key, pool)`` and ``iteration_fn(state, pool)`` (see ``learner_loop``)."""
  loop = config.resolved_learner_loop()
  if loop == "scan":
    network = make_network(config, env.num_actions, env.observation_shape, learner_loop=loop)
    optimizer = learner_lib.make_optimizer(config)
    kw = dict(env=env, network=network, optimizer=optimizer, config=config)
    donate = (0,) if jax.default_backend() != "cpu" else ()
    iteration_fn = jax.jit(functools.partial(_iteration, **kw), donate_argnums=donate)
  else:
    try:  # `host` and `overlap` share their compiled pieces
      network, optimizer, fns = _host_fns_cached(config.replace(learner_loop="host"), env)
    except TypeError:  # unhashable environment object
      network, optimizer, fns = _host_fns(config.replace(learner_loop="host"), env)
    iteration_fn = functools.partial(_host_iteration, fns=fns, config=config, overlap=loop == "overlap")
  init_fn = jax.jit(functools.partial(_init_state, env=env, network=network, optimizer=optimizer, config=config))
  return network, optimizer, init_fn, iteration_fn, selfplay.make_evaluate(config, env)


_build_cached = functools.lru_cache(maxsize=8)(_build)


def make_train(config: MuZeroConfig, env, env_params_pool) -> Trainer:
  """Builds the pure training functions for ``env`` over a pool of instances.

  The jitted functions take the pool as an argument, so they are shared (and
  compiled once) per ``(config, env)`` when ``env`` is hashable: a second
  ``make_train`` with another pool of the same shapes reuses the executables.

  Args:
    config: hyperparameters; the value/reward supports are checked against
      ``config.max_reward`` and ``config.max_episode_steps`` (``ValueError``).
    env: an environment following the protocol in :mod:`muzero_jax.env_protocol`.
    env_params_pool: pytree of env params with leaves ``[P, ...]``; each slot
      draws a uniform entry at every reset. ``trainer.iteration`` holds it on
      the device, placed there once (a NumPy pool changed in place afterwards
      is not seen; make another trainer).

  Returns:
    a :class:`Trainer`; ``trainer.init()`` then repeated ``trainer.iteration(state)``.
  """
  config.check_supports()
  selfplay.pool_size(env_params_pool)  # every leaf has the one leading pool axis (a clear error if not)
  # The iterations' pool on the device once: a NumPy pool was copied there at every iteration (a performance audit).
  # Device arrays are kept as they are. `Trainer.pool` stays the caller's, whose digest checkpoints record (a
  # review: float64 made float32 here changed it, and a restore warned of another pool).
  device_pool = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), env_params_pool)
  check_env_shapes(env, jax.tree.map(lambda x: x[0], env_params_pool))
  selfplay.check_expert(env, config)
  try:  # fields that only the driver reads do not change the compiled functions
    key_config = config.replace(seed=0, checkpoint_every=1, checkpoints_to_keep=1)
    network, optimizer, init_fn, iteration_fn, evaluate = _build_cached(key_config, env)
  except TypeError:  # unhashable environment object: build uncached
    network, optimizer, init_fn, iteration_fn, evaluate = _build(config, env)

  def init(key: chex.PRNGKey | None = None) -> TrainState:
    if key is not None and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
      key = jax.random.key_data(key)  # a new-style key (jax.random.key): its raw data, as PRNGKey gives and saves take
    state = init_fn(jax.random.PRNGKey(config.seed) if key is None else key, device_pool)
    if not isinstance(state.iteration, jax.core.Tracer):  # not under jax.eval_shape (a restore's template)
      _check_initial_masks(env, state.actor, env_params_pool)
    # Committed like a state restored by Orbax, so both hit one compiled iteration.
    return jax.device_put(state, jax.devices()[0])

  return Trainer(
    config=config,
    network=network,
    optimizer=optimizer,
    init=init,
    iteration=functools.partial(iteration_fn, pool=device_pool),
    iteration_fn=iteration_fn,
    evaluate=evaluate,
    pool=env_params_pool,
  )
