"""Speed measurements: search, self-play and learner throughput (no CLI here).

Every function compiles first (compile time reported separately), then times
``repeats`` calls, each ended by ``block_until_ready``, and reports the median.
Results are lists of flat dicts (one per batch size), ready for a table or JSON.

The *search overhead ratio* compares one batched MCTS (``num_simulations``
recurrent calls plus the root call, with tree bookkeeping) against the same
network evaluations run back to back without a tree: a ``fori_loop`` of
``num_simulations`` ``recurrent_fn`` calls on the batch, each fed the previous
latent so none can be skipped. A ratio near 1 means the search costs little
beyond its network calls.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from muzero_jax import replay as replay_lib
from muzero_jax import selfplay
from muzero_jax.config import MuZeroConfig
from muzero_jax.networks import conv_gradient_kind, make_network
from muzero_jax.search import make_recurrent_fn, root_output, run_search
from muzero_jax.trainer import learn_updates, make_train, one_update

__all__ = ["time_call", "benchmark_search", "benchmark_selfplay", "benchmark_learner", "benchmark_training"]


def time_call(fn: Callable, *args, repeats: int = 5) -> dict[str, float]:
  """Compiles ``fn`` (a jitted function) on ``args``, then times ``repeats`` calls.

  Returns ``compile_s`` (lowering + compilation), ``first_call_s`` and
  ``median_s`` / ``min_s`` of the timed calls.
  """
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  return _time_runs(lambda: jax.block_until_ready(compiled(*args)), compile_s, repeats)


def _time_runs(run: Callable[[], Any], compile_s: float, repeats: int) -> dict[str, float]:
  """:func:`time_call`'s figures for ``run`` (which blocks until done), compiled in ``compile_s``."""
  t0 = time.perf_counter()
  run()
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  return {"compile_s": compile_s, "first_call_s": first_s, "median_s": statistics.median(times), "min_s": min(times)}


def _batch_of_states(env, pool, key, batch: int):
  """Observations ``[B, ...]`` and masks ``[B, A]`` from resets on random pool entries."""
  actor = selfplay.init_actor(env, pool, key, batch)
  mask = jax.vmap(env.action_mask)(actor.env_state, selfplay.select_params(pool, actor.pool_index))
  return actor.obs, mask


def _device() -> dict[str, str]:
  """The device as every benchmark row spells it: its kind (``device``) and its backend (``platform``) apart (a
  ``platform:kind`` string here made search rows say "cpu:cpu" beside every other row's "cpu")."""
  dev = jax.devices()[0]
  return {"device": getattr(dev, "device_kind", ""), "platform": dev.platform}


def _make_rollout(env, network, cfg):
  @jax.jit
  def roll(params, actor, pool, key):
    actor, traj, stats = selfplay.rollout(params, actor, pool, key, env=env, network=network, config=cfg)
    return actor.obs, traj.reward, stats.episodes

  return roll


def _make_fill(env, network, cfg):
  @jax.jit
  def fill(state, pool):
    key, key_act = jax.random.split(state.key)
    actor, traj, _ = selfplay.rollout(state.params, state.actor, pool, key_act, env=env, network=network, config=cfg)
    return state.replace(actor=actor, key=key, replay=replay_lib.add_trajectory(state.replay, traj, config=cfg))

  return fill


def _time_host_updates(network, optimizer, cfg, updates: int, state, repeats: int) -> dict[str, float]:
  """:func:`time_call`'s figures for ``updates`` :func:`muzero_jax.trainer.one_update` calls from the host.

  As training runs them with ``learner_loop`` ``host``, and ``overlap`` but for the self-play beside them.
  """
  update = jax.jit(functools.partial(one_update, network=network, optimizer=optimizer, config=cfg))
  keys = list(jax.random.split(state.key, updates))
  t0 = time.perf_counter()
  compiled = update.lower(state.params, state.opt_state, state.replay, keys[0]).compile()
  compile_s = time.perf_counter() - t0

  def run():
    params, opt_state, replay = state.params, state.opt_state, state.replay
    for key in keys:
      params, opt_state, priority, out = compiled(params, opt_state, replay, key)
      replay = replay.replace(priority=priority)
    return jax.block_until_ready((params, out.terms.total))

  return _time_runs(run, compile_s, repeats)


def _make_learn(network, optimizer, cfg, updates: int):
  """``updates`` learner updates as training runs them with ``learner_loop`` ``scan`` (:func:`learn_updates`)."""

  @jax.jit
  def learn(params, opt_state, replay, key):
    (p, _, _), out = learn_updates(
      params,
      opt_state,
      replay,
      key,
      jnp.array(True),
      network=network,
      optimizer=optimizer,
      config=cfg.replace(updates_per_iteration=updates),
    )
    return p, out.terms.total

  return learn


def benchmark_search(
  config: MuZeroConfig,
  env,
  env_params_pool,
  *,
  batch_sizes: Sequence[int] = (1, 16, 64),
  repeats: int = 5,
  seed: int = 0,
) -> list[dict[str, Any]]:
  """Simulations per second of the configured search, and its overhead ratio.

  Returns one dict per batch size with ``simulations_per_s``,
  ``searches_per_s``, ``search_s``, ``network_only_s``, ``overhead_ratio``
  (search / network-only wall time) and compile times.
  """
  network = make_network(config, env.num_actions, env.observation_shape)
  recurrent_fn = make_recurrent_fn(network, config)
  key = jax.random.PRNGKey(seed)
  key_init, key_states, key_search = jax.random.split(key, 3)
  obs_shape = tuple(env.observation_shape)
  params = network.init(key_init, jnp.zeros((1, *obs_shape)), jnp.zeros((1,), jnp.int32))

  @jax.jit
  def search(params, key, obs, mask):
    out = run_search(params, key, obs, mask, network=network, config=config)
    return out.action, out.root_value

  @jax.jit
  def network_only(params, key, obs, mask):
    root = root_output(network, config, params, obs)
    batch = obs.shape[0]

    def body(i, carry):
      latent, total = carry
      # Vary the action with the step so the calls cannot be hoisted or merged.
      action = (jnp.argmax(root.prior_logits + jnp.where(mask, 0.0, -1e9), -1) + i) % env.num_actions
      out, latent = recurrent_fn(params, key, action.astype(jnp.int32), latent)
      return latent, total + out.value

    _, total = jax.lax.fori_loop(0, config.num_simulations, body, (root.embedding, jnp.zeros((batch,), jnp.float32)))
    return total

  results = []
  for batch in batch_sizes:
    obs, mask = _batch_of_states(env, env_params_pool, key_states, batch)
    t_search = time_call(search, params, key_search, obs, mask, repeats=repeats)
    t_net = time_call(network_only, params, key_search, obs, mask, repeats=repeats)
    results.append(
      {
        "benchmark": "search",
        **_device(),
        "search": config.search,
        "batch_size": batch,
        "num_simulations": config.num_simulations,
        "simulations_per_s": batch * config.num_simulations / t_search["median_s"],
        "searches_per_s": batch / t_search["median_s"],
        "search_s": t_search["median_s"],
        "network_only_s": t_net["median_s"],
        "overhead_ratio": t_search["median_s"] / t_net["median_s"],
        "compile_search_s": t_search["compile_s"],
        "compile_network_only_s": t_net["compile_s"],
      }
    )
  return results


def benchmark_selfplay(
  config: MuZeroConfig, env, env_params_pool, *, num_envs: Sequence[int] = (16, 64), repeats: int = 3, seed: int = 0
) -> list[dict[str, Any]]:
  """Self-play moves per second: one jitted rollout of ``rollout_length`` steps per call.

  Includes search, environment steps and auto-reset; no learning.
  """
  results = []
  for batch in num_envs:
    cfg = config.replace(
      num_envs=batch,
      replay_capacity=max(config.replay_capacity, batch * (config.rollout_length + config.window_length)),
    )
    network = make_network(cfg, env.num_actions, env.observation_shape)
    key_init, key_actor, key_roll = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = network.init(key_init, jnp.zeros((1, *env.observation_shape)), jnp.zeros((1,), jnp.int32))
    actor = selfplay.init_actor(env, env_params_pool, key_actor, batch)

    t = time_call(_make_rollout(env, network, cfg), params, actor, env_params_pool, key_roll, repeats=repeats)
    moves = batch * cfg.rollout_length
    results.append(
      {
        "benchmark": "selfplay",
        **_device(),
        "num_envs": batch,
        "rollout_length": cfg.rollout_length,
        "num_simulations": cfg.num_simulations,
        "moves_per_s": moves / t["median_s"],
        "simulations_per_s": moves * cfg.num_simulations / t["median_s"],
        "rollout_s": t["median_s"],
        "compile_s": t["compile_s"],
      }
    )
  return results


def benchmark_learner(
  config: MuZeroConfig,
  env,
  env_params_pool,
  *,
  batch_sizes: Sequence[int] = (64, 256),
  updates: int = 10,
  repeats: int = 3,
  seed: int = 0,
) -> list[dict[str, Any]]:
  """Learner updates per second (sampling, reanalysis as configured, loss, optimiser).

  The replay is first filled by self-play with random parameters; each timed
  call runs ``updates`` updates as training would (``config.learner_loop``):
  in a ``lax.scan`` (``scan``) or called one by one from the host (``host``;
  ``overlap`` is timed the same way, without the self-play it runs beside, and
  its rows say ``host``).
  """
  results = []
  for batch in batch_sizes:
    cfg = config.replace(batch_size=batch, min_replay_size=0)
    trainer = make_train(cfg, env, env_params_pool)
    state = trainer.init(jax.random.PRNGKey(seed))
    network, optimizer = trainer.network, trainer.optimizer

    fill = _make_fill(env, network, cfg)
    rollouts = -(-(cfg.window_length + 1) // cfg.rollout_length) + 1
    for _ in range(rollouts):
      state = fill(state, env_params_pool)

    loop = cfg.resolved_learner_loop()
    if loop == "scan":
      learn = _make_learn(network, optimizer, cfg, updates)
      t = time_call(learn, state.params, state.opt_state, state.replay, state.key, repeats=repeats)
    else:
      t = _time_host_updates(network, optimizer, cfg, updates, state, repeats)
    results.append(
      {
        "benchmark": "learner",
        **_device(),
        "learner_loop": "scan" if loop == "scan" else "host",
        "conv_gradient": conv_gradient_kind(cfg.conv_gradient, loop),
        "batch_size": batch,
        "unroll_steps": cfg.unroll_steps,
        "reanalysed_per_update": cfg.num_reanalysed,
        "updates_per_s": updates / t["median_s"],
        "samples_per_s": updates * batch / t["median_s"],
        "compile_s": t["compile_s"],
      }
    )
  return results


def benchmark_training(
  config: MuZeroConfig, env, env_params_pool, *, iterations: int = 20, seed: int = 0
) -> dict[str, Any]:
  """Moves per second of training itself: whole iterations (self-play, replay, learner updates).

  The figure a training run shows (``speed/moves_per_s``): iterations run
  until the replay is warm enough for updates, then ``iterations`` more are
  timed one by one (each ended by ``block_until_ready``); the median is
  reported. ``compile_s`` is the first iteration's time: its compilation,
  unless this process compiled the same programs before (``host`` and
  ``overlap`` share theirs); with those loops the update program compiles
  later, in the warm-up iterations, which are not timed.
  """
  trainer = make_train(config.replace(seed=seed), env, env_params_pool)
  state = trainer.init()
  t0 = time.perf_counter()
  state, metrics = trainer.iteration(state)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  moves = config.rollout_length * config.num_envs
  # Updates start once min_replay_size positions are valid (each needs window_length newer rows).
  max_warmup = -(-config.min_replay_size // moves) + config.window_length + 2
  warmup = 1
  while int(metrics["learner/updates"]) + int(metrics["learner/skipped_updates"]) == 0:
    if warmup >= max_warmup:
      raise RuntimeError(
        f"no learner update after {warmup} iterations: min_replay_size={config.min_replay_size} may exceed what "
        f"the replay can hold ({config.replay_rows} rows per environment, window {config.window_length})"
      )
    state, metrics = trainer.iteration(state)
    warmup += 1
  times = []
  for _ in range(iterations):
    t0 = time.perf_counter()
    state, metrics = trainer.iteration(state)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  return {
    "benchmark": "training",
    **_device(),
    "num_envs": config.num_envs,
    "rollout_length": config.rollout_length,
    "updates_per_iteration": config.updates_per_iteration,
    "batch_size": config.batch_size,
    "reanalysed_per_update": config.num_reanalysed,
    "learner_loop": config.resolved_learner_loop(),
    "conv_gradient": conv_gradient_kind(config.conv_gradient, config.resolved_learner_loop()),
    "iteration_s": median,
    "moves_per_s": moves / median,
    "updates_per_s": config.updates_per_iteration / median,
    "warmup_iterations": warmup,
    "timed_iterations": iterations,
    "compile_s": compile_s,
  }
