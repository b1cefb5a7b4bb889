"""A training process for the kill-and-resume tests: ``python -m tests.checkpoint_worker DIR TOTAL [EVERY]``.

Trains the tiny CoinGrid config below up to ``TOTAL`` iterations in all,
checkpointing every ``EVERY`` (default 1) iterations into ``DIR``; when ``DIR`` already holds
checkpoints it resumes from the newest good one (as ``experiments.train
--resume`` does). The parent kills it with SIGKILL at random moments, or
interrupts it with SIGINT (then it saves, prints where and exits with 130).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import muzero_jax as mz
from tests.toy_envs import CoinGrid, make_coin_pool

CONFIG = mz.MuZeroConfig(
  seed=3,
  network="mlp",
  hidden_size=32,
  latent_size=16,
  mlp_layers=1,
  support_size=5,
  reward_support_size=3,
  max_reward=3.0,
  max_episode_steps=3,
  discount=1.0,
  num_simulations=4,
  max_num_considered_actions=4,
  num_envs=8,
  rollout_length=4,
  replay_capacity=512,
  min_replay_size=16,
  n_step=2,
  unroll_steps=2,
  batch_size=16,
  updates_per_iteration=2,
  reanalyse_fraction=0.25,
  warmup_steps=2,
  learning_rate=3e-3,
  checkpoint_every=1,
  checkpoints_to_keep=3,
)


def make_setup():
  env = CoinGrid(flat=True)
  return env, make_coin_pool(env, 4, seed=0)


def main(directory: str, total: int, every: int = 1) -> int:
  env, pool = make_setup()
  config = CONFIG.replace(checkpoint_every=every)
  ckpt = mz.Checkpointer(directory)
  has_steps = bool(ckpt.all_steps())
  ckpt.close()
  state = mz.restore(directory, env, pool, config=config, quarantine=True).state if has_steps else None
  done = int(state.iteration) if state is not None else 0
  print(f"start at iteration {done}", flush=True)
  report = lambda state, _metrics: print(f"iteration {int(state.iteration)}", flush=True)  # noqa: E731
  try:
    mz.train(
      config,
      env,
      pool,
      checkpoint_dir=directory,
      num_iterations=total - done,
      state=state,
      callback=report,
      progress=False,
    )
  except KeyboardInterrupt as err:
    print(f"interrupted: {err}", flush=True)
    return 130
  print("finished", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1], *map(int, sys.argv[2:])))
