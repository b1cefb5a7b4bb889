"""muzero_jax: MuZero in JAX (Flax networks, mctx search, Anakin self-play).

Trains on any pure-functional environment that follows the protocol of
:mod:`muzero_jax.env_protocol` (gymnax 1.0 style, no auto-reset; checked by
:func:`check_env`), over a pool of environment instances (env params pytree
with leaves ``[P, ...]``).

    trainer = muzero_jax.make_train(config, env, env_params_pool)
    state = trainer.init()
    state, metrics = trainer.iteration(state)        # jitted: self-play + replay + updates
    result = trainer.evaluate(state.params, env_params_batch, key)

or simply ``state = muzero_jax.train(config, env, env_params_pool, num_iterations=...)``
(the driver loop: checkpoints, resume, signals, TensorBoard). Self-play on Ray
actors is :func:`muzero_jax.distributed.train_distributed` (same driver, same
checkpoints; ``pip install -e '.[ray]'``).

Checkpoints (Orbax): ``muzero_jax.save(dir, state, config, env=env)``,
``muzero_jax.restore(dir, env, pool).state`` to continue exactly, and
``muzero_jax.load_params(dir)`` for inference (parameters only).
"""

from muzero_jax.bench import benchmark_learner, benchmark_search, benchmark_selfplay, benchmark_training
from muzero_jax.checkpoint import (
  Checkpointer,
  CheckpointSaveError,
  CheckpointWarning,
  Restored,
  env_spec,
  load_params,
  restore,
  save,
)
from muzero_jax.config import MuZeroConfig
from muzero_jax.driver import IterationAbandoned, IterationSource, run_iterations, train
from muzero_jax.env_protocol import Environment, check_env, check_env_shapes
from muzero_jax.metrics_logger import MetricsLogger
from muzero_jax.networks import MuZeroNetwork, make_network, uses_conv_policy
from muzero_jax.replay import Replay, Trajectory
from muzero_jax.search import SearchOutput, max_backup_qvalues, run_search
from muzero_jax.selfplay import (
  ActorState,
  EvalResult,
  act,
  bias_from_expert,
  evaluate,
  expert_bias,
  make_evaluate,
)
from muzero_jax.supervised import FineTuneConfig, MarkedPositions, fine_tune
from muzero_jax.support import check_support
from muzero_jax.trainer import Trainer, TrainState, learn_from_rollout, make_train

__all__ = [
  "MuZeroConfig",
  "MuZeroNetwork",
  "make_network",
  "uses_conv_policy",
  "Environment",
  "check_env",
  "check_env_shapes",
  "SearchOutput",
  "run_search",
  "max_backup_qvalues",
  "act",
  "EvalResult",
  "bias_from_expert",
  "evaluate",
  "expert_bias",
  "make_evaluate",
  "ActorState",
  "Replay",
  "Trajectory",
  "TrainState",
  "Trainer",
  "make_train",
  "learn_from_rollout",
  "train",
  "run_iterations",
  "IterationSource",
  "IterationAbandoned",
  "Checkpointer",
  "CheckpointSaveError",
  "CheckpointWarning",
  "Restored",
  "save",
  "restore",
  "load_params",
  "env_spec",
  "MetricsLogger",
  "check_support",
  "FineTuneConfig",
  "MarkedPositions",
  "fine_tune",
  "benchmark_search",
  "benchmark_selfplay",
  "benchmark_learner",
  "benchmark_training",
]
