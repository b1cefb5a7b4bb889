"""Greedy evaluation during CartPole training: the driver's `callback`, not a fork of the loop."""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import numpy as np

import muzero_jax
from experiments.control.cartpole import TARGET_RETURN

__all__ = ["EvalRecord", "PeriodicEvaluation"]


@dataclasses.dataclass
class EvalRecord:
  """One greedy evaluation (`episodes` episodes, one per evaluation-pool entry)."""

  iteration: int
  updates: int
  moves: int
  train_s: float  # wall seconds since training started, evaluation time excluded (compilation included)
  train_cpu_s: float  # CPU seconds of this process over the same span (all threads; evaluation excluded)
  return_mean: float
  return_std: float
  return_min: float
  return_max: float
  episodes: int
  eval_s: float


EVAL_RUN = "eval"  # the TensorBoard run (a subdirectory of the training's logdir) of the evaluation curves


class PeriodicEvaluation:
  """`callback(state, metrics)` for `muzero_jax.train`: greedy evaluation every `every_s` seconds.

  The clock starts when the object is made (build it just before training, so
  compilation counts), at `start_s` (and `start_cpu_s`) training seconds for a
  resumed run, and pauses while evaluating. Each evaluation writes
  TensorBoard scalars: `eval/return_mean` (and min, std) at the training
  iteration, `eval/return_vs_moves` at step = self-play moves and
  `eval/return_vs_seconds` at step = training seconds, in the run `EVAL_RUN`
  (a subdirectory of `logdir`): in `logdir` itself a resumed run's restart marker
  (`muzero_jax.train`'s purge step, an iteration) made TensorBoard drop every
  evaluation at a larger step, moves and seconds included (an audit: a resumed
  CartPole run's curves lost their later points). Returns True (stop
  training) once the mean reaches `target` when `stop_at_target`.
  """

  def __init__(
    self,
    config,
    env,
    eval_pool,
    *,
    every_s: float,
    logdir: str | None = None,
    target: float = TARGET_RETURN,
    stop_at_target: bool = True,
    seed: int = 0,
    max_train_s: float | None = None,
    verbose: bool = True,
    start_s: float = 0.0,
    start_cpu_s: float = 0.0,
  ) -> None:
    self.config, self.env, self.eval_pool = config, env, eval_pool
    self.every_s, self.target, self.stop_at_target = every_s, target, stop_at_target
    self.max_train_s, self.verbose, self.seed = max_train_s, verbose, seed
    self.history: list[EvalRecord] = []
    self.reached: EvalRecord | None = None
    self._start = time.perf_counter() - start_s
    self._start_cpu = time.process_time() - start_cpu_s
    self._paused = 0.0
    self._paused_cpu = 0.0
    self._last_eval = start_s
    self._logger = muzero_jax.MetricsLogger(
      None if logdir is None else os.path.join(logdir, EVAL_RUN), filename_suffix=".eval"
    )

  def train_seconds(self) -> float:
    """Wall seconds of training so far (evaluation excluded)."""
    return time.perf_counter() - self._start - self._paused

  def train_cpu_seconds(self) -> float:
    """CPU seconds this process spent training so far (evaluation excluded); on a shared machine this is
    what the run would need of the cores it had to itself."""
    return time.process_time() - self._start_cpu - self._paused_cpu

  def evaluate(self, state) -> EvalRecord:
    """Greedy episodes on every entry of the evaluation pool now; logged and kept in `history`."""
    train_s, train_cpu_s = self.train_seconds(), self.train_cpu_seconds()
    t0, c0 = time.perf_counter(), time.process_time()
    key = jax.random.fold_in(jax.random.PRNGKey(self.seed), int(state.iteration))
    result = muzero_jax.evaluate(state.params, self.config, self.env, self.eval_pool, key)
    returns = np.asarray(result.returns, np.float64)
    eval_s = time.perf_counter() - t0
    self._paused += eval_s
    self._paused_cpu += time.process_time() - c0
    rec = EvalRecord(
      iteration=int(state.iteration),
      updates=int(state.updates),
      moves=int(state.moves),
      train_s=train_s,
      train_cpu_s=train_cpu_s,
      return_mean=float(returns.mean()),
      return_std=float(returns.std()),
      return_min=float(returns.min()),
      return_max=float(returns.max()),
      episodes=len(returns),
      eval_s=eval_s,
    )
    self.history.append(rec)
    if self.reached is None and rec.return_mean >= self.target:
      self.reached = rec
    self._logger.write(
      rec.iteration, {f"eval/{n}": getattr(rec, n) for n in ("return_mean", "return_min", "return_std")}
    )
    self._logger.write(rec.moves, {"eval/return_vs_moves": rec.return_mean})
    self._logger.write(int(round(rec.train_s)), {"eval/return_vs_seconds": rec.return_mean})
    self._logger.flush()
    if self.verbose:
      print(
        f"eval: iteration {rec.iteration}, {rec.moves} moves, {rec.train_s:.0f} s ({rec.train_cpu_s:.0f} CPU s): "
        f"mean return {rec.return_mean:.1f} (min {rec.return_min:.0f}, {rec.episodes} greedy episodes, "
        f"{eval_s:.1f} s)",
        flush=True,
      )
    return rec

  def __call__(self, state, metrics) -> bool:
    del metrics
    now = self.train_seconds()
    if now - self._last_eval >= self.every_s:
      self._last_eval = now
      self.evaluate(state)
      if self.stop_at_target and self.reached is not None:
        return True
    return self.max_train_s is not None and self.train_seconds() >= self.max_train_s

  def close(self) -> None:
    """Flushes and closes the TensorBoard writer."""
    self._logger.close()
