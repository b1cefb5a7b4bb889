"""The main job's recipe scored on validation cubes of the training split.

`python benchmarks/main_job_validation.py OUT.jsonl [ARM ...] [--seeds 0 1] [--eval-expert-prior B ...]`
(outputs: main_job_validation_cpu.jsonl, main_job_validation_prior_cpu.jsonl). Trains the `cpu` preset's
agent (`experiments.train`'s main job: 8 training cubes, generator seeds 1000-1007) once per arm and seed,
then plays it greedily, with the held-out check's code (`experiments.agent.held_out`), on 8 validation
cubes: generator seeds 1008-1015 of the training split (never trained on, disjoint from the held-out seeds
5000+), beside a random walk and greedy search's episode (`cube_env.greedy_rollouts`) at the same budget.
Arms set the warm start, the prior and the learner loop (`MuZeroConfig.learner_loop`, "auto" unless the arm
says), whatever the preset holds now: `base` (neither, the preset before
2026-12-01), `imitation` (200 of 400 iterations imitating greedy), `prior` (that and
`MuZeroConfig.expert_prior` 0.2 in training; the preset since), `envs32` (that with 32 self-play
environments instead of 8), `envs32_short` (the same in 280 iterations, 140 imitating), `rf0` (`prior`
without reanalysis; the preset since), `rf0_envs16` (that with 16 environments) and `rf0_overlap` (`rf0` with
`MuZeroConfig.learner_loop="overlap"`). `--eval-expert-prior`
plays each trained agent once per value given (default: the value it was trained with). One JSON line per arm,
seed, value and cube. The rows of the first run (main_job_validation_cpu.jsonl) carry greedy's findings a cube but not
its recall (computed by this script's own copy of `greedy_rollouts` then).
"""

import argparse
import dataclasses
import json
import time

import numpy as np

import cube_env
import muzero_jax
from experiments.agent import held_out
from experiments.launch.cube_presets import PRESETS

ARMS = {
  "base": {"imitation_iterations": 0, "expert_prior": 0.0},
  "imitation": {"imitation_iterations": 200, "expert_prior": 0.0},
  "prior": {"imitation_iterations": 200, "expert_prior": 0.2},
  # Wider self-play (issue 15 point 4): 32 environments a step instead of 8, 4x the moves per update.
  "envs32": {"imitation_iterations": 200, "expert_prior": 0.2, "num_envs": 32},
  # The same in about the `prior` arm's wall time: 280 iterations, the first 140 imitating greedy.
  "envs32_short": {"imitation_iterations": 140, "expert_prior": 0.2, "num_envs": 32, "iterations": 280},
  # No reanalysis (about 1.6x the moves/s), with 8 or 16 environments.
  "rf0": {"imitation_iterations": 200, "expert_prior": 0.2, "reanalyse_fraction": 0.0},
  "rf0_envs16": {"imitation_iterations": 200, "expert_prior": 0.2, "reanalyse_fraction": 0.0, "num_envs": 16},
  # `rf0` with each iteration's updates run beside its self-play, on the replay before its moves (issue 15 point 4).
  "rf0_overlap": {
    "imitation_iterations": 200,
    "expert_prior": 0.2,
    "reanalyse_fraction": 0.0,
    "learner_loop": "overlap",
  },
}


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("out")
  parser.add_argument("arms", nargs="*", default=list(ARMS))
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  parser.add_argument(
    "--eval-expert-prior",
    type=float,
    nargs="+",
    default=None,
    help="MuZeroConfig.expert_prior values to play with (default: the one trained with)",
  )
  args = parser.parse_args()
  preset = PRESETS["cpu"]
  task = preset.task
  train_set = cube_env.make_cubes(task, split="train")
  wide = cube_env.make_cubes(dataclasses.replace(task, num_train_cubes=2 * task.num_train_cubes), split="train")
  n = task.num_train_cubes
  val_set = cube_env.CubeSet(wide.cubes[n:], wide.truths[n:], wide.seeds[n:], wide.scenarios[n:])
  env, (train_pool, val_pool) = cube_env.make_pool(task, [train_set, val_set])
  for arm in args.arms:
    for seed in args.seeds:
      fields = {"learner_loop": "auto", **ARMS[arm]}  # the arms before `rf0_overlap` ran the default loop
      iterations = fields.pop("iterations", preset.iterations)
      config = preset.config.replace(seed=seed, **fields)
      t0 = time.perf_counter()
      state = muzero_jax.train(config, env, train_pool, logdir=None, num_iterations=iterations)
      seconds = time.perf_counter() - t0
      for prior in [config.expert_prior] if args.eval_expert_prior is None else args.eval_expert_prior:
        played = config.replace(expert_prior=prior)
        rows = held_out.evaluate_held_out(task, env, state.params, played, val_set, val_pool, seed=seed)
        with open(args.out, "a") as fh:
          for row in rows:
            fh.write(
              json.dumps(
                dict(arm=arm, train_seed=seed, iterations=iterations, eval_expert_prior=prior, train_s=seconds, **row)
              )
            )
            fh.write("\n")
        names = ("agent_return", "agent_recall", "random_return", "greedy_return", "greedy_recall")
        mean = {k: float(np.mean([r[k] for r in rows])) for k in names}
        print(arm, seed, prior, json.dumps(mean), f"{seconds:.0f} s", flush=True)


if __name__ == "__main__":
  main()
