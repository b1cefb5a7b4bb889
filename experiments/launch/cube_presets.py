"""The sizes of a cube training run (`python -m experiments.train --preset NAME`), defined once.

`smoke` (well under a minute on 2 CPU cores) and `cpu` (the default) train on the synthetic
generator's cubes; `pretrain` is `cpu`'s agent on random training worlds of the `standard` and
`masked` families (`cube_env.worlds`, training split only): the packaged agent's recipe
(`experiments/agent/pretrained.npz`); `gpu` is that recipe at GPU sizes (a larger network and search,
256 environments, batch 512), about 540 s on an H200 (measured to iteration 51; see below). `cpu` and `pretrain`
spend their first 200 of 400 iterations (`gpu` 32 of 64) imitating greedy search
(`MuZeroConfig.imitation_iterations`, `CubeEnv.expert_logits`), then play their own searches; `cpu`
took that warm start on validation cubes of the training split (mean findings a cube 1.31 against
0.44 without it over two training seeds), and then greedy's preference inside its search
(`MuZeroConfig.expert_prior` 0.2: 2.31 a cube, greedy search's own episode 2.125), and no reanalysis
(`reanalyse_fraction` 0: 3.06 a cube in 0.69x the training time; `pretrain` and `gpu` keep a quarter
of each batch reanalysed, the packaged agent's recipe), and each iteration's updates beside its
self-play (`MuZeroConfig.learner_loop` "overlap": 2.94 a cube against 2.50 with the updates after it,
recall 0.75 against 0.65, in 0.75x the training time; `pretrain` keeps its loop); `benchmarks/README.md`,
the main job's recipe on validation cubes.
The episode length of the agent's config is the task's horizon (the query budget).
"""

from __future__ import annotations

import dataclasses

import cube_env
import muzero_jax

__all__ = ["PRESETS", "CubePreset"]


@dataclasses.dataclass(frozen=True)
class CubePreset:
  """A named size of the cube run: which cubes, the agent's config, and how long to train."""

  task: cube_env.CubeTask
  config: muzero_jax.MuZeroConfig  # config.max_episode_steps == task.horizon
  iterations: int


def _preset(task: cube_env.CubeTask, iterations: int, **config) -> CubePreset:
  return CubePreset(
    task=task, config=muzero_jax.MuZeroConfig(max_episode_steps=task.horizon, **config), iterations=iterations
  )


# The cpu agent's network, search and learner sizes and its warm start, shared by `cpu` and `pretrain` (other
# cubes; `cpu` also has the expert prior and no reanalysis).
_CPU_AGENT = dict(
  imitation_iterations=200,
  channels=16,
  num_blocks=1,
  head_channels=8,
  latent_size=32,
  hidden_size=32,
  num_simulations=8,
  max_num_considered_actions=8,
  num_envs=8,
  rollout_length=8,
  replay_capacity=8192,
  min_replay_size=128,
  batch_size=32,
  updates_per_iteration=4,
  warmup_steps=20,
  decay_steps=5000,
)

PRESETS: dict[str, CubePreset] = {
  "smoke": _preset(
    cube_env.CubeTask(num_train_cubes=2, num_eval_cubes=2, n_rows=2500, horizon=8, max_depth=2),
    iterations=3,
    channels=8,
    num_blocks=1,
    head_channels=4,
    latent_size=16,
    hidden_size=16,
    num_simulations=4,
    max_num_considered_actions=4,
    num_envs=4,
    rollout_length=8,
    replay_capacity=512,
    min_replay_size=32,
    batch_size=16,
    unroll_steps=3,
    n_step=3,
    updates_per_iteration=2,
    warmup_steps=5,
    decay_steps=200,
  ),
  "cpu": _preset(
    cube_env.CubeTask(num_train_cubes=8, num_eval_cubes=4, n_rows=4000, horizon=16, max_depth=3),
    iterations=400,
    expert_prior=0.2,
    reanalyse_fraction=0.0,
    learner_loop="overlap",
    **_CPU_AGENT,
  ),
  "pretrain": _preset(
    cube_env.CubeTask(
      families=("standard", "masked"), num_train_cubes=8, num_eval_cubes=4, n_rows=6000, horizon=16, max_depth=3
    ),
    iterations=400,
    **_CPU_AGENT,
  ),
  # `pretrain`'s recipe at GPU sizes (random worlds of the training split, half the iterations imitating greedy
  # search, a quarter of each batch reanalysed). Measured on one H200 (2026-12-04, benchmarks/README.md): drawing
  # the 16 + 4 worlds of 20,000 rows 197.5 s with other jobs on the CPUs (57 s on an idle 2-core machine), the first
  # iteration 78.6 s (compilation), then 5.9-6.8 s an iteration on the 21 x 13 grid; 64 iterations take about
  # 60 + 79 (the first iteration) + 63 x 6.3, some 540 s on an idle machine, one 600 s call near its edge (that
  # session reached iteration 51 in two calls). Warm-up and decay span the run's 1,024 updates.
  "gpu": _preset(
    cube_env.CubeTask(
      families=("standard", "masked"), num_train_cubes=16, num_eval_cubes=4, n_rows=20000, horizon=64, max_depth=3
    ),
    iterations=64,
    imitation_iterations=32,
    channels=64,
    num_blocks=4,
    num_simulations=32,
    num_envs=256,
    rollout_length=32,
    support_size=30,
    replay_capacity=262144,
    batch_size=512,
    updates_per_iteration=16,
    decay_steps=64 * 16 - 100,  # MuZeroConfig.warmup_steps 100 first
  ),
}
