"""The main job's recipe scored on validation cubes of the training split (output: main_job_validation_cpu.jsonl).

`python benchmarks/main_job_validation.py OUT.jsonl [ARM ...] [--seeds 0 1]`. Trains the `cpu` preset's agent
(`experiments.train`'s main job: 8 training cubes, generator seeds 1000-1007) once per arm and seed, then plays
it greedily, with the held-out check's code (`experiments.agent.held_out`), on 8 validation cubes: generator
seeds 1008-1015 of the training split (never trained on, disjoint from the held-out seeds 5000+), beside a
random walk and greedy search's own move (the argmax of `CubeEnv.expert_logits`) at the same budget. Arms
change the preset's config (`base`: as is; `imitation`: the `pretrain` preset's warm start, 200 of 400
iterations imitating greedy). One JSON line per arm, seed and cube.
"""

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import cube_env
import muzero_jax
from experiments.agent import held_out
from experiments.launch.cube_presets import PRESETS

ARMS = {"base": {}, "imitation": {"imitation_iterations": 200}}


def greedy_returns(env, pool, num_steps: int) -> np.ndarray:
  """Findings of greedy search's move (argmax of the expert's logits over legal actions) per cube."""
  num = jax.tree.leaves(pool)[0].shape[0]
  obs, state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), num), pool)

  def body(carry, k):
    obs, state, alive, ret = carry
    mask = jax.vmap(env.action_mask)(state, pool)
    logits = jnp.where(mask, jax.vmap(env.expert_logits)(obs, state, pool), -jnp.inf)
    obs, state, r, term, trunc, _ = jax.vmap(env.step)(jax.random.split(k, num), state, jnp.argmax(logits, -1), pool)
    return (obs, state, alive & ~(term | trunc), ret + jnp.where(alive, r, 0.0)), None

  init = (obs, state, jnp.ones(num, bool), jnp.zeros(num))
  (_, _, _, ret), _ = jax.jit(lambda c: jax.lax.scan(body, c, jax.random.split(jax.random.PRNGKey(1), num_steps)))(init)
  return np.asarray(ret)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("out")
  parser.add_argument("arms", nargs="*", default=list(ARMS))
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  args = parser.parse_args()
  preset = PRESETS["cpu"]
  task = preset.task
  train_set = cube_env.make_cubes(task, split="train")
  wide = cube_env.make_cubes(dataclasses.replace(task, num_train_cubes=2 * task.num_train_cubes), split="train")
  n = task.num_train_cubes
  val_set = cube_env.CubeSet(wide.cubes[n:], wide.truths[n:], wide.seeds[n:], wide.scenarios[n:])
  env, (train_pool, val_pool) = cube_env.make_pool(task, [train_set, val_set])
  greedy = greedy_returns(env, val_pool, task.horizon)
  for arm in args.arms:
    for seed in args.seeds:
      config = preset.config.replace(seed=seed, **ARMS[arm])
      t0 = time.perf_counter()
      state = muzero_jax.train(config, env, train_pool, logdir=None, num_iterations=preset.iterations)
      seconds = time.perf_counter() - t0
      rows = held_out.evaluate_held_out(task, env, state.params, config, val_set, val_pool, seed=seed)
      with open(args.out, "a") as fh:
        for i, row in enumerate(rows):
          fh.write(json.dumps(dict(arm=arm, train_seed=seed, greedy_return=float(greedy[i]), train_s=seconds, **row)))
          fh.write("\n")
      mean = {k: float(np.mean([r[k] for r in rows])) for k in ("agent_return", "agent_recall", "random_return")}
      print(arm, seed, json.dumps(mean), "greedy", float(greedy.mean()), f"{seconds:.0f} s", flush=True)


if __name__ == "__main__":
  main()
