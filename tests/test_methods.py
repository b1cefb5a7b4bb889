"""Search methods on a small cube: budgets, determinism, coverage and the numbers they report."""

import dataclasses
import functools

import jax
import numpy as np
import pandas as pd
import pytest

import cube_env
from cube_env.discovery import cohorts as cohorts_lib
from cube_env.discovery import frontier as frontier_lib
from cube_env.discovery import methods
from cube_env.discovery import oracle as oracle_lib
from cube_env.discovery import space as space_lib
from tests.conftest import SMALL_SCHEMA, make_small_df

WALKERS = ("random", "greedy", "beam", "uct", "frontier")
Z = 4.0


@pytest.fixture(scope="module")
def space(small_cube):
  return cube_env.make_space(small_cube, max_depth=2, z_screen=Z)


@pytest.fixture(scope="module")
def full(space):
  """Every method with a budget larger than the space, and the space's size."""
  size = sum(space_lib.count_cohorts(space))
  return size, {
    m: methods.METHODS[m](space, budget=size + 50, seed=0) for m in ("exhaustive", "beam", "uct", "frontier")
  }


def _keys(visits):
  return {tuple(sorted(f.items())) for f in visits["filters"]}


def test_root_by_step_equals_reset(space):
  obs, state, n_new = space_lib.Ledger(space, 1).root()
  ref_obs, ref_state = jax.jit(space.env.reset)(jax.random.PRNGKey(0), space.params)
  np.testing.assert_allclose(obs, np.asarray(ref_obs), atol=1e-6)
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert n_new == int(ref_state.found)


@pytest.mark.parametrize("budget", [1, 7, 40])
def test_every_method_stays_within_its_budget(space, budget):
  for name, fn in methods.BUILTIN_METHODS.items():  # the registry may also hold plug-ins other tests loaded
    spent = []
    res = fn(space, budget=budget, seed=0, progress=spent.append)
    assert res.queries <= budget, name
    assert len(res.visits) <= max(res.queries, 1), name
    if name != "exhaustive":
      assert spent == list(range(1, res.queries + 1))  # one progress call per query
      assert res.queries == budget or len(res.visits) == sum(space_lib.count_cohorts(space)), name
  root_only = methods.uct(space, budget=1, seed=0)
  assert root_only.visits["cohort"].tolist() == ["(all cases)"]


def test_same_seed_same_result(space):
  for name in WALKERS:
    a = methods.METHODS[name](space, budget=30, seed=5)
    b = methods.METHODS[name](space, budget=30, seed=5)
    pd.testing.assert_frame_equal(a.visits, b.visits)
    pd.testing.assert_frame_equal(a.candidates, b.candidates)
  c = methods.random_walk(space, budget=30, seed=6)
  assert c.visits["cohort"].tolist() != methods.random_walk(space, budget=30, seed=5).visits["cohort"].tolist()


def test_tree_searches_with_enough_budget_cover_the_space(full):
  size, res = full
  ex, beam, uct, front = res["exhaustive"], res["beam"], res["uct"], res["frontier"]
  assert ex.queries == size == len(ex.visits)
  assert _keys(beam.visits) == _keys(ex.visits) == _keys(uct.visits) == _keys(front.visits)
  assert beam.queries == uct.queries == front.queries == size  # no cohort is paid for twice
  key = ["cohort", "protected", "group", "measure"]
  for other in (beam, uct, front):
    merged = ex.candidates.merge(other.candidates, on=key, suffixes=("", "_o"))
    assert len(merged) == len(ex.candidates) == len(other.candidates) >= 1
    np.testing.assert_allclose(merged["z"], merged["z_o"])


def test_candidates_are_the_oracles_new_findings(space, full):
  _, res = full
  oracle = cube_env.enumerate_findings(space.cube, max_depth=2, z_screen=Z, include_old=False)
  got = res["exhaustive"].candidates.sort_values(["cohort", "protected", "group", "measure"]).reset_index(drop=True)
  want = oracle.sort_values(["cohort", "protected", "group", "measure"]).reset_index(drop=True)
  assert got[["cohort", "protected", "group", "measure"]].equals(want[["cohort", "protected", "group", "measure"]])
  np.testing.assert_allclose(got["z"], want["z"], atol=1e-3)
  np.testing.assert_array_equal(got["n_group"], want["n_group"])
  assert "proc=A" in set(got["cohort"])  # the planted gap (race B, minutes)


def test_paths_follow_single_actions(full):
  _, res = full
  for r in res.values():
    v = r.visits
    assert v["parent"].iloc[0] == -1
    for filters, parent in zip(v["filters"][1:], v["parent"][1:]):
      up = v["filters"].iloc[parent]
      changed = set(filters.items()) ^ set(up.items())
      assert len({k for k, _ in changed}) == 1  # one column added, switched or cleared
    for path, filters in zip(r.candidates["path"], r.candidates["filters"]):
      assert path.startswith("(all cases)")
      # A drill path: each cohort holds the next (its filters a part of the next's), ending at the candidate's.
      steps = [
        dict(kv.split("=", 1) for kv in step.split(" & ")) if step != "(all cases)" else {}
        for step in path.split(" > ")
      ]
      assert steps[-1] == filters and all(set(a.items()) < set(b.items()) for a, b in zip(steps, steps[1:]))


def test_greedy_follows_the_strongest_pixel(space):
  obs, state, _ = space_lib.Ledger(space, 1).root()
  legal = np.nonzero(np.asarray(state.mask))[0]
  best = legal[np.argmax(methods.pixel_scores(obs)[legal])]
  res = methods.greedy(space, budget=2, seed=0)
  want = space_lib.target(tuple(int(v) for v in np.asarray(state.filters)), int(best), space.env.shape.num_values)
  got = cube_env.filters_to_codes(space.cube.meta, res.visits["filters"].iloc[1])
  assert tuple(int(v) for v in got) == want[: len(got)]


def test_frontier_visits_in_rank_order(small_cube):
  """At depth 1 every cohort is revealed by the root: best-first visits them by the root's pixel scores, best first."""
  shallow = cube_env.make_space(small_cube, max_depth=1, z_screen=Z)
  obs, state, _ = space_lib.Ledger(shallow, 1).root()
  c = shallow.env.shape.num_values
  root = tuple(int(v) for v in np.asarray(state.filters))
  actions = space_lib.drill_down_actions(root, np.asarray(state.mask), c)
  scores = methods.pixel_scores(obs)
  order = sorted(actions, key=lambda a: (-scores[a], a))
  for lift in (0.0, 1.0):  # the root's own score is 0: lift changes nothing at depth 1
    res = methods.frontier(shallow, budget=len(actions) + 5, seed=0, lift=lift)
    assert res.queries == len(actions) + 1 == len(res.visits)
    got = [tuple(int(v) for v in cube_env.filters_to_codes(small_cube.meta, f)) for f in res.visits["filters"][1:]]
    want = [space_lib.target(root, int(a), c)[: len(got[0])] for a in order]
    assert got == want
  assert scores[order[0]] > scores[order[-1]]  # the order is not trivially flat
  with pytest.raises(ValueError, match="lift"):
    methods.frontier(shallow, budget=3, seed=0, lift=-1.0)


def test_frontier_ranks_a_child_against_its_parent(space):
  """Past depth 1 the ranker sees the parent's own pixel score: `lift` x it comes off every drill-down's score."""
  obs, state, _ = space_lib.Ledger(space, 1).root()
  c = space.env.shape.num_values
  root_actions = space_lib.drill_down_actions(
    tuple(int(v) for v in np.asarray(state.filters)), np.asarray(state.mask), c
  )
  best_child = float(methods.pixel_scores(obs)[root_actions].max())
  calls = []

  def recording(obs, parent_score):
    ranks = frontier_lib.pixel_ranker(0.5)(obs, parent_score)
    calls.append((parent_score, ranks, methods.pixel_scores(obs)))
    return ranks

  res = methods.frontier(space, budget=3, seed=0, ranker=recording)
  assert res.queries == 3 and res.note == "best-first, learned ranking"
  assert best_child > 0 and calls[0][0] == 0.0 and calls[1][0] == pytest.approx(best_child)  # the root, its best child
  for parent_score, ranks, pixels in calls:
    np.testing.assert_allclose(ranks, pixels - 0.5 * parent_score)
  with pytest.raises(ValueError, match="non-finite"):
    methods.frontier(space, budget=3, seed=0, ranker=lambda obs, _score: np.full(obs[0].size, np.nan))


def test_frontier_refiner_ranks_the_queries_and_runs_only_near_the_top(space, small_cube):
  """A refiner's scores replace the ranker's for a parent's drill-downs once one of them reaches the top: they
  decide every query, and a parent whose drill-downs never reach the top is never refined."""
  shallow = cube_env.make_space(small_cube, max_depth=1, z_screen=Z)
  flip = lambda obs, _score: -methods.pixel_scores(obs)  # noqa: E731 (the reverse of the ranker's order)
  n = 6
  lazy = methods.frontier(shallow, budget=n, seed=0, refiner=flip)
  eager = methods.frontier(shallow, budget=n, seed=0, ranker=flip)
  pd.testing.assert_frame_equal(lazy.visits, eager.visits)  # depth 1: the refined order, query for query
  assert lazy.note.endswith("refined near the top")
  plain = methods.frontier(shallow, budget=n, seed=0)
  assert not plain.visits["filters"].equals(lazy.visits["filters"])  # the refiner, not the ranker, chose them
  # Past depth 1: refining with the ranker's own scores changes nothing; the refiner sees only parents whose
  # drill-downs reached the top (the root first), fewer than the cohorts that revealed drill-downs.
  calls = []

  def same(obs, own):
    calls.append(own)
    return frontier_lib.pixel_ranker()(obs, own)

  budget, revealed = 12, []
  refined = methods.frontier(space, budget=budget, seed=0, refiner=same, watch=lambda *a: revealed.append(a[0]))
  pd.testing.assert_frame_equal(refined.visits, methods.frontier(space, budget=budget, seed=0).visits)
  # Every refined parent had a drill-down queried right after, so the refiner ran once per parent of a query.
  parents = refined.visits["parent"][refined.visits["parent"] >= 0].nunique()
  assert calls[0] == 0.0 and len(calls) == parents < len(revealed)
  with pytest.raises(ValueError, match="the refiner returned a non-finite"):
    methods.frontier(space, budget=3, seed=0, refiner=lambda obs, _score: np.full(obs[0].size, np.inf))


def test_bad_budgets_and_empty_spaces_are_refused(space, small_cube):
  for bad in (0, -3, 2.5, True):
    with pytest.raises(ValueError, match="budget"):
      methods.uct(space, budget=bad, seed=0)
  with pytest.raises(ValueError, match=r"empty cohort space.*4000 rows\); lower min_group \(at least 11\)"):
    cube_env.make_space(small_cube, max_depth=2, min_group=3000)
  few = make_small_df(n=20).assign(complication=np.arange(20) % 2.0)  # no cohort of 2 x 11 rows in 20
  with pytest.raises(ValueError, match=r"20 rows\); use more rows \(min_group is already the small-cell rule's"):
    cube_env.make_space(cube_env.build_cube(few, SMALL_SCHEMA, n_bins=3), max_depth=2, min_group=11)
  with pytest.raises(ValueError, match="width"):
    methods.beam(space, budget=5, seed=0, width=0)


def test_registry_holds_the_builtins_and_takes_plugins(space):
  assert cube_env.method_names()[:5] == ("exhaustive", "random", "greedy", "beam", "uct")
  assert cube_env.get_method("uct") is methods.uct and cube_env.METHODS["random"] is methods.random_walk
  with pytest.raises(
    ValueError, match="unknown method 'nope'; registered methods: exhaustive, random, greedy, beam, uct"
  ):
    cube_env.get_method("nope")
  with pytest.raises(ValueError, match="'uct' is already registered"):
    cube_env.register_method("uct", methods.beam)
  with pytest.raises(TypeError):
    cube_env.METHODS["uct"] = methods.beam  # a read-only view
  with pytest.raises(TypeError, match="callable"):
    cube_env.register_method("not_a_function", 3)

  def two_queries(space, *, budget, seed, progress=None):
    return methods.random_walk(space, budget=min(budget, 2), seed=seed, progress=progress)

  cube_env.register_method("two_queries_test", two_queries)
  try:
    assert cube_env.method_names()[-1] == "two_queries_test"
    assert cube_env.get_method("two_queries_test")(space, budget=9, seed=0).queries == 2
    cube_env.register_method("two_queries_test", methods.greedy, replace=True)
    assert cube_env.get_method("two_queries_test") is methods.greedy
  finally:
    del methods._REGISTRY["two_queries_test"]  # no unregister in the API: plug-ins stay for the process
  assert "two_queries_test" not in cube_env.method_names()


def test_small_tables_share_one_padded_shape_its_programs_and_their_findings(small_df, caplog, monkeypatch):
  """Small tables of different schemas (but as many values) pad to one shape (`params.SMALL_TABLE_SHAPE`), so a
  second table's search and confirmation compile none of the first's programs again; the padding changes no query
  of greedy, `learned` (whose ranker reads a column's share of the grid's width) or enumeration and no finding; a larger table,
  or one wider than the floor in any size, keeps its own sizes."""
  other = cube_env.Schema(dimensions=["proc", "urgency"], protected=["race"], measures=["minutes", "los"])
  cube = cube_env.build_cube(small_df, other)
  own = cube_env.bucketed_shape(cube, small_floor=False)
  assert (own.num_filters, own.num_values, own.num_protected, own.num_measures) == (3, 5, 1, 2)
  padded_shape = dataclasses.replace(cube_env.environment.params.SMALL_TABLE_SHAPE, num_values=5)
  assert cube_env.bucketed_shape(cube) == cube_env.bucketed_shape(cube_env.build_cube(small_df, SMALL_SCHEMA))
  assert cube_env.bucketed_shape(cube) == padded_shape
  rng = np.random.default_rng(0)
  many = pd.DataFrame({c: rng.integers(0, 9, 20_000).astype(str) for c in "abcdef"} | {"y": rng.random(20_000)})
  big = cube_env.build_cube(many, cube_env.Schema(dimensions=list("abcde"), protected=["f"], measures=["y"]))
  assert big.num_cells > padded_shape.num_cells and cube_env.bucketed_shape(big).num_measures == 1
  nine = cube_env.build_cube(  # 9 filter columns of 2 values: few cells, but wider than the floor's 8 columns
    many.head(3000).assign(**{c: (many[o] > "4").astype(str) for c, o in zip("abcdefghi", "abcdefabc")}),
    cube_env.Schema(dimensions=list("abcdegh"), protected=["f", "i"], measures=["y"]),
  )
  shape = cube_env.bucketed_shape(nine, small_floor=False)
  assert shape.num_cells <= padded_shape.num_cells and (shape.num_filters, shape.num_groups) == (9, 2)
  assert cube_env.bucketed_shape(nine) == shape  # not padded

  def compiled(run):
    caplog.clear()
    with jax.log_compiles(True), caplog.at_level("WARNING", logger="jax._src.dispatch"):
      result = run()
    return result, {
      r.getMessage().split(" of ")[1].split(" in ")[0] for r in caplog.records if "XLA compilation" in r.message
    }

  programs = {"jit(_step)", "jit(_assess_cohorts)", "jit(root_sums)", "jit(_screen_chunk)", "jit(_novelty_chunk)"}
  settings, runs = dict(budget=60, max_depth=2, seed=0), ("greedy", "learned", "exhaustive")
  for m in ("greedy", "exhaustive"):
    cube_env.run_discovery(small_df, SMALL_SCHEMA, method=m, **settings)
  padded, names = compiled(lambda: {m: cube_env.run_discovery(small_df, other, method=m, **settings) for m in runs})
  assert not names & programs, names

  # The same runs on the table's own sizes (which compile those programs): the same queries and findings.
  unpadded = functools.partial(cube_env.bucketed_shape, small_floor=False)
  for module in (space_lib, cohorts_lib, oracle_lib):
    monkeypatch.setattr(module, "bucketed_shape", unpadded)
  alone, names = compiled(lambda: {m: cube_env.run_discovery(small_df, other, method=m, **settings) for m in runs})
  assert programs <= names, names  # the check above can see a compile
  for m in runs:
    pd.testing.assert_frame_equal(alone[m].search.visits, padded[m].search.visits)
    pd.testing.assert_frame_equal(alone[m].findings, padded[m].findings, rtol=1e-5)
  assert len(padded["greedy"].findings) > 0
