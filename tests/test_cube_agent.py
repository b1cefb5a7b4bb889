"""MuZero on the cube: the smoke preset end to end, and learning on a small planted cube."""

import glob
import json
import os

import jax
import numpy as np
import pandas as pd
import pytest

import cube_env
import muzero_jax
from experiments import cube_task, train


def test_train_smoke_preset_end_to_end(tmp_path, capsys):
  logdir = str(tmp_path / "runs")
  assert train.main(["--preset", "smoke", "--iterations", "2", "--logdir", logdir]) == 0
  out = capsys.readouterr().out
  assert "held-out evaluation" in out and "random walk" in out
  assert glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
  summary = json.load(open(os.path.join(logdir, "evaluation.json")))["summary"]
  assert {"agent_return", "random_return", "agent_recall", "oracle_recall"} <= set(summary)


def _planted_cube(seed=0, n=3000):
  rng = np.random.default_rng(seed)
  df = pd.DataFrame({
      "proc": rng.choice(list("ABCD"), n), "site": rng.choice(["s1", "s2", "s3"], n),
      "urgency": rng.choice(["elective", "urgent"], n), "race": rng.choice(["W", "B", "A"], n, p=[.5, .3, .2]),
      "minutes": rng.lognormal(4, .3, n)})
  hit = (df.proc == "C") & (df.site == "s3") & (df.race == "B")
  df.loc[hit, "minutes"] *= 1.8
  schema = cube_env.Schema(dimensions=["proc", "site", "urgency"], protected=["race"], measures=["minutes"])
  return cube_env.build_cube(df, schema)


def test_agent_beats_random_walk_on_a_planted_cube():
  cube = _planted_cube()
  env, params = cube_env.make_env(cube, horizon=4, max_depth=2, z_screen=5.0)
  pool = cube_env.stack_params([params])
  config = muzero_jax.MuZeroConfig(
      channels=16, num_blocks=1, head_channels=8, latent_size=32, hidden_size=32, num_simulations=8,
      max_num_considered_actions=8, num_envs=8, rollout_length=4, replay_capacity=2048, min_replay_size=64,
      batch_size=32, unroll_steps=3, n_step=4, updates_per_iteration=4, warmup_steps=10, decay_steps=2000,
      learning_rate=3e-3, reanalyse_fraction=0.0, max_episode_steps=4, max_reward=10.0, seed=0)
  evals = cube_env.stack_params([params] * 8)
  rnd_ret, _ = cube_task.random_walk(env, evals, jax.random.PRNGKey(1), num_steps=4)
  state = muzero_jax.train(config, env, pool, num_iterations=60, progress=False)
  result = muzero_jax.evaluate(state.params, config, env, evals, jax.random.PRNGKey(1))
  agent, rnd = float(np.mean(result.returns)), float(np.mean(rnd_ret))
  print(f"agent {agent:.2f} random {rnd:.2f}")
  assert agent >= rnd + 1.0, (agent, rnd)
