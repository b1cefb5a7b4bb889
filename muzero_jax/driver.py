"""The training driver: one loop around a source of training iterations.

Checkpoints, resume, signals, TensorBoard scalars, the progress bar and the
clean-up are written here once. Where an iteration comes from is plugged in as
an :class:`IterationSource`:

* :func:`train` (single process) plugs in the jitted
  :attr:`muzero_jax.Trainer.iteration` (self-play and learning fused);
* :func:`muzero_jax.distributed.train_distributed` plugs in self-play on Ray
  actors followed by :func:`muzero_jax.trainer.learn_from_rollout` here.

Both produce the same :class:`~muzero_jax.TrainState`, so a checkpoint of
either resumes in either.
"""

from __future__ import annotations

import inspect
import signal
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import jax
import numpy as np
from tqdm.auto import tqdm

from muzero_jax import support
from muzero_jax.checkpoint import Checkpointer, CheckpointWarning
from muzero_jax.config import MuZeroConfig
from muzero_jax.env_protocol import leaf_mismatch
from muzero_jax.metrics_logger import MetricsLogger
from muzero_jax.trainer import Trainer, TrainState, make_train

__all__ = ["IterationAbandoned", "IterationSource", "StopOnSignal", "run_iterations", "train"]

Callback = Callable[[TrainState, dict], bool | None]


class IterationAbandoned(Exception):
  """Raised by a source's ``iteration`` that saw the driver's stop request while it waited (e.g. for Ray actors
  that cannot be scheduled) and gave the iteration up before changing the state: the driver then stops as after a
  completed iteration (the state it passed in is saved), without waiting any longer."""


class IterationSource(Protocol):
  """Where the driver's training iterations come from (the plug-in point of :func:`run_iterations`)."""

  description: str
  """Label of the progress bar."""

  def start(self, state: TrainState, stop_requested: Callable[[], bool]) -> None:
    """Called once with the state training starts from (fresh or restored), before the first iteration.

    ``stop_requested()`` turns True once Ctrl-C or SIGTERM asked the driver to stop: an iteration that waits
    (not one that computes) should poll it and raise :class:`IterationAbandoned` before it changes the state.
    """

  def iteration(self, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
    """One training iteration: the new state and its scalar metrics (device or host values)."""

  def close(self) -> dict[str, float]:
    """Releases what ``start`` acquired (also after an error); returns final scalars to log."""


class _FusedIterations:
  """The single-process source: the self-play + learning iteration of a :class:`Trainer` (``learner_loop``)."""

  description = "muzero"

  def __init__(self, trainer: Trainer) -> None:
    self._iteration = trainer.iteration

  def start(self, state: TrainState, stop_requested: Callable[[], bool]) -> None:
    del state, stop_requested  # an iteration is one jitted call: nothing to poll

  def iteration(self, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
    return self._iteration(state)

  def close(self) -> dict[str, float]:
    return {}


def train(
  config: MuZeroConfig,
  env,
  env_params_pool,
  *,
  logdir: str | None = None,
  checkpoint_dir: str | None = None,
  num_iterations: int = 100,
  callback: Callback | None = None,
  state: TrainState | None = None,
  resume: bool = False,
  progress: bool = True,
  checkpoint_extra: dict | None = None,
) -> TrainState:
  """Runs ``num_iterations`` single-process training iterations and returns the final state.

  Args:
    config, env, env_params_pool: as in :func:`muzero_jax.make_train`.
    logdir, checkpoint_dir, num_iterations, callback, state, resume, progress,
      checkpoint_extra: as in :func:`run_iterations`.
  """
  trainer = make_train(config, env, env_params_pool)
  return run_iterations(
    trainer,
    env,
    _FusedIterations(trainer),
    logdir=logdir,
    checkpoint_dir=checkpoint_dir,
    num_iterations=num_iterations,
    callback=callback,
    state=state,
    resume=resume,
    progress=progress,
    checkpoint_extra=checkpoint_extra,
  )


def run_iterations(
  trainer: Trainer,
  env,
  source: IterationSource,
  *,
  logdir: str | None = None,
  checkpoint_dir: str | None = None,
  num_iterations: int = 100,
  callback: Callback | None = None,
  state: TrainState | None = None,
  resume: bool = False,
  progress: bool = True,
  checkpoint_extra: dict | None = None,
) -> TrainState:
  """Runs ``num_iterations`` iterations of ``source`` with checkpoints, logging and signal handling.

  Args:
    trainer: the training setup (its config, ``init`` and template state).
    env: the environment (its identity is stored in and checked against checkpoints).
    source: where the iterations come from.
    logdir: tensorboard directory (scalars every iteration, at step =
      ``state.iteration``), or None. A resumed run purges the events a crashed
      run logged after its checkpoint, so curves continue without doubles.
    checkpoint_dir: Orbax checkpoints every ``config.checkpoint_every``
      iterations and at the end (keeping ``config.checkpoints_to_keep``), or None.
    num_iterations: iterations to run in this call.
    callback: ``callback(state, metrics)`` after every iteration with host
      metrics; returning True stops training early.
    state: start from this state instead of ``trainer.init()``.
    resume: restore the newest good checkpoint in ``checkpoint_dir`` when one
      exists (damaged newer steps are renamed ``<step>.damaged`` with a
      warning); the config must not contradict the saved one.
    progress: show a tqdm progress bar.
    checkpoint_extra: JSON-able dict stored in every checkpoint's meta (e.g.
      what regenerates the env params pool).

  An iteration that raises (a Ray actor past its restarts, a device error) first saves the last completed
  iteration when it went past the start, and the error's notes say so.

  Ctrl-C (SIGINT) or SIGTERM lets the running iteration finish (a source
  waiting on something may abandon it instead: :class:`IterationAbandoned`),
  saves a checkpoint, then raises ``KeyboardInterrupt``; a second one
  interrupts at once.
  """
  config = trainer.config
  if isinstance(num_iterations, bool) or not isinstance(num_iterations, int | np.integer) or num_iterations < 0:
    raise ValueError(f"num_iterations must be a whole number >= 0, got {num_iterations!r}")
  ckpt = Checkpointer(checkpoint_dir, max_to_keep=config.checkpoints_to_keep) if checkpoint_dir else None
  if resume:  # what it resumes from, or why nothing (said, not silent: a library audit)
    if state is not None:
      warnings.warn("resume=True: the state given is trained on; the checkpoint is not read", CheckpointWarning, 3)
    elif ckpt is None:
      warnings.warn("resume=True: no checkpoint_dir given", CheckpointWarning, 3)
    elif not ckpt.all_steps():
      warnings.warn(f"resume=True: no checkpoint in {checkpoint_dir}: a fresh run starts", CheckpointWarning, 3)
    else:
      state = ckpt.restore(
        jax.eval_shape(trainer.init), env=env, config=config, quarantine=True, pool=trainer.pool
      ).state
  if state is None:
    state = trainer.init()
  else:
    check_state(state, jax.eval_shape(trainer.init))
  start = int(state.iteration)
  logger = MetricsLogger(logdir, purge_step=start + 1 if start > 0 else None)
  bar = tqdm(range(num_iterations), disable=not progress, desc=source.description, dynamic_ncols=True)
  stop = StopOnSignal()
  started = warned_reward = warned_skip = warned_long = warned_cut = ended = learned = False
  raising: BaseException | None = None  # the error on its way out, if any
  last = start  # the last completed iteration, on the host: a failed step may have taken `state`'s buffers
  try:
    _start(source, state, lambda: stop.signal is not None)
    started = True
    with stop:
      for i in bar:
        t0 = time.perf_counter()
        try:
          state, metrics = source.iteration(state)
        except IterationAbandoned:
          if stop.signal is None:
            raise
          break  # `state` is still the last completed iteration's: saved below
        except Exception as err:
          _save_before_raising(err, ckpt, state, last, start, trainer, env, checkpoint_extra)
          raise
        # An iteration may return as soon as its last program is dispatched: its metrics, computed last, are read
        # (waiting for the device) before the clock stops. The first iteration includes compilation
        # (and, fanned out, the actors' start).
        metrics = jax.device_get(metrics)
        # The learner's update compiles where it first runs: with the host or overlap loop, at the first iteration
        # whose replay is warm, which may come after the first.
        learns = float(metrics.get("learner/updates", 0)) + float(metrics.get("learner/skipped_updates", 0)) > 0
        first = "first_iteration" if i == 0 else ("first_learning_iteration" if learns and not learned else None)
        learned = learned or learns
        metrics = _host_metrics(metrics, time.perf_counter() - t0, config, first=first)
        step = int(state.iteration)  # one read of the device (it was five)
        last = step
        warned_reward = warned_reward or _warn_clipped_reward(metrics, config, step)
        warned_skip = warned_skip or _warn_all_skipped(metrics, step)
        ended = ended or _warn_no_episode_end(metrics, config, step)
        warned_long = warned_long or _warn_long_episode(metrics, config, step)
        warned_cut = warned_cut or _warn_truncated_values(metrics, config, step)
        logger.write(step, metrics)
        if ckpt is not None and step % config.checkpoint_every == 0:
          # The step's scalars reach the disk before its checkpoint does: a run killed after the save resumes past
          # this step, whose point was lost when it was written after (a checkpoint audit).
          logger.flush()
          if _save(ckpt, state, trainer, env, checkpoint_extra):
            metrics["checkpoint/save_s"] = ckpt.last_save_seconds
            logger.write(step, {"checkpoint/save_s": ckpt.last_save_seconds})
        bar.set_postfix(progress_postfix(step, metrics))
        asked_to_stop = callback is not None and callback(state, metrics)
        if stop.signal is not None or asked_to_stop:
          break
    if ckpt is not None:
      _save(ckpt, state, trainer, env, checkpoint_extra, force=True)
  except BaseException as err:
    raising = err
    raise
  finally:
    try:
      if started:
        logger.write(last, source.close())
      if ckpt is not None:
        _close(ckpt, raising)  # waits for the asynchronous write of the last save
    finally:  # also when that wait fails (a review: the logger was then never flushed)
      logger.close()
      bar.close()
  if stop.signal is not None:
    where = f"; checkpoint of iteration {int(state.iteration)} saved in {ckpt.directory}" if ckpt else ""
    raise KeyboardInterrupt(f"training interrupted by signal {stop.signal}{where}")
  return state


def _close(ckpt: Checkpointer, raising: BaseException | None) -> None:
  """Closes `ckpt`; when an error is already on its way out (`raising`), a failure to finish the pending save is a
  note on it rather than an error over it (a checkpoint audit: a full disk's second report hid the first)."""
  try:
    ckpt.close()
  except Exception as err:
    if raising is None:
      raise
    raising.add_note(f"finishing the pending checkpoint save failed too: {type(err).__name__}: {err}")


def _start(source: IterationSource, state: TrainState, stop_requested: Callable[[], bool]) -> None:
  """`source.start(state, stop_requested)`, or `source.start(state)` for a source written before `stop_requested`
  was added (a review: such a plug-in failed with a TypeError); that one is not asked to poll it."""
  try:
    takes = len(inspect.signature(source.start).parameters)
  except (TypeError, ValueError):  # no signature to read: the current protocol
    takes = 2
  if takes < 2:
    source.start(state)
  else:
    source.start(state, stop_requested)


def progress_postfix(step: int, metrics: dict) -> dict[str, object]:
  """The progress bar's figures: the iteration, mean return, loss and moves per second, "-" where an iteration has
  none (no episode ended, no update ran, the first iteration's compile time): a CLI audit read `mv_s=nan`."""

  def shown(name: str, digits: int) -> str:
    value = metrics.get(name)
    return f"{float(value):.{digits}f}" if value is not None and np.isfinite(float(value)) else "-"

  return {
    "it": step,
    "ret": shown("selfplay/return_mean", 2),
    "loss": shown("loss/total", 3),
    "mv_s": shown("speed/moves_per_s", 0),
  }


def _save_before_raising(err, ckpt, state, step: int, start: int, trainer, env, extra) -> None:
  """An iteration failed (e.g. a self-play actor past its restarts): `state`, the last completed iteration's (`step`,
  read on the host), is saved when it went past `start` and the error's notes say where (an audit: the fan-out's
  error was a traceback that lost up to `checkpoint_every` - 1 iterations). A state whose buffers the failed step
  took (an iteration that donates its input, as the fan-out's learner does on a GPU) is not saved, and the note says
  so; nothing here raises over the error (a review: a deleted array's error hid it)."""
  if ckpt is None or step <= start:
    return
  try:
    if any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(state)):
      newest = max(ckpt.all_steps(), default=None)
      err.add_note(
        f"iteration {step} was not saved: the failed step had taken its state (donated); "
        + (f"the newest checkpoint is step {newest} in {ckpt.directory}" if newest is not None else "no checkpoint")
      )
      return
    _save(ckpt, state, trainer, env, extra, force=True)
  except Exception as save_err:  # noqa: BLE001 (the iteration's error is the one to raise)
    err.add_note(f"saving iteration {step} failed too: {type(save_err).__name__}: {save_err}")
    return
  err.add_note(f"the last completed iteration, {step}, is saved in {ckpt.directory}: resume from it")


def check_state(state: TrainState, template: TrainState) -> None:
  """Raises ``ValueError`` naming the first leaf where ``state`` differs in shape or dtype from ``template`` (this
  config's and environment's ``TrainState``, e.g. ``jax.eval_shape(trainer.init)``): a state made under another
  config would otherwise train on (or fail deep inside jit) and save a checkpoint that contradicts its config."""
  differs = leaf_mismatch(state, template)
  if differs == ():
    raise ValueError(
      "the given state is not this config's TrainState (another network, search or environment made it): pass the "
      "config and environment it was trained with"
    )
  if differs is not None:
    where, got, want = differs
    raise ValueError(
      f"the given state's {where} is {got}, this config's is {want}: the state was made under another config "
      "(num_envs, replay_capacity, network sizes, ...) or environment; pass the config it was trained with"
    )


def _save(
  ckpt: Checkpointer, state: TrainState, trainer: Trainer, env, extra: dict | None, force: bool = False
) -> bool:
  return ckpt.save(
    int(state.iteration), state, config=trainer.config, env=env, extra=extra, force=force, pool=trainer.pool
  )


def _warn_all_skipped(metrics: dict, iteration: int) -> bool:
  """Warns (once a run: returns True) at the first iteration whose learner updates all ran and were all skipped
  for a non-finite loss or gradient: the parameters did not move (the iteration's losses read NaN)."""
  skipped = float(metrics.get("learner/skipped_updates", 0))
  if not (skipped > 0 and float(metrics.get("learner/updates", 0)) == 0):
    return False
  warnings.warn(
    f"iteration {iteration}: all {skipped:.0f} learner updates were skipped for a non-finite loss or gradient, so "
    "the parameters did not change; look for NaN or inf in the environment's observations or rewards (or lower "
    "learning_rate)",
    RuntimeWarning,
    stacklevel=3,
  )
  return True


def _warn_no_episode_end(metrics: dict, config: MuZeroConfig, iteration: int) -> bool:
  """Warns when no self-play episode has ended (the iteration's `total/` counts) after every slot played four times
  ``max_episode_steps``: an environment that never returns ``terminated`` or ``truncated`` trains on one endless
  episode (``selfplay/return_mean`` reads NaN; ``max_episode_steps`` does not cut self-play; a library audit).
  True once settled (an episode ended, or warned): the driver stops asking."""
  if metrics.get("total/episodes", 1) > 0:  # one ended (or a source that does not count them)
    return True
  moves, slots = int(metrics["total/moves"]), config.num_envs
  if moves < 4 * config.max_episode_steps * slots:
    return False
  warnings.warn(
    f"iteration {iteration}: no self-play episode has ended in {moves // slots} steps of each of the "
    f"{slots} environments (max_episode_steps {config.max_episode_steps}): does env.step ever return terminated "
    "or truncated? (an episode's end is the environment's; max_episode_steps does not cut self-play)",
    RuntimeWarning,
    stacklevel=3,
  )
  return True


def _warn_long_episode(metrics: dict, config: MuZeroConfig, iteration: int) -> bool:
  """Warns (once a run: returns True) when a self-play episode ran past ``config.max_episode_steps``, from which the
  value support was sized and at which ``evaluate`` stops (an RL audit: 100-step episodes under a horizon of 5
  learned values clipped at the support's bound, and evaluation reported 5-step episodes, without a word)."""
  longest = int(metrics.get("selfplay/episode_length_max", 0))
  if longest <= config.max_episode_steps:
    return False
  bound = support.support_bound(config.support_size, config.value_transform_eps)
  warnings.warn(
    f"iteration {iteration}: a self-play episode ran {longest} steps, past max_episode_steps "
    f"({config.max_episode_steps}), from which the value support was checked (it holds returns to {bound:.4g}; "
    "larger ones are clipped in the value targets) and at which evaluate() stops an episode: raise "
    "max_episode_steps to the environment's horizon (or, if its episodes never end, make env.step return "
    "terminated or truncated)",
    RuntimeWarning,
    stacklevel=3,
  )
  return True


def _warn_truncated_values(metrics: dict, config: MuZeroConfig, iteration: int) -> bool:
  """Warns (once a run: returns True) at the first iteration with an episode cut by ``truncated`` when the value
  support cannot hold ``max_reward / (1 - discount)``. Past a cut the targets bootstrap (the value learnt is the
  return without the time limit), so the support checked against ``max_episode_steps`` steps' return can be too
  small (an RL audit: CartPole's raw observations at discount 0.997 need 333.3; support 16 holds 278.6, so the
  targets were clipped there). With discount 1 no such bound exists, and nothing is said."""
  if not int(metrics.get("selfplay/truncations", 0)) > 0 or not config.discount < 1.0:
    return False
  need = config.max_reward / (1.0 - config.discount)
  bound = support.support_bound(config.support_size, config.value_transform_eps)
  if bound >= need:
    return False
  warnings.warn(
    f"iteration {iteration}: self-play episodes were cut by the environment (truncated), whose value targets "
    f"bootstrap past the cut: values reach max_reward / (1 - discount) = {need:.4g}, beyond the value support "
    f"(it holds {bound:.4g}; larger ones are clipped in the value targets): raise support_size to "
    f"{support.support_size_for(need, config.value_transform_eps)} (or end such episodes with terminated and a "
    "time feature in the observation)",
    RuntimeWarning,
    stacklevel=3,
  )
  return True


def _warn_clipped_reward(metrics: dict, config: MuZeroConfig, iteration: int) -> bool:
  """Warns (once a run: returns True) when self-play met a reward beyond ``config.max_reward``, from which the
  supports were sized: a reward past the reward support's bound is clipped in its targets (the agent learns a
  smaller number than the environment pays), and returns may pass the value support's."""
  largest = metrics.get("selfplay/reward_abs_max", 0.0)
  if not largest > config.max_reward:
    return False
  bound = support.support_bound(config.reward_support_size, config.value_transform_eps)
  clipped = (
    f"it is clipped to {bound:.4g} in the reward targets"
    if largest > bound
    else f"the reward support holds it (to {bound:.4g}), but returns may pass the value support's bound"
  )
  warnings.warn(
    f"iteration {iteration}: self-play met a reward of {largest:g}, beyond MuZeroConfig.max_reward "
    f"({config.max_reward:g}) from which the supports were sized; {clipped}: raise max_reward (then "
    "check_supports names the support sizes it needs)",
    RuntimeWarning,
    stacklevel=3,
  )
  return True


def _rates(metrics: dict, seconds: float, config: MuZeroConfig) -> dict:
  """Throughput of one iteration of ``seconds`` and the replay ratio so far."""
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


def _host_metrics(metrics: dict, seconds: float, config: MuZeroConfig, *, first: str | None) -> dict:
  """An iteration's metrics as floats, with its speed rates.

  An iteration that compiles (``first`` names it: "first_iteration", or "first_learning_iteration" where the
  learner first runs later) has its rates left out of the speed curves; only its time is kept
  (``speed/<first>_s``).
  """
  metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
  metrics.update(_rates(metrics, seconds, config))
  if first is not None:
    metrics = {k: v for k, v in metrics.items() if not k.startswith("speed/")}
    metrics[f"speed/{first}_s"] = seconds
  return metrics


class StopOnSignal:
  """Turns the first SIGINT/SIGTERM into a flag the loop checks between iterations.

  Handlers are installed only in the main thread (elsewhere signals cannot be
  caught) and the previous ones are put back on exit. A second signal raises
  ``KeyboardInterrupt`` at once.
  """

  def __init__(self) -> None:
    self.signal: int | None = None
    self._previous: dict = {}

  def _handle(self, signum, _frame) -> None:
    if self.signal is not None:
      raise KeyboardInterrupt
    self.signal = signum

  def __enter__(self) -> StopOnSignal:
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
