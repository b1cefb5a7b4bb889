"""The speed helpers run and report consistent numbers (tiny MLP, CPU)."""

import math

import jax
import jax.numpy as jnp
import pytest

import muzero_jax as mz
from experiments.speed.suite import speedup_summary
from muzero_jax import bench
from tests.toy_envs import CoinGrid, make_coin_pool

CONFIG = mz.MuZeroConfig(
  network="mlp",
  hidden_size=16,
  latent_size=8,
  mlp_layers=1,
  support_size=5,
  reward_support_size=3,
  max_reward=3.0,
  max_episode_steps=3,
  num_simulations=4,
  max_num_considered_actions=4,
  num_envs=4,
  rollout_length=2,
  replay_capacity=64,
  n_step=1,
  unroll_steps=1,
  batch_size=8,
  reanalyse_fraction=0.25,
)


@pytest.fixture(scope="module")
def env_pool():
  env = CoinGrid(flat=True)
  return env, make_coin_pool(env, 2, seed=0)


def test_time_call_reports_compile_and_run():
  fn = jax.jit(lambda x: jnp.sin(x) * 2.0)
  t = bench.time_call(fn, jnp.ones(8), repeats=3)
  assert set(t) == {"compile_s", "first_call_s", "median_s", "min_s"}
  assert 0 < t["min_s"] <= t["median_s"] and t["compile_s"] > 0


def test_benchmark_search(env_pool):
  env, pool = env_pool
  (row,) = bench.benchmark_search(CONFIG, env, pool, batch_sizes=(4,), repeats=2)
  assert row["batch_size"] == 4 and row["num_simulations"] == 4
  assert row["simulations_per_s"] == pytest.approx(4 * 4 / row["search_s"])
  assert row["overhead_ratio"] == pytest.approx(row["search_s"] / row["network_only_s"])
  assert math.isfinite(row["overhead_ratio"]) and row["overhead_ratio"] > 0
  assert row["compile_search_s"] > 0 and row["compile_network_only_s"] > 0
  # the device as every benchmark row spells it (it said "cpu:cpu" where the others say "cpu")
  assert row["device"] == jax.devices()[0].device_kind and row["platform"] == jax.devices()[0].platform


@pytest.mark.slow
def test_benchmark_selfplay_and_learner(env_pool):
  env, pool = env_pool
  (sp,) = bench.benchmark_selfplay(CONFIG, env, pool, num_envs=(4,), repeats=1)
  assert sp["moves_per_s"] == pytest.approx(4 * CONFIG.rollout_length / sp["rollout_s"])
  assert sp["simulations_per_s"] == pytest.approx(sp["moves_per_s"] * CONFIG.num_simulations)
  (lr,) = bench.benchmark_learner(CONFIG, env, pool, batch_sizes=(8,), updates=2, repeats=1)
  assert lr["learner_loop"] == "host"  # timed as training runs its updates on a CPU
  assert lr["updates_per_s"] > 0 and lr["samples_per_s"] == pytest.approx(8 * lr["updates_per_s"])
  assert lr["reanalysed_per_update"] == 2 and lr["compile_s"] > 0


def test_benchmark_training_times_whole_iterations_after_warm_up(env_pool):
  env, pool = env_pool
  cfg = CONFIG.replace(min_replay_size=16, updates_per_iteration=2)
  row = bench.benchmark_training(cfg, env, pool, iterations=3)
  moves = cfg.num_envs * cfg.rollout_length
  assert row["moves_per_s"] == pytest.approx(moves / row["iteration_s"])
  assert row["updates_per_s"] == pytest.approx(2 / row["iteration_s"])
  # 8 moves an iteration: the replay holds 16 positions with updates only from the second iteration on.
  assert row["warmup_iterations"] >= 2 and row["timed_iterations"] == 3
  # On a CPU the updates run one by one from the host by default, with XLA's own convolution gradient.
  assert row["learner_loop"] == "host" and row["conv_gradient"] == "lax" and row["compile_s"] > 0
  assert bench.conv_gradient_kind("auto", "scan") == "patch"  # inside the scan: the im2col gradient


def test_speedup_summary_pairs_rows_with_their_reference():
  rows = [
    dict(bench="training", num_envs=8, reference=False, moves_per_s=300.0),
    dict(bench="training", num_envs=8, reference=True, moves_per_s=60.0),
    dict(bench="training", num_envs=32, reference=False, moves_per_s=500.0),  # no reference: no summary
    dict(bench="selfplay", num_envs=8, reference=True, moves_per_s=1.0),
  ]
  (row,) = speedup_summary(rows, "training")
  assert row == dict(bench="training_speedup", num_envs=8, moves_per_s=300.0, reference_moves_per_s=60.0, speedup=5.0)
  # Training rows that differ in their learner loop each get a summary over the one reference.
  loops = [
    dict(bench="training", num_envs=8, learner_loop="overlap", reference=False, moves_per_s=420.0),
    dict(bench="training", num_envs=8, learner_loop="host", reference=False, moves_per_s=240.0),
    dict(bench="training", num_envs=8, learner_loop="scan", reference=True, moves_per_s=60.0),
  ]
  assert [(r["learner_loop"], r["speedup"]) for r in speedup_summary(loops, "training")] == [
    ("host", 4.0),
    ("overlap", 7.0),
  ]
