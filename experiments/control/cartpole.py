"""The CartPole-v1 task for `muzero_jax`: the environment, its presets and the solved threshold.

Choices for this task (see also :mod:`experiments.control.gymnax_env`):

* the observation carries the fraction of the 500-step limit used, so that
  `muzero_jax`'s "episode end = terminal" value targets are exact at the time
  limit (Pardo et al. 2018);
* discount 0.99 (horizon ~100 steps, ample to balance a pole), so discounted
  returns stay below 100 and fit a value support of [-10, 10] after MuZero's
  transform h; rewards are 1 (a reward support of [-1, 1]);
* a small MLP (4+1 inputs, 2 actions) and Gumbel MuZero with both actions
  considered and few simulations (Danihelka et al. 2022: policy improvement
  holds with few simulations); many environments stepped together (Anakin).
"""

from __future__ import annotations

import dataclasses

import muzero_jax
from experiments.control import gymnax_env

__all__ = ["PRESETS", "TARGET_RETURN", "CartPolePreset", "CartPoleTask", "make_cartpole", "make_config"]

TARGET_RETURN = 475.0
"""CartPole-v1's "solved" threshold (Gym's `reward_threshold`): mean return over 100 episodes."""

_COMMON = dict(
  network="mlp",
  support_size=10,
  reward_support_size=1,
  max_reward=1.0,
  max_episode_steps=500,
  discount=0.99,
  search="gumbel",
  max_num_considered_actions=2,
  reanalyse_fraction=0.0,
  value_loss_weight=0.25,
  learning_rate=3e-3,
  warmup_steps=100,
  decay_steps=20000,
)


@dataclasses.dataclass(frozen=True)
class CartPolePreset:
  """A named size of the CartPole run."""

  config: muzero_jax.MuZeroConfig
  iterations: int  # training iterations of a run (it stops earlier once solved)
  eval_every_s: float  # seconds of training between greedy evaluations


def _cartpole_config(**sizes) -> muzero_jax.MuZeroConfig:
  return muzero_jax.MuZeroConfig.from_dict({**_COMMON, **sizes})


PRESETS: dict[str, CartPolePreset] = {
  # Tests: the smallest useful config; ~10 s of training (250 iterations) lifts the greedy mean return
  # from 9 to about 100 (compilation takes longer than that on 2 cores).
  "smoke": CartPolePreset(
    config=_cartpole_config(
      hidden_size=32,
      latent_size=16,
      mlp_layers=1,
      num_simulations=4,
      num_envs=16,
      rollout_length=16,
      replay_capacity=16 * 256,
      min_replay_size=256,
      n_step=5,
      unroll_steps=3,
      batch_size=64,
      updates_per_iteration=4,
    ),
    iterations=250,
    eval_every_s=60.0,
  ),
  # This machine (2 CPU cores): solves CartPole (greedy mean >= 475 over 100 episodes) in 1-3 minutes
  # (benchmarks/cartpole_cpu.jsonl); 1 sampled position per self-play move.
  "cpu": CartPolePreset(
    config=_cartpole_config(
      hidden_size=64,
      latent_size=32,
      mlp_layers=2,
      num_simulations=8,
      num_envs=32,
      rollout_length=16,
      replay_capacity=32 * 1000,
      min_replay_size=1000,
      n_step=10,
      unroll_steps=5,
      batch_size=128,
      updates_per_iteration=4,
    ),
    iterations=6000,
    eval_every_s=60.0,
  ),
  # An accelerator: more environments and a larger batch per iteration (not measured here: no GPU).
  "gpu": CartPolePreset(
    config=_cartpole_config(
      hidden_size=128,
      latent_size=64,
      mlp_layers=2,
      num_simulations=16,
      num_envs=256,
      rollout_length=16,
      replay_capacity=256 * 500,
      min_replay_size=4096,
      n_step=10,
      unroll_steps=5,
      batch_size=512,
      updates_per_iteration=8,
    ),
    iterations=3000,
    eval_every_s=120.0,
  ),
  # The peer's settings where muzero_jax has them (werner-duvaud/muzero-general games/cartpole.py):
  # PUCT with 50 simulations, discount 0.997, batch 128, unroll 10, td 50, one game at a time,
  # encoding 8 and hidden layers of 16, value loss weight 1, Adam at 0.02, 1.5 training steps per
  # move (its `ratio`). For speed comparisons.
  "peer": CartPolePreset(
    config=_cartpole_config(
      search="muzero",
      num_simulations=50,
      discount=0.997,
      support_size=16,
      hidden_size=16,
      latent_size=8,
      mlp_layers=1,
      num_envs=1,
      rollout_length=50,
      replay_capacity=50_000,
      min_replay_size=500,
      n_step=50,
      unroll_steps=10,
      batch_size=128,
      updates_per_iteration=75,
      value_loss_weight=1.0,
      learning_rate=0.02,
      weight_decay=0.0,
      dirichlet_alpha=0.25,
    ),
    iterations=2000,
    eval_every_s=120.0,
  ),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class CartPoleTask:
  """The environment and how it is evaluated (stored in checkpoints to rebuild it on resume)."""

  name: str = "CartPole-v1"
  """gymnax environment id."""
  time_feature: bool = True
  """Append the fraction of the time limit used to the observation."""
  eval_episodes: int = 100
  """Greedy episodes per evaluation."""
  target_return: float = TARGET_RETURN
  """Mean greedy return that counts as solved (training stops there)."""


def make_cartpole(task: CartPoleTask):
  """`(env, train_pool, eval_pool)`: the adapter, a one-entry training pool, `eval_episodes` copies."""
  env = gymnax_env.GymnaxEnv(task.name, time_feature=task.time_feature)
  return env, gymnax_env.params_pool(task.name, 1), gymnax_env.params_pool(task.name, task.eval_episodes)


def make_config(preset: str = "cpu", **overrides) -> muzero_jax.MuZeroConfig:
  """The preset's config with `overrides` (unknown names raise `ValueError`)."""
  if preset not in PRESETS:
    raise ValueError(f"unknown cartpole preset {preset!r}; choose one of {sorted(PRESETS)}")
  return PRESETS[preset].config.replace(**overrides)
