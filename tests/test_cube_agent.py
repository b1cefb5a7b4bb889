"""MuZero on the cube: the smoke preset end to end, and learning on a small planted cube."""

import glob
import json
import os
import pathlib
import struct

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pandas as pd
import pytest
import tyro
from tensorboardX.proto import event_pb2

import cube_env
import muzero_jax
from experiments import train, tune
from experiments.agent.loading import load_agent
from experiments.launch.cube_presets import PRESETS
from experiments.quality import tuning
from experiments.quality.summary import sweep_window


def test_train_smoke_preset_end_to_end(tmp_path, capsys):
  logdir = str(tmp_path / "runs")
  assert train.main(["--preset", "smoke", "--iterations", "2", "--logdir", logdir]) == 0
  out = capsys.readouterr().out
  assert "held-out evaluation" in out and "random walk" in out and "greedy search" in out
  assert glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
  summary = json.loads(pathlib.Path(logdir, "evaluation.json").read_text())["summary"]
  assert {"agent_return", "random_return", "greedy_return", "agent_recall", "greedy_recall"} <= set(summary)
  assert 0.0 <= summary["greedy_recall"] <= summary["oracle_recall"] <= 1.0


def _planted_cube(seed=0, n=3000):
  rng = np.random.default_rng(seed)
  df = pd.DataFrame(
    {
      "proc": rng.choice(list("ABCD"), n),
      "site": rng.choice(["s1", "s2", "s3"], n),
      "urgency": rng.choice(["elective", "urgent"], n),
      "race": rng.choice(["W", "B", "A"], n, p=[0.5, 0.3, 0.2]),
      "minutes": rng.lognormal(4, 0.3, n),
    }
  )
  hit = (df.proc == "C") & (df.site == "s3") & (df.race == "B")
  df.loc[hit, "minutes"] *= 1.8
  schema = cube_env.Schema(dimensions=["proc", "site", "urgency"], protected=["race"], measures=["minutes"])
  return cube_env.build_cube(df, schema)


def test_agent_beats_random_walk_on_a_planted_cube():
  cube = _planted_cube()
  env, params = cube_env.make_env(cube, horizon=4, max_depth=2, z_screen=5.0)
  pool = cube_env.stack_params([params])
  config = muzero_jax.MuZeroConfig(
    channels=16,
    num_blocks=1,
    head_channels=8,
    latent_size=32,
    hidden_size=32,
    num_simulations=8,
    max_num_considered_actions=8,
    num_envs=8,
    rollout_length=4,
    replay_capacity=2048,
    min_replay_size=64,
    batch_size=32,
    unroll_steps=3,
    n_step=4,
    updates_per_iteration=4,
    warmup_steps=10,
    decay_steps=2000,
    learning_rate=3e-3,
    reanalyse_fraction=0.0,
    max_episode_steps=4,
    max_reward=10.0,
    seed=0,
  )
  evals = cube_env.stack_params([params] * 8)
  rnd_ret, _ = cube_env.random_rollouts(env, evals, jax.random.PRNGKey(1), num_steps=4)
  state = muzero_jax.train(config, env, pool, num_iterations=60, progress=False)
  result = muzero_jax.evaluate(state.params, config, env, evals, jax.random.PRNGKey(1))
  agent, rnd = float(np.mean(result.returns)), float(np.mean(rnd_ret))
  print(f"agent {agent:.2f} random {rnd:.2f}")
  assert agent >= rnd + 1.0, (agent, rnd)


def test_greedy_rollouts_take_the_strongest_legal_target_each_step():
  """Replayed on the host one step at a time: each action is the masked argmax of the expert; returns add up."""
  env, params = cube_env.make_env(_planted_cube(), horizon=5, max_depth=2, z_screen=5.0)
  pool = cube_env.stack_params([params] * 2)
  ret, actions = cube_env.greedy_rollouts(env, pool, jax.random.PRNGKey(3), num_steps=5)
  assert actions.shape == (2, 5) and np.all(np.asarray(actions) == np.asarray(actions)[:1])  # deterministic
  step, expert, legal = jax.jit(env.step), jax.jit(env.expert_logits), jax.jit(env.action_mask)
  obs, state = jax.jit(env.reset)(jax.random.PRNGKey(0), params)
  total = 0.0
  for t in range(5):
    logits = np.where(np.asarray(legal(state, params)), np.asarray(expert(obs, state, params)), -np.inf)
    assert int(actions[0, t]) == int(np.argmax(logits))
    obs, state, reward, term, trunc, _ = step(jax.random.PRNGKey(t), state, int(actions[0, t]), params)
    total += float(reward)
    if bool(term | trunc):
      assert np.all(np.asarray(actions)[0, t + 1 :] == -1)
      break
  assert float(ret[0]) == pytest.approx(total) and total >= 1.0  # greedy reaches the planted cohort


def test_a_strong_expert_prior_makes_the_agents_search_play_greedy_search():
  """MuZeroConfig.expert_prior: with a large weight the root's prior is the expert's, so even an untrained agent's
  greedy episode is greedy search's (cube_env.greedy_rollouts); with 0 it is not; a negative weight is refused."""
  env, params = cube_env.make_env(_planted_cube(), horizon=5, max_depth=2, z_screen=5.0)
  pool = cube_env.stack_params([params] * 2)
  config = PRESETS["smoke"].config.replace(max_episode_steps=5)
  agent = muzero_jax.make_train(config, env, pool).init().params
  _, greedy = cube_env.greedy_rollouts(env, pool, jax.random.PRNGKey(0), num_steps=5)
  strong = muzero_jax.evaluate(agent, config.replace(expert_prior=100.0), env, pool, jax.random.PRNGKey(0))
  plain = muzero_jax.evaluate(agent, config, env, pool, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(np.asarray(strong.actions), np.asarray(greedy))
  assert not np.array_equal(np.asarray(plain.actions), np.asarray(greedy))
  for bad in (-1.0, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="expert_prior must be a finite number"):
      config.replace(expert_prior=bad)
  # The main job's preset: warm start, prior and no reanalysis, chosen on validation cubes (benchmarks/README.md).
  cpu, pretrain = PRESETS["cpu"].config, PRESETS["pretrain"].config
  assert (cpu.imitation_iterations, cpu.expert_prior, cpu.reanalyse_fraction) == (200, 0.2, 0.0)
  assert (pretrain.imitation_iterations, pretrain.expert_prior, pretrain.reanalyse_fraction) == (200, 0.0, 0.25)
  assert (cpu.learner_loop, pretrain.learner_loop) == ("overlap", "auto")  # updates beside self-play, validated
  # `gpu` is pretrain's recipe at GPU sizes: its worlds, half its iterations imitating, its reanalysis; the
  # learning-rate schedule (warm-up, then decay) spans the run's updates.
  gpu = PRESETS["gpu"]
  assert gpu.task.families == PRESETS["pretrain"].task.families == ("standard", "masked")
  assert 2 * gpu.config.imitation_iterations == gpu.iterations
  assert (gpu.config.expert_prior, gpu.config.reanalyse_fraction) == (0.0, 0.25)
  assert gpu.config.warmup_steps + gpu.config.decay_steps == gpu.iterations * gpu.config.updates_per_iteration
  # A row with no legal action gets no bias and no NaN; legal entries are beta x the expert's log-softmax.
  logits, mask = jnp.array([[3.0, 1.0, 0.0], [2.0, 5.0, 1.0]]), jnp.array([[True, True, False], [False] * 3])
  bias = np.asarray(muzero_jax.bias_from_expert(logits, mask, config.replace(expert_prior=0.5)))
  np.testing.assert_allclose(bias[0, :2], 0.5 * np.log(np.exp([3.0, 1.0]) / np.exp([3.0, 1.0]).sum()), rtol=1e-6)
  assert bias[0, 2] == 0.0 and np.all(bias[1] == 0.0)


def _event_steps(logdir, tag):
  """Steps at which `tag` was written, over every TensorBoard event file of `logdir` (TFRecord framing)."""
  steps = []
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    data = pathlib.Path(path).read_bytes()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos : pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
      pos += 12 + length + 4
      steps += [event.step for v in event.summary.value if v.tag == tag]
  return sorted(steps)


def test_cli_resume_is_bit_exact_and_checks_flags(tmp_path, capsys):
  """smoke preset: 4 iterations in one go == 2 iterations, stop, --resume, 2 more (every leaf, bit for bit)."""
  common = ["--preset", "smoke", "--checkpoint-every", "2", "--no-evaluate"]
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  tb = str(tmp_path / "tb")
  assert train.main(common + ["--iterations", "4", "--checkpoint-dir", straight, "--logdir", "None"]) == 0
  assert train.main(common + ["--iterations", "2", "--checkpoint-dir", split, "--logdir", tb]) == 0
  assert train.main(["--resume", split, "--iterations", "4", "--no-evaluate", "--logdir", tb]) == 0
  assert "resumed" in capsys.readouterr().out
  a, b = muzero_jax.Checkpointer(straight), muzero_jax.Checkpointer(split)
  assert a.all_steps() == b.all_steps() == [2, 4]
  (_, meta_a), (_, meta_b) = a.read_meta(), b.read_meta()
  assert meta_a["counters"] == meta_b["counters"] and meta_b["counters"]["updates"] > 0
  raw = ocp.args.Composite(state=ocp.args.StandardRestore())  # the saved tree as is: every leaf compared
  state_a = a._manager.restore(4, args=raw)["state"]
  state_b = b._manager.restore(4, args=raw)["state"]
  leaves_a, leaves_b = jax.tree.leaves(state_a), jax.tree.leaves(state_b)
  assert len(leaves_a) == len(leaves_b) > 20
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert meta_a["digest"] == meta_b["digest"]
  a.close(), b.close()
  # TensorBoard curves continue at the right step, each step once.
  assert _event_steps(tb, "loss/total") == [1, 2, 3, 4]
  # A total below the checkpoint's iterations trains nothing and says so (it was silent).
  assert train.main(["--resume", split, "--iterations", "3", "--no-evaluate", "--logdir", "None"]) == 0
  assert "at iteration 4, past --iterations 3 (a total): nothing to train" in capsys.readouterr().out
  again = muzero_jax.Checkpointer(split)
  assert again.all_steps() == [2, 4]
  again.close()
  # A flag that contradicts the checkpoint is refused, naming it and the safe ones.
  assert train.main(["--resume", split, "--num-simulations", "9", "--no-evaluate", "--logdir", "None"]) == 2
  err = capsys.readouterr().err
  assert "--num-simulations 9 (checkpoint: 4)" in err and "--iterations" in err
  assert "--env" not in err.split("Safe to change on resume:")[1]  # refused on resume (an audit: listed as safe)
  # An unknown family is refused before any cube is made (it was a traceback).
  assert train.main(["--preset", "smoke", "--families", "standard", "bogus", "--logdir", "None"]) == 2
  assert "--families: unknown 'bogus'; choose from narrow, standard" in capsys.readouterr().err
  # No checkpoint there; a fresh run may not overwrite one.
  (tmp_path / "empty").mkdir()
  assert train.main(["--resume", str(tmp_path / "empty"), "--logdir", "None"]) == 2
  assert "holds no checkpoint" in capsys.readouterr().err
  assert train.main(common + ["--checkpoint-dir", split, "--logdir", "None"]) == 2
  assert "already holds checkpoints" in capsys.readouterr().err
  # Resumed into another run's directory: refused (an audit: it saved nothing there and exited 0).
  assert train.main(["--resume", split, "--iterations", "6", "--checkpoint-dir", straight, "--logdir", "None"]) == 2
  assert f"--checkpoint-dir {straight} already holds checkpoints of another run" in capsys.readouterr().err
  assert muzero_jax.Checkpointer(straight).all_steps() == [2, 4]
  # A file where a directory should be: refused before training (Orbax failed at the first save, then hung).
  (tmp_path / "file").write_text("not a directory")
  assert train.main(common + ["--checkpoint-dir", str(tmp_path / "file"), "--logdir", "None"]) == 2
  assert "is a file, not a directory" in capsys.readouterr().err
  assert train.main(["--resume", split, "--checkpoint-dir", str(tmp_path / "file"), "--logdir", "None"]) == 2
  assert "is a file, not a directory" in capsys.readouterr().err
  assert train.main(["--resume", str(tmp_path / "file"), "--logdir", "None"]) == 2
  assert f"--resume {tmp_path / 'file'}: a file, not a directory" in capsys.readouterr().err
  with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
    muzero_jax.Checkpointer(tmp_path / "file")


def test_agent_tuning_objective_trains_a_candidate_and_scores_it_on_training_worlds(tmp_path, monkeypatch):
  """`tuning.agent_objective` (issue 18, point 4): the settings go into the trained agent's config (the imitation
  share as iterations), the score is muzero's mean recall over its run rows on training worlds in the sweep's
  window, and a candidate trained before is scored again without retraining.

  Only the imitation share differs from the smoke preset: the learner's update then has the smoke test's program
  (loaded from the compilation cache, 15-17 s saved); `agent_config`'s mapping of every setting is checked in the
  next test."""
  smoke = PRESETS["smoke"].config
  settings = tuning.preset_settings("smoke") | {"imitation": 0.5}
  workdir = tmp_path / "tune"
  objective = tuning.agent_objective(
    preset="smoke", iterations=2, worlds=1, workdir=str(workdir), mode="episodes", workers=1, families=("standard",)
  )
  score = objective(settings)
  (checkpoint,) = [p for p in workdir.glob("agent-*") if p.is_dir()]
  assert not checkpoint.name.endswith(".partial")  # renamed once fully trained
  config = load_agent(str(checkpoint)).config
  assert config.imitation_iterations == 1  # 0.5 x 2 iterations
  assert config.replace(imitation_iterations=0) == smoke  # the rest is the preset's
  (rows_file,) = workdir.glob(f"{checkpoint.name}-w1-standard.jsonl")
  rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
  runs = [r for r in rows if r.get("kind") == "run" and r.get("method") == "muzero@mode=episodes"]
  assert runs and {r["split"] for r in runs} == {"train"} and len({r["seed"] for r in runs}) == 1  # world 0
  assert {r["scenario"] for r in runs} == {"standard"}
  window = sweep_window(rows)
  assert len(window) > 0 and 0.0 <= score <= 1.0
  assert score == pytest.approx(float(window["recall"].astype(float).mean()))

  def no_training(*_args, **_kwargs):
    raise AssertionError("a trained candidate was trained again")

  monkeypatch.setattr(train, "run", no_training)
  assert objective(settings) == score  # scored again from its rows, not retrained


def test_agent_tuning_settings_and_flags_are_checked():
  """The tuned settings map onto MuZeroConfig (the imitation share onto iterations); a preset's own settings are
  the baseline; bad settings and flags get errors naming them."""
  smoke, pretrain = PRESETS["smoke"].config, PRESETS["pretrain"]
  assert tuning.agent_config(smoke, {"imitation": 0.25}, 10).imitation_iterations == 2  # round(2.5), to even
  assert tuning.agent_config(smoke, {"learning_rate": 1e-3, "n_step": 7}, 10).n_step == 7
  baseline = tuning.preset_settings("pretrain")
  assert set(baseline) == set(tuning.AGENT_SPACE)
  assert baseline["imitation"] == 0.5 and baseline["num_simulations"] == pretrain.config.num_simulations  # 200/400
  assert tuning.agent_config(pretrain.config, baseline, pretrain.iterations) == pretrain.config
  with pytest.raises(ValueError, match="not MuZeroConfig fields"):
    tuning.agent_config(smoke, {"learning_rte": 1e-3}, 10)
  with pytest.raises(ValueError, match="share of the iterations"):
    tuning.agent_config(smoke, {"imitation": 1.5}, 10)
  with pytest.raises(ValueError, match="unknown preset"):
    tuning.agent_objective(preset="huge", iterations=2, worlds=1, workdir="unused")
  for argv, message in (
    (["--target", "agent", "--families", "null"], "--families null"),
    (["--target", "agent", "--iterations", "0"], "--iterations"),
    (["--target", "ranker"], "needs --rows-file"),
    (["--target", "ranker", "--rows-file", "missing.npz"], "missing.npz"),
    (["--worlds", "21"], "--worlds must be from 1 to 20"),  # past 20: the ranker's training worlds
  ):
    with pytest.raises(SystemExit, match=message):
      tune.main(tyro.cli(tune.Args, args=argv))
