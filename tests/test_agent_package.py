"""The agent as a package: exported files, the packaged agent, the grid it plays, the worlds it trains on."""

import dataclasses
import functools
import json
import os
import pathlib
import warnings
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import cube_env
import muzero_jax
from cube_env import worlds
from experiments import agent
from experiments.agent import export, play
from tests.conftest import SMALL_SCHEMA
from tests.test_discover_report import save_tiny_agent


def test_export_round_trip_and_damaged_files(small_df, tmp_path, capsys, monkeypatch):
  ckpt = str(tmp_path / "agent")
  save_tiny_agent(ckpt, small_df, SMALL_SCHEMA)
  out = str(tmp_path / "agent.npz")
  packaged = pathlib.Path(agent.PACKAGED).read_bytes()
  monkeypatch.chdir(tmp_path)  # the default --out is agent.npz here, never the packaged file (a packaging audit)
  assert export.main([ckpt]) == 0
  assert "wrote agent.npz" in capsys.readouterr().out and pathlib.Path(agent.PACKAGED).read_bytes() == packaged
  assert os.path.getsize(out) > 1000
  saved, loaded = agent.load_agent(ckpt), agent.load_agent(out)
  assert loaded.config == saved.config and loaded.any_grid and saved.any_grid
  assert (loaded.num_filters, loaded.num_values, loaded.horizon) == (saved.num_filters, saved.num_values, 4)
  same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), saved.params, loaded.params)
  assert all(jax.tree.leaves(same)) and len(jax.tree.leaves(same)) > 10
  assert json.loads(loaded.source)["checkpoint"] == ckpt
  # Content identities (benchmark rows record them): stable, and distinct for other bytes, file or directory.
  assert agent.agent_id(out) == agent.agent_id(out) != agent.agent_id(ckpt) != agent.agent_id(None)
  copy = tmp_path / "copy.npz"
  copy.write_bytes((tmp_path / "agent.npz").read_bytes())
  assert agent.agent_id(str(copy)) == agent.agent_id(out)
  copy.write_bytes(copy.read_bytes() + b"\0")
  assert agent.agent_id(str(copy)) != agent.agent_id(out)
  with pytest.raises(ValueError, match="--checkpoint .*nowhere"):
    agent.agent_id(str(tmp_path / "nowhere"))
  # Damaged, missing or misnamed input: errors that name the file or the flag.
  (tmp_path / "bad.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="--checkpoint .*bad.npz.*cannot load an agent"):
    agent.load_agent(str(tmp_path / "bad.npz"))
  assert export.main([str(tmp_path / "nowhere")]) == 2 and "no such directory" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    export.main([ckpt, "--out", str(tmp_path / "agent.bin")])
  assert "must end in .npz" in capsys.readouterr().err
  # Arrays that are not its config's network's, or not finite: refused naming the file (an audit: a Flax traceback
  # at the first query, or a "non-finite score" naming nothing).
  with np.load(out, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  name = next(k for k in arrays if k != "__agent__" and arrays[k].ndim == 2)
  for label, change, message in (
    ("missing", lambda a: a.pop(name), "not the parameters of its config's network .1 missing"),
    ("shape", lambda a: a.update({name: a[name][:-1]}), "1 arrays of the wrong shape"),
    ("nan", lambda a: a.update({name: np.full_like(a[name], np.nan)}), "1 parameter arrays hold NaN"),
  ):
    broken = dict(arrays)
    change(broken)
    np.savez(tmp_path / f"{label}.npz", **broken)
    with pytest.raises(ValueError, match=f"--checkpoint .*{label}.npz.*{message}"):
      agent.load_agent(str(tmp_path / f"{label}.npz"))


def test_the_grid_an_agent_plays(small_df, tmp_path):
  cube = cube_env.build_cube(small_df, SMALL_SCHEMA)
  own = cube_env.EnvShape.of(cube)
  ckpt, dense = str(tmp_path / "a"), str(tmp_path / "d")
  save_tiny_agent(ckpt, small_df, SMALL_SCHEMA)
  save_tiny_agent(dense, small_df, SMALL_SCHEMA, policy_head="dense")
  grid_free, fixed = agent.load_agent(ckpt), agent.load_agent(dense)
  assert grid_free.any_grid and not fixed.any_grid
  shape = agent.agent_shape(grid_free, cube)  # rounded up to (8, 4) multiples: never below the trained grid
  assert shape.num_filters == max(grid_free.num_filters, -(-own.num_filters // 8) * 8)
  assert shape.num_values == max(grid_free.num_values, -(-own.num_values // 4) * 4)
  # The agent's shape starts from the table's own sizes (no small-table floor, `agent_shape`).
  own_cells = cube_env.bucketed_shape(cube, small_floor=False).num_cells
  assert shape.num_cells == own_cells and shape.num_groups == own.num_groups
  wider = grid_free.__class__(**{**grid_free.__dict__, "num_filters": 1, "num_values": 2})
  assert agent.agent_shape(wider, cube).num_filters == shape.num_filters  # the table's grid, not the agent's
  fixed_shape = agent.agent_shape(fixed, cube)
  assert (fixed_shape.num_filters, fixed_shape.num_values) == (fixed.num_filters, fixed.num_values)
  narrow = fixed.__class__(**{**fixed.__dict__, "num_filters": own.num_filters - 1})
  with pytest.raises(ValueError, match="dense policy heads.*--max-categories"):
    agent.agent_shape(narrow, cube)
  assert play.MAX_FILTERS >= 64 and play.MAX_VALUES >= 40  # issue 18: at least 64 columns x 40 categories


def test_packaged_agent_loads_and_was_made_from_training_worlds():
  packaged = agent.load_agent(None)
  assert packaged.directory == agent.PACKAGED and packaged.any_grid
  source = json.loads(packaged.source)
  assert source["preset"] == "pretrain" and set(source["task"]["families"]) <= set(cube_env.WORLD_FAMILIES)
  assert source["counters"]["iteration"] >= 100  # trained, not an initial network
  assert packaged.config.imitation_iterations == 200  # the pretrain recipe: a warm start imitating greedy


def test_world_tasks_draw_only_training_worlds():
  task = cube_env.CubeTask(families=("standard", "masked"), num_train_cubes=2, num_eval_cubes=1, n_rows=3000)
  train, held_out = cube_env.make_cubes(task, split="train"), cube_env.make_cubes(task, split="eval")
  assert train.scenarios == ["standard", "masked"] and held_out.scenarios == ["standard"]
  for seed in train.seeds:
    assert worlds.split_of(seed) == "train" and seed - worlds.TRAIN_SEED_BASE >= worlds.AGENT_WORLD_INDEX
  assert [s - worlds.TRAIN_SEED_BASE for s in held_out.seeds] == [0]  # the first validation world
  assert all(truth for truth in train.truths) and len(train.cubes) == 2
  with pytest.raises(ValueError, match="unknown family"):
    cube_env.make_cubes(cube_env.CubeTask(families=("nope",)), split="train")
  # A task no run could use is refused as it is made, naming the field (`experiments.train`: exit status 2).
  for bad, match in (
    (dict(scenarios=("nope",)), "scenarios must be"),
    (dict(num_train_cubes=0), "num_train_cubes must be at least 1"),
    (dict(num_eval_cubes=-1), "num_eval_cubes must be >= 0"),
    (dict(z_screen="abc"), "z_screen must be a positive number or bonferroni"),
    (dict(z_screen="-2"), "z_screen must be"),
  ):
    with pytest.raises(ValueError, match=match):
      cube_env.CubeTask(**bad)
  # A number given as text (as the flag gives it) is the screen: `--z-screen 3.5` failed in make_params.
  assert cube_env.CubeTask(z_screen="3.5").z_value() == 3.5 and task.z_value() == "bonferroni"


def test_frontier_mode_is_the_learned_value_refined_by_the_agents_search(small_df, tmp_path):
  ckpt = str(tmp_path / "agent")
  save_tiny_agent(ckpt, small_df, SMALL_SCHEMA)
  loaded = agent.load_agent(ckpt)
  prepared = cube_env.prepare(small_df, SMALL_SCHEMA, cube_env.DiscoveryConfig(max_depth=2, z_screen=3.0))
  learned = cube_env.search(prepared, "learned", budget=25)
  same = cube_env.search(prepared, functools.partial(agent.muzero_search, checkpoint=loaded, refine=0.0), budget=25)
  pd.testing.assert_frame_equal(same.visits, learned.visits)  # refine 0: the learned method, query for query
  assert same.method == "muzero" and "refine 0: no search" in same.note
  # The agent reads the table's own filter columns, not the small-table floor's padded ones (a review: the padded
  # rows repeat the cohort's own size and z to a network that pools over the grid): a run on the pipeline's padded
  # space is the run on an unpadded one, query for query, and every observation the agent sees has the own width.
  own = cube_env.bucketed_shape(prepared.space.cube, small_floor=False)
  assert prepared.space.env.shape.num_filters > own.num_filters
  space = prepared.space
  unpadded = cube_env.make_space(
    space.cube, max_depth=2, min_group=space.min_group, z_screen=space.z_screen, new_z=space.new_z, shape=own
  )
  default = functools.partial(agent.muzero_search, checkpoint=loaded)
  with mock.patch.object(muzero_jax, "act", wraps=muzero_jax.act) as act:
    padded_run = cube_env.search(prepared, default, budget=25)
  assert act.call_count > 0 and {c.args[1].shape[2] for c in act.call_args_list} == {own.num_filters}
  # ...and its time-left plane on its own horizon (4), the steps taken being the cohort's depth: read on the search
  # space's horizon (8), it had told the agent it had used half the steps it had (a cold audit).
  assert loaded.horizon == 4 and prepared.space.env.horizon == 8
  seen = np.stack([np.asarray(c.args[1])[0] for c in act.call_args_list])
  depth = seen[:, cube_env.CHANNELS.index("depth")] * prepared.space.max_depth
  assert {int(round(d)) for d in depth[:, 0, 0]} == {0, 1}  # the root and its drill-downs refined
  np.testing.assert_allclose(seen[:, play.TIME_LEFT], 1.0 - depth / loaded.horizon, atol=1e-6)
  unpadded_run = cube_env.search(dataclasses.replace(prepared, space=unpadded), default, budget=25)
  pd.testing.assert_frame_equal(padded_run.visits, unpadded_run.visits)
  every0 = functools.partial(agent.muzero_search, checkpoint=loaded, refine=0.0, refine_at="visit")
  pd.testing.assert_frame_equal(cube_env.search(prepared, every0, budget=25).visits, learned.visits)
  # The ranking's arithmetic on the root's observation: learned log-odds + refine x (search Q - network value).
  obs, _, _ = cube_env.Ledger(prepared.space, 1).root()
  refined = agent.agent_ranker(loaded, seed=0, refine=2.0, advantage="raw")(obs, 0.0)
  base = cube_env.learned_ranker()(obs, 0.0)
  legal = jnp.asarray(obs[play.LEGAL].reshape(1, -1) > 0)
  out = muzero_jax.act(loaded.params, jnp.asarray(obs)[None], legal, jax.random.PRNGKey(0), loaded.config)
  advantage = np.asarray(out.action_values[0]) - float(out.network_value[0])
  np.testing.assert_allclose(refined - base, 2.0 * advantage, rtol=1e-5, atol=1e-6)
  searched = np.count_nonzero(advantage)  # moves the search visited; the rest keep the learned value
  assert 0 < searched <= loaded.config.num_simulations
  with pytest.raises(ValueError, match="refine must be a finite number"):
    agent.agent_ranker(loaded, seed=0, refine=-1.0)
  # Centred (the default): each visited move's advantage minus the mean over the visited moves; unvisited keep 0.
  centred = agent.agent_ranker(loaded, seed=0, refine=2.0)(obs, 0.0)
  visited = advantage != 0
  expected = np.where(visited, advantage - advantage[visited].mean(), 0.0)
  np.testing.assert_allclose(centred - base, 2.0 * expected, rtol=1e-5, atol=1e-5)
  assert abs(float((centred - base)[visited].sum())) < 1e-4 and not np.any((centred - base)[~visited])
  # A max backup over a deeper search: the same arithmetic on the max-backed-up Q of 4x the simulations.
  deeper = loaded.config.replace(num_simulations=4 * loaded.config.num_simulations)
  refined_max = agent.agent_ranker(
    loaded, seed=0, refine=2.0, backup="max", simulations=deeper.num_simulations, advantage="raw"
  )(obs, 0.0)
  out_max = muzero_jax.act(loaded.params, jnp.asarray(obs)[None], legal, jax.random.PRNGKey(0), deeper, backup="max")
  advantage_max = np.asarray(out_max.action_values[0]) - float(out_max.network_value[0])
  np.testing.assert_allclose(refined_max - base, 2.0 * advantage_max, rtol=1e-5, atol=1e-6)
  # At the agent's own simulations, no more than the moves it considers, each is searched once (a tree one level
  # deep where that many are legal, as here) and the max backup reads the mean's Q: a warning says so (an audit).
  assert loaded.config.search == "gumbel" and loaded.config.num_simulations <= loaded.config.max_num_considered_actions
  with pytest.warns(UserWarning, match="backup='max' reads what the mean backup does"):
    shallow_max = agent.agent_ranker(loaded, seed=0, refine=2.0, backup="max", advantage="raw")
  np.testing.assert_allclose(shallow_max(obs, 0.0), refined, rtol=1e-6, atol=1e-6)
  with warnings.catch_warnings():
    warnings.filterwarnings("error", message="muzero: backup")  # a deeper search: no such warning
    agent.agent_ranker(loaded, seed=0, backup="max", simulations=deeper.num_simulations)
  with pytest.warns(UserWarning, match="backup='max'"):
    run = cube_env.search(prepared, functools.partial(agent.muzero_search, checkpoint=loaded, backup="max"), budget=10)
  assert run.queries == 10 and "max backup" in run.note
  # Near the top (the default) or at every visit: the same budget, and the note says where the agent searched.
  assert "once a drill-down of it reaches the top" in run.note
  every = cube_env.search(
    prepared, functools.partial(agent.muzero_search, checkpoint=loaded, refine_at="visit"), budget=10
  )
  assert every.queries == 10 and "at each visited cohort" in every.note
  for bad, match in (
    (dict(refine_at="every"), "refine_at must be one of"),
    (dict(mode="episodes", refine_at="visit"), "refine_at is an option"),
  ):
    with pytest.raises(ValueError, match=match):
      cube_env.search(prepared, functools.partial(agent.muzero_search, checkpoint=loaded, **bad), budget=5)
  for bad, match in (
    (dict(backup="median"), "backup must be one of"),
    (dict(simulations=-1), "simulations must be"),
    (dict(advantage="scaled"), "advantage must be one of"),
  ):
    with pytest.raises(ValueError, match=match):
      agent.agent_ranker(loaded, seed=0, **bad)


def test_episodes_stop_once_every_reachable_cohort_is_known(small_df, tmp_path):
  """An audit: once every cohort was queried, the episodes walked known cohorts until the budget was gone (3,000
  queries on 11 cohorts, minutes of a large table's queries) where every other method stops "nothing left". They
  stop too, with every reachable cohort visited once (greedy reaches the same ones)."""
  ckpt = str(tmp_path / "agent")
  save_tiny_agent(ckpt, small_df, SMALL_SCHEMA)
  prepared = cube_env.prepare(small_df, SMALL_SCHEMA, cube_env.DiscoveryConfig(max_depth=1, z_screen=3.0))
  run = cube_env.search(prepared, functools.partial(agent.muzero_search, checkpoint=ckpt, mode="episodes"), budget=400)
  greedy = cube_env.search(prepared, "greedy", budget=400)
  assert run.stopped_by == greedy.stopped_by == "nothing left"
  assert sorted(run.visits["cohort"]) == sorted(greedy.visits["cohort"]) and len(greedy.visits) > 3
  assert run.queries < 3 * len(run.visits) < 400  # passing through known cohorts between new ones, not 400


def test_episodes_mode_searches_with_the_agents_expert_prior(small_df, tmp_path):
  """An agent trained with `expert_prior` plays its episodes with greedy's preference at the search root: with a
  large weight its first episode (root + 4 steps) is the greedy method's, cohort for cohort."""
  ckpt = str(tmp_path / "agent")
  save_tiny_agent(ckpt, small_df, SMALL_SCHEMA)
  loaded = agent.load_agent(ckpt)
  strong = dataclasses.replace(loaded, config=loaded.config.replace(expert_prior=100.0))
  prepared = cube_env.prepare(small_df, SMALL_SCHEMA, cube_env.DiscoveryConfig(max_depth=2, z_screen=3.0))
  greedy_run = cube_env.search(prepared, "greedy", budget=5)
  greedy = greedy_run.visits["cohort"].tolist()
  run = cube_env.search(prepared, functools.partial(agent.muzero_search, checkpoint=strong, mode="episodes"), budget=5)
  assert run.visits["cohort"].tolist() == greedy and len(greedy) == 5
  # The agent's environment counts new findings at the space's newness threshold (explore_new_z 2.5 here), not at
  # z_screen (3.0): the same cohorts give the same findings as greedy's. On a table whose race B gap is everywhere,
  # a little wider at proc A (a heterogeneity z between the two thresholds), the episodes run found proc A's gap
  # not new: 2 candidates against greedy's 3.
  space = prepared.space
  assert space.new_z == 2.5 and float(agent.padded_env(strong, space)[1].new_z) == space.new_z
  assert space.thresholds == dict(max_depth=2, min_group=11.0, z_screen=3.0, new_z=2.5)  # what a rebuilt env passes
  wider = small_df.copy()
  wider.loc[(wider.proc == "A") & (wider.race == "B"), "minutes"] *= 1.16 / 1.5  # make_small_df's x1.5 at proc A
  wider.loc[wider.race == "B", "minutes"] *= 1.12
  mild = cube_env.prepare(wider, SMALL_SCHEMA, cube_env.DiscoveryConfig(max_depth=2, z_screen=3.0))
  greedy_mild = cube_env.search(mild, "greedy", budget=5)
  run_mild = cube_env.search(mild, functools.partial(agent.muzero_search, checkpoint=strong, mode="episodes"), budget=5)
  assert run_mild.visits["cohort"].tolist()[:2] == ["(all cases)", "proc=A"]
  assert run_mild.visits["n_new"].tolist() == greedy_mild.visits["n_new"].tolist() and run_mild.visits["n_new"][1] > 0
  pd.testing.assert_frame_equal(
    run_mild.candidates.reset_index(drop=True), greedy_mild.candidates.reset_index(drop=True)
  )
  assert len(run_mild.candidates) == 3
  plain = cube_env.search(
    prepared, functools.partial(agent.muzero_search, checkpoint=loaded, mode="episodes", prior=0), budget=5
  )
  assert plain.visits["cohort"].tolist() != greedy  # the untrained agent alone plays otherwise
  # Without an option the weight is the agent's own when it has one, else EPISODES_PRIOR; the run's note says it.
  assert agent.episodes_prior(strong) == 100.0 and agent.episodes_prior(loaded) == agent.EPISODES_PRIOR == 0.2
  assert agent.episodes_prior(strong, 0) == 0.0 and agent.episodes_prior(loaded, 1) == 1.0
  assert plain.note.endswith("greedy's preference at the root, weight 0)")
  for bad in (-0.1, float("nan"), "0.2"):
    with pytest.raises(ValueError, match="prior must be a number >= 0"):
      agent.episodes_prior(loaded, bad)
  with pytest.raises(ValueError, match="prior is an option of mode='episodes'"):
    cube_env.search(prepared, functools.partial(agent.muzero_search, checkpoint=loaded, prior=0.2), budget=5)
  with pytest.raises(ValueError, match="advantage is an option of mode='frontier'"):
    episodes = functools.partial(agent.muzero_search, checkpoint=loaded, mode="episodes", advantage="raw")
    cube_env.search(prepared, episodes, budget=5)
