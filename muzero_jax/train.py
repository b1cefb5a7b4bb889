"""``make_train`` (pure, jitted functions) and the ``train`` driver loop.

Shape of training (purejaxrl / Anakin, Hessel et al. 2021): one jitted
``iteration(state) -> (state, metrics)`` runs ``config.rollout_length`` self-play
steps of ``config.num_envs`` environments (``lax.scan``), writes them to the
device-resident replay, then does ``config.updates_per_iteration`` learner
updates (``lax.scan``), all on one device. The whole training state is one
pytree, :class:`TrainState`, so it can be checkpointed and resumed.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax
from flax import struct
from tqdm.auto import tqdm

from muzero_jax import learner as learner_lib
from muzero_jax import replay as replay_lib
from muzero_jax import selfplay
from muzero_jax.checkpoint import Checkpointer
from muzero_jax.config import MuZeroConfig
from muzero_jax.logging import MetricsLogger
from muzero_jax.networks import MuZeroNetwork, make_network

__all__ = ["TrainState", "Trainer", "make_train", "train", "check_env"]


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


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The pure functions of one training setup (built by :func:`make_train`).

  ``iteration(state)`` is ``iteration_fn(state, pool)`` with the pool bound; the
  pool is an argument of the jitted function, not a compile-time constant.
  """

  config: MuZeroConfig
  network: MuZeroNetwork
  optimizer: optax.GradientTransformation
  init: Callable[..., TrainState]  # init(key=None) -> TrainState (key default: PRNGKey(config.seed))
  iteration: Callable[[TrainState], tuple[TrainState, dict]]
  iteration_fn: Callable[[TrainState, Any], tuple[TrainState, dict]]  # jitted, (state, pool)
  evaluate: Callable  # evaluate(params, env_params_batch, key) -> EvalResult (jitted, greedy)
  pool: Any


def check_env(env, pool) -> None:
  """Checks the environment protocol on one pool entry (shapes and dtypes)."""
  for name in ("reset", "step", "action_mask", "num_actions", "observation_shape"):
    if not hasattr(env, name):
      raise TypeError(f"environment {type(env).__name__} lacks `{name}` (see muzero_jax.selfplay)")
  params = jax.tree.map(lambda x: x[0], pool)
  obs, state = jax.eval_shape(env.reset, jax.random.PRNGKey(0), params)
  if tuple(obs.shape) != tuple(env.observation_shape):
    raise ValueError(
      f"env.reset returned obs of shape {obs.shape}, env.observation_shape is {tuple(env.observation_shape)}"
    )
  mask = jax.eval_shape(env.action_mask, state, params)
  if tuple(mask.shape) != (env.num_actions,) or mask.dtype != jnp.bool_:
    raise ValueError(f"env.action_mask must return bool[{env.num_actions}], got {mask.dtype}{list(mask.shape)}")


@struct.dataclass
class _LearnOut:
  """Per-update results of one iteration's learner scan (``U`` updates)."""

  terms: learner_lib.LossTerms  # fields [U]
  grad_norm: chex.Array  # [U]
  finite: chex.Array  # [U] bool, update applied (loss and gradients finite)
  ran: chex.Array  # [U] bool, replay was warm enough to update


def _learn(params, opt_state, replay, key, can_learn, *, network, optimizer, config: MuZeroConfig):
  """``config.updates_per_iteration`` learner updates (``lax.scan``), skipped while the replay is cold."""

  def one_update(carry, key_u):
    params, opt_state, replay = carry

    def do(_):
      p, o, r, terms, gnorm, finite = learner_lib.learn_step(
        params, opt_state, replay, key_u, network=network, optimizer=optimizer, config=config
      )
      return (p, o, r), _LearnOut(terms, gnorm, finite, jnp.array(True))

    def skip(_):
      zero = jnp.zeros((), jnp.float32)
      terms = learner_lib.LossTerms(total=zero, policy=zero, value=zero, reward=zero, legality=zero, value_error=zero)
      return (params, opt_state, replay), _LearnOut(terms, zero, jnp.array(True), jnp.array(False))

    return jax.lax.cond(can_learn, do, skip, None)

  keys = jax.random.split(key, config.updates_per_iteration)
  return jax.lax.scan(one_update, (params, opt_state, replay), keys)


def _metrics(
  state: TrainState, new_state: TrainState, stats: selfplay.RolloutStats, out: _LearnOut, config: MuZeroConfig
) -> dict[str, chex.Array]:
  """Scalar metrics of one iteration (means over applied updates and finished episodes)."""
  applied = out.ran & out.finite
  mean = lambda x: jnp.sum(jnp.where(applied, x, 0.0)) / jnp.maximum(jnp.sum(applied), 1)  # noqa: E731
  per_episode = lambda x: jnp.where(stats.episodes > 0, x / jnp.maximum(stats.episodes, 1), jnp.nan)  # noqa: E731
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
  actor, traj, stats = selfplay.rollout(
    state.params, state.actor, pool, key_act, env=env, network=network, config=config
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
  can_learn = jnp.sum(replay_lib.valid_positions(replay, config)) >= max(config.min_replay_size, 1)
  (params, opt_state, replay), out = _learn(
    state.params, state.opt_state, replay, key_learn, can_learn, network=network, optimizer=optimizer, config=config
  )
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


def _build(config: MuZeroConfig, env):
  """Network, optimiser and the jitted ``init_fn(key, pool)`` / ``iteration_fn(state, pool)``."""
  network = make_network(config, env.num_actions, env.observation_shape)
  optimizer = learner_lib.make_optimizer(config)
  kw = dict(env=env, network=network, optimizer=optimizer, config=config)
  donate = (0,) if jax.default_backend() != "cpu" else ()
  init_fn = jax.jit(functools.partial(_init_state, **kw))
  iteration_fn = jax.jit(functools.partial(_iteration, **kw), donate_argnums=donate)
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
    env: an environment following the protocol in :mod:`muzero_jax.selfplay`.
    env_params_pool: pytree of env params with leaves ``[P, ...]``; each slot
      draws a uniform entry at every reset.

  Returns:
    a :class:`Trainer`; ``trainer.init()`` then repeated ``trainer.iteration(state)``.
  """
  config.check_supports()
  check_env(env, env_params_pool)
  try:  # fields that only the driver reads do not change the compiled functions
    key_config = config.replace(seed=0, checkpoint_every=1, checkpoints_to_keep=1)
    network, optimizer, init_fn, iteration_fn, evaluate = _build_cached(key_config, env)
  except TypeError:  # unhashable environment object: build uncached
    network, optimizer, init_fn, iteration_fn, evaluate = _build(config, env)

  def init(key: chex.PRNGKey | None = None) -> TrainState:
    state = init_fn(jax.random.PRNGKey(config.seed) if key is None else key, env_params_pool)
    # Committed like a state restored by Orbax, so both hit one compiled iteration.
    return jax.device_put(state, jax.devices()[0])

  return Trainer(
    config=config,
    network=network,
    optimizer=optimizer,
    init=init,
    iteration=functools.partial(iteration_fn, pool=env_params_pool),
    iteration_fn=iteration_fn,
    evaluate=evaluate,
    pool=env_params_pool,
  )


def _rates(metrics: dict, seconds: float, config: MuZeroConfig) -> dict:
  moves = config.rollout_length * config.num_envs
  updates = float(metrics["learner/updates"]) + float(metrics["learner/skipped_updates"])
  sims = (
    moves * config.num_simulations + updates * config.num_reanalysed * config.window_length * config.num_simulations
  )
  total_moves = max(float(metrics["total/moves"]), 1.0)
  return {
    "speed/moves_per_s": moves / seconds,
    "speed/updates_per_s": updates / seconds,
    "speed/simulations_per_s": sims / seconds,
    "speed/iteration_s": seconds,
    "replay/replay_ratio": float(metrics["total/updates"]) * config.batch_size / total_moves,
  }


def train(
  config: MuZeroConfig,
  env,
  env_params_pool,
  *,
  logdir: str | None = None,
  checkpoint_dir: str | None = None,
  num_iterations: int = 100,
  callback: Callable[[TrainState, dict], bool | None] | None = None,
  state: TrainState | None = None,
  resume: bool = False,
  progress: bool = True,
  checkpoint_extra: dict | None = None,
) -> TrainState:
  """Runs ``num_iterations`` training iterations and returns the final state.

  Args:
    config, env, env_params_pool: as in :func:`make_train`.
    logdir: tensorboard directory (scalars every iteration, at step =
      ``state.iteration``), or None. A resumed run purges the events a crashed
      run logged after its checkpoint, so curves continue without doubles.
    checkpoint_dir: Orbax checkpoints every ``config.checkpoint_every``
      iterations and at the end (keeping ``config.checkpoints_to_keep``), or None.
    num_iterations: iterations to run in this call.
    callback: ``callback(state, metrics)`` after every iteration with host
      metrics; returning True stops training early.
    state: start from this state instead of ``init()``.
    resume: restore the newest good checkpoint in ``checkpoint_dir`` when one
      exists (damaged newer steps are renamed ``<step>.damaged`` with a
      warning); ``config`` must not contradict the saved one.
    progress: show a tqdm progress bar.
    checkpoint_extra: JSON-able dict stored in every checkpoint's meta (e.g.
      what regenerates ``env_params_pool``).

  Ctrl-C (SIGINT) or SIGTERM lets the running iteration finish, saves a
  checkpoint, then raises ``KeyboardInterrupt``; a second one interrupts at once.
  """
  trainer = make_train(config, env, env_params_pool)
  ckpt = Checkpointer(checkpoint_dir, max_to_keep=config.checkpoints_to_keep) if checkpoint_dir else None
  if state is None and resume and ckpt is not None and ckpt.all_steps():
    state = ckpt.restore(jax.eval_shape(trainer.init), env=env, config=config, quarantine=True).state
  state = trainer.init() if state is None else state
  start = int(state.iteration)
  logger = MetricsLogger(logdir, purge_step=start + 1 if start > 0 else None)
  bar = tqdm(range(num_iterations), disable=not progress, desc="muzero", dynamic_ncols=True)
  save = functools.partial(_save, ckpt, config=config, env=env, extra=checkpoint_extra)
  stop = _StopOnSignal()
  try:
    with stop:
      for i in bar:
        t0 = time.perf_counter()
        state, metrics = trainer.iteration(state)
        metrics = _host_metrics(metrics, time.perf_counter() - t0, config, first=i == 0)
        step = _save_if_due(save, ckpt, state, config, metrics)
        logger.write(step, metrics)
        bar.set_postfix(
          it=step,
          ret=f"{metrics['selfplay/return_mean']:.2f}",
          loss=f"{metrics['loss/total']:.3f}",
          mv_s=f"{metrics.get('speed/moves_per_s', float('nan')):.0f}",
        )
        asked_to_stop = callback is not None and callback(state, metrics)
        if stop.signal is not None or asked_to_stop:
          break
    save(state, force=True)
  finally:
    if ckpt is not None:
      ckpt.close()  # waits for the asynchronous write of the last save
    logger.close()
    bar.close()
  if stop.signal is not None:
    where = f"; checkpoint of iteration {int(state.iteration)} saved in {ckpt.directory}" if ckpt else ""
    raise KeyboardInterrupt(f"training interrupted by signal {stop.signal}{where}")
  return state


def _host_metrics(metrics: dict, seconds: float, config: MuZeroConfig, *, first: bool) -> dict:
  """An iteration's device metrics as floats, with its speed rates.

  The first iteration includes compilation: its rates are left out of the
  speed curves and only its time is kept (``speed/first_iteration_s``).
  """
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  metrics.update(_rates(metrics, seconds, config))
  if first:
    metrics = {k: v for k, v in metrics.items() if not k.startswith("speed/")}
    metrics["speed/first_iteration_s"] = seconds
  return metrics


def _save_if_due(
  save: Callable, ckpt: Checkpointer | None, state: TrainState, config: MuZeroConfig, metrics: dict
) -> int:
  """Saves every ``config.checkpoint_every`` iterations (adding ``checkpoint/save_s``); returns the step."""
  step = int(state.iteration)
  if step % config.checkpoint_every == 0 and save(state):
    metrics["checkpoint/save_s"] = ckpt.last_save_seconds
  return step


def _save(ckpt: Checkpointer | None, state: TrainState, *, config, env, extra, force: bool = False) -> bool:
  if ckpt is None:
    return False
  return ckpt.save(int(state.iteration), state, config=config, env=env, extra=extra, force=force)


class _StopOnSignal:
  """Turns the first SIGINT/SIGTERM into a flag the loop checks between iterations.

  Handlers are installed only in the main thread (elsewhere signals cannot be
  caught) and the previous ones are put back on exit. A second signal raises
  ``KeyboardInterrupt`` at once.
  """

  def __init__(self) -> None:
    self.signal: int | None = None
    self._previous: dict = {}

  def _handle(self, signum, frame) -> None:  # noqa: ARG002
    if self.signal is not None:
      raise KeyboardInterrupt
    self.signal = signum

  def __enter__(self) -> _StopOnSignal:
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
