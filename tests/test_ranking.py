"""The learned frontier ranking: features by hand, labels, the fit, storage, the packaged ranker and its method."""

import dataclasses

import numpy as np
import pytest

import cube_env
from cube_env.discovery import frontier as frontier_lib
from cube_env.discovery import methods, ranking
from cube_env.discovery import space as space_lib
from cube_env.environment.env import CHANNELS
from experiments import train_ranker
from experiments.quality import ranker_training, tuning
from experiments.quality import suite as qsuite

Z = 4.0


@pytest.fixture(scope="module")
def space(small_cube):
  return cube_env.make_space(small_cube, max_depth=2, z_screen=Z)


def _obs(z: np.ndarray, real: np.ndarray, legal: np.ndarray) -> np.ndarray:
  obs = np.zeros((len(CHANNELS),) + z.shape, np.float32)
  obs[CHANNELS.index("max_abs_z")] = z
  obs[CHANNELS.index("real")] = real
  obs[CHANNELS.index("legal")] = legal
  obs[CHANNELS.index("log_size")] = 0.5
  obs[CHANNELS.index("current_log_size")] = 0.75
  obs[CHANNELS.index("depth")] = 0.5
  return obs


def test_features_by_hand():
  """Two columns (3 and 2 real values of C = 3) and the "all" column: every feature of two pixels by hand."""
  z = np.array([[0.1, 0.4, 0.7, 0.3], [0.2, 0.6, 0.0, 0.5]], np.float32)
  real = np.array([[1, 1, 1, 1], [1, 1, 0, 1]], np.float32)
  legal = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.float32)
  x = ranking.features(_obs(z, real, legal), 0.25)
  assert x.shape == (8, ranking.NUM_FEATURES) and x.dtype == np.float32
  col = {name: i for i, name in enumerate(ranking.FEATURES)}
  a = 1 * 4 + 1  # column 1, value 1: z 0.6
  sibs = np.sort([0.1, 0.4, 0.7, 0.2, 0.6])  # the drill-downs' z
  want = {
    "z": 0.6,
    "log_size": 0.5,
    "size_ratio": -0.25,
    "parent_log_size": 0.75,
    "parent_depth": 0.5,
    "parent_score": 0.25,
    "lift": 0.35,
    "column_max": 0.6,
    "column_mean": 0.4,  # (0.2 + 0.6) / 2 real values
    "above_column": 0.2,
    "sibling_rank": np.searchsorted(sibs, 0.6) / 5,  # 3 of 5 lower
    "sibling_max": 0.7,
    "column_values": 2 / 3,
  }
  for name, value in want.items():
    assert x[a, col[name]] == pytest.approx(value, abs=1e-6), name
  assert x[2, col["column_mean"]] == pytest.approx(0.4, abs=1e-6)  # column 0: (0.1 + 0.4 + 0.7) / 3
  assert x[2, col["sibling_rank"]] == pytest.approx(0.8)
  # A grid padded with two empty values (C = 5) gives every real pixel the same features: a column's values count
  # against the widest real column (3), not the grid's width (a cold audit: it was 2 / 5 here).
  pad = np.zeros((2, 2), np.float32)
  wide = ranking.features(
    _obs(*(np.concatenate([a[:, :3], pad, a[:, 3:]], axis=1) for a in (z, real, legal))), 0.25
  ).reshape(2, 6, -1)
  np.testing.assert_array_equal(wide[:, [0, 1, 2, 5]].reshape(8, -1), x)


def test_on_path():
  planted = np.array([[2, -1, 1], [-1, 0, -1]])
  targets = np.array([[2, -1, -1], [2, -1, 1], [2, 0, -1], [-1, 0, -1], [1, -1, -1], [-1, -1, 1]])
  np.testing.assert_array_equal(ranking.on_path(targets, planted), [True, True, False, True, False, True])
  assert not ranking.on_path(targets, np.zeros((0, 3), int)).any()


def test_fit_orders_a_learnable_rule_and_round_trips(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(600, ranking.NUM_FEATURES)).astype(np.float32)
  y = (x[:, 0] + 0.5 * x[:, 3] > 0.8).astype(np.float32)
  w = ranking.fit(x, y, seed=1, hidden=8, steps=400)
  assert ranking.auc(w.logits(x), y, np.ones_like(y)) > 0.97
  again = ranking.fit(x, y, seed=1, hidden=8, steps=400)
  np.testing.assert_array_equal(w.logits(x), again.logits(x))  # deterministic given the seed
  path = str(tmp_path / "r.npz")
  ranking.save(w, path)
  np.testing.assert_allclose(ranking.load(path).logits(x), w.logits(x))
  dropped = ranking.fit(x, y, seed=1, hidden=8, steps=400, drop=("z",))  # an ablation ignores the feature
  moved = x.copy()
  moved[:, 0] += 5.0
  np.testing.assert_allclose(dropped.logits(moved), dropped.logits(x))
  assert ranking.auc(dropped.logits(x), y, np.ones_like(y)) < ranking.auc(w.logits(x), y, np.ones_like(y))
  with pytest.raises(ValueError, match="unknown features"):
    ranking.fit(x, y, seed=0, drop=("nope",))
  with pytest.raises(ValueError, match="both labels"):
    ranking.fit(x, np.zeros(len(x)), seed=0)
  with pytest.raises(ValueError, match="non-finite"):
    ranking.fit(np.full_like(x, np.nan), y, seed=0)
  with pytest.raises(ValueError, match="do not exist"):
    ranking.load(str(tmp_path / "missing.npz"))
  with pytest.raises(ValueError, match="features"):
    ranking.RankerWeights(**{**w.__dict__, "names": ("z",)})


def test_merge_and_bagging_are_the_members_mean(tmp_path):
  """`merge` is one network whose log-odds are its members' mean; `fit_bagged` member m fits with seed + m on the
  rows weighted by a bootstrap of the groups drawn within each stratum (rebuilt here by hand)."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, ranking.NUM_FEATURES)).astype(np.float32)
  y = (x[:, 0] - 0.5 * x[:, 2] > 0.6).astype(np.float32)
  a, b = (ranking.fit(x, y, seed=s, hidden=4, steps=150) for s in (1, 2))
  merged = ranking.merge([a, b])
  assert merged.w1.shape == (ranking.NUM_FEATURES, 8) and merged.w2[:4, 4:].sum() == 0.0  # members side by side
  np.testing.assert_allclose(merged.logits(x), (a.logits(x) + b.logits(x)) / 2, rtol=1e-12, atol=1e-12)
  path = str(tmp_path / "m.npz")
  ranking.save(merged, path)
  np.testing.assert_allclose(ranking.load(path).logits(x), merged.logits(x))
  other = ranking.fit(x[:200], y[:200], seed=1, hidden=4, steps=150)  # other rows: other standardisation
  with pytest.raises(ValueError, match="standardised alike"):
    ranking.merge([a, other])
  with pytest.raises(ValueError, match="at least one"):
    ranking.merge([])
  groups, strata = np.arange(400) // 50, (np.arange(400) >= 200).astype(int)  # 8 groups, 4 in each stratum
  bagged = ranking.fit_bagged(x, y, groups=groups, strata=strata, members=2, seed=5, hidden=4, steps=150)
  members = []
  for m in range(2):
    draw = np.random.default_rng(5 + m)
    counts = np.concatenate([np.bincount(draw.integers(0, 4, 4), minlength=4) for _ in range(2)])
    members.append(ranking.fit(x, y, seed=5 + m, sample_weight=counts[groups], hidden=4, steps=150))
  np.testing.assert_allclose(bagged.logits(x), ranking.merge(members).logits(x), rtol=1e-9, atol=1e-9)
  assert ranking.auc(bagged.logits(x), y, np.ones_like(y)) > 0.95
  with pytest.raises(ValueError, match="members >= 1"):
    ranking.fit_bagged(x, y, groups=groups, members=0, seed=0)
  # Positives in one group of two: a member whose resample misses it had fitted all-NaN weights with a warning only
  # (an audit); it is refused naming the member. Seed 0's draw takes group 1 twice.
  assert np.random.default_rng(0).integers(0, 2, 2).tolist() == [1, 1]
  one = (np.arange(400) < 50).astype(np.float32)  # positives in group 0 only
  with pytest.raises(ValueError, match=r"member 0 \(seed 0\) resampled no group with positives \(0 weight on posi"):
    ranking.fit_bagged(x, one, groups=(np.arange(400) >= 200).astype(int), members=1, seed=0, hidden=4, steps=5)
  with pytest.raises(ValueError, match="both labels with weight"):
    ranking.fit(x, y, seed=0, sample_weight=np.where(y > 0, 0.0, 1.0), hidden=4, steps=5)


def test_auc_by_hand():
  scores = np.array([0.1, 0.4, 0.4, 0.9])
  labels = np.array([0, 0, 1, 1])
  # positive pairs: 0.4 beats 0.1, ties 0.4 (half); 0.9 beats both: (1 + 0.5 + 2) / 4
  assert ranking.auc(scores, labels, np.ones(4)) == pytest.approx(3.5 / 4)


def test_learned_method_is_frontier_with_the_packaged_ranking(space):
  weights = ranking.load()
  assert weights.names == ranking.FEATURES
  ranker = ranking.learned_ranker(weights)
  res = methods.get_method("learned")(space, budget=12, seed=0)
  ref = methods.frontier(space, budget=12, seed=0, ranker=ranker)
  assert res.method == "learned" and res.queries == 12
  assert res.visits["cohort"].tolist() == ref.visits["cohort"].tolist()

  class Falsy:  # a ranker object that is falsy (it has a length of 0) is still the ranker, not "none given"
    def __len__(self):
      return 0

    def __call__(self, obs, parent_score):
      return ranker(obs, parent_score)

  falsy = methods.frontier(space, budget=12, seed=0, ranker=Falsy())
  assert falsy.visits["cohort"].tolist() == ref.visits["cohort"].tolist()
  obs, _, _ = space_lib.Ledger(space, 1).root()
  assert np.isfinite(ranker(obs, 0.0)).all()
  # A space on a grid with more values than the table's (`make_space(shape=...)`) is searched alike (a cold audit:
  # the column-values feature divided by the padded width, and the visits differed from the second query on).
  wider = dataclasses.replace(space.env.shape, num_values=space.env.shape.num_values + 8)
  padded = cube_env.make_space(space.cube, max_depth=2, z_screen=Z, shape=wider)
  more = methods.get_method("learned")(padded, budget=40, seed=0)
  assert (
    more.visits["cohort"].tolist() == methods.get_method("learned")(space, budget=40, seed=0).visits["cohort"].tolist()
  )


def test_collect_labels_the_planted_path(small_cube):
  """On the small cube with proc=A, race B planted: rows of the drill-downs a short search reveals, labelled."""
  shallow = cube_env.make_space(small_cube, max_depth=2, z_screen=Z)
  truth = [cube_env.synthetic.PlantedEffect({"proc": "A"}, "race", "B", "minutes", 0.4)]
  x, y, w = ranking.collect(shallow, truth, budget=4, seed=0, negatives=1.0)
  assert x.shape[1] == ranking.NUM_FEATURES and len(x) == len(y) == len(w)
  assert y.sum() == 1  # the root reveals proc=A once; its children lie at depth 2 off the path
  np.testing.assert_array_equal(w, 1.0)
  _, y_few, w_few = ranking.collect(shallow, truth, budget=4, seed=0, negatives=0.2)
  assert y_few.sum() == 1 and len(y_few) < len(y) and set(w_few[~y_few]) == {5.0}
  with pytest.raises(ValueError, match="negatives"):
    ranking.collect(shallow, truth, budget=4, seed=0, negatives=0.0)
  with pytest.raises(ValueError, match="noise"):
    ranking.collect(shallow, truth, budget=4, seed=0, noise=-1.0)


def test_nevergrad_tuning_finds_the_peak_of_a_known_objective(monkeypatch):
  """`tuning.tune` drives a real Nevergrad optimizer: seeded, within the bounds, and it ends near a known optimum.
  After each candidate it releases JAX's compiled programs when they crowd the process's memory mappings (an agent
  candidate compiles its own; 100 of them in one process near Linux's limit, where the next compile segfaults)."""
  pytest.importorskip("nevergrad")
  released = []
  monkeypatch.setattr(tuning.compile_cache, "release_if_crowded", lambda: released.append(len(seen)))
  space = {"hidden": tuning.Bound(4, 32, log=True, integer=True), "learning_rate": tuning.Bound(1e-3, 2e-2, log=True)}

  def objective(s):
    return -((np.log(s["hidden"]) - np.log(12)) ** 2) - (np.log(s["learning_rate"]) - np.log(5e-3)) ** 2

  seen = []
  best, history = tuning.tune(objective, space, budget=40, seed=3, optimizer="OnePlusOne", log=seen.append)
  assert seen == history and len(history) == 40
  assert released == list(range(40))  # after each candidate's score, before its row is logged
  assert all(4 <= r["settings"]["hidden"] <= 32 and isinstance(r["settings"]["hidden"], int) for r in history)
  assert 8 <= best["hidden"] <= 18 and 2.5e-3 <= best["learning_rate"] <= 1e-2
  again, _ = tuning.tune(objective, space, budget=40, seed=3, optimizer="OnePlusOne")
  assert again == best  # seeded
  with pytest.raises(ValueError, match="optimizer"):
    tuning.tune(objective, space, budget=2, seed=0, optimizer="nope")
  with pytest.raises(ValueError, match="lower < upper"):
    tuning.Bound(2, 1)


def test_collect_walks_by_its_behaviour(small_cube):
  """The default walk is the pixel heuristic's; another ranking (a self-play round's) walks elsewhere from the same
  root: its first rows, the root's drill-downs, are the same, the rest differ."""
  shallow = cube_env.make_space(small_cube, max_depth=2, z_screen=Z)
  truth = [cube_env.synthetic.PlantedEffect({"proc": "A"}, "race", "B", "minutes", 0.4)]
  default = ranking.collect(shallow, truth, budget=5, seed=0, negatives=1.0)
  heuristic = ranking.collect(shallow, truth, budget=5, seed=0, negatives=1.0, behaviour=frontier_lib.pixel_ranker())
  for a, b in zip(default, heuristic, strict=True):
    np.testing.assert_array_equal(a, b)
  pixel = frontier_lib.pixel_ranker()
  reverse = ranking.collect(
    shallow, truth, budget=5, seed=0, negatives=1.0, noise=0.0, behaviour=lambda obs, own: -pixel(obs, own)
  )
  obs, _, _ = space_lib.Ledger(shallow, 1).root()
  n_root = int(((obs[CHANNELS.index("legal")] > 0) & (obs[CHANNELS.index("real")] > 0))[:, :-1].sum())
  np.testing.assert_array_equal(reverse[0][:n_root], default[0][:n_root])
  assert not np.array_equal(reverse[0][n_root:], default[0][n_root : len(reverse[0])])


def test_train_ranker_fits_cached_rows_of_two_rounds(tmp_path):
  """`experiments.train_ranker` on cached rows (a warm start's and a self-play round's, `--add-rows`): one fit over
  both, weights written and named by content; bad flags are refused by name."""
  rng = np.random.default_rng(3)
  paths = []
  for k, n in enumerate((300, 200)):
    x = rng.normal(size=(n, ranking.NUM_FEATURES)).astype(np.float32)
    y = x[:, 0] > 0.5
    paths.append(str(tmp_path / f"rows{k}.npz"))
    ranker_training.save_rows(paths[-1], x, y, np.ones(n), np.arange(n) % 4)  # 4 worlds a file
  out = str(tmp_path / "r.npz")
  assert train_ranker.Args().out == "ranker.npz"  # here, never the packaged ranker by default (a packaging audit)
  args = train_ranker.Args(rows_file=paths[0], add_rows=(paths[1],), steps=200, out=out)
  row = train_ranker.main(args)
  assert row["rows"] == 500 and row["rows_from_cache"] and row["train_auc"] > 0.95
  assert ranking.weights_id(out) != ranking.weights_id() and ranking.load(out).names == ranking.FEATURES
  bagged = train_ranker.main(dataclasses.replace(args, bag=2, hidden=4))  # worlds resampled within each file
  assert bagged["bag"] == 2 and bagged["train_auc"] > 0.95 and ranking.load(out).w1.shape[1] == 8
  for bad, flag in (
    (dict(add_rows=(str(tmp_path / "none.npz"),)), "--add-rows"),
    (dict(add_rows=("rows.csv",)), "--add-rows"),
    (dict(behaviour=str(tmp_path / "none.npz")), "--behaviour"),
    (dict(noise=-1.0), "--noise"),
    (dict(first_index=3), "--first-index"),
    (dict(bag=0), "--bag"),
    (dict(workers=0), "--workers"),
    (dict(first_index=990, rows_file=None), "--first-index \\+ --worlds-per-family must stay at most 1000"),
    (dict(drop=("bogus",)), "--drop"),  # before any collection (no --rows-file: it would collect for minutes)
    (dict(drop=("bogus",), rows_file=None), "--drop"),
  ):
    with pytest.raises(SystemExit, match=flag):
      train_ranker.main(dataclasses.replace(args, **bad))


def test_collect_positions_marks_the_planted_path(small_cube):
  """Positions of a short walk on the small cube (proc=A, race B planted): the root is the one cohort with an
  on-path drill-down (proc=A), marked and sampled first; every kept row is consistent and seeded."""
  shallow = cube_env.make_space(small_cube, max_depth=2, z_screen=Z)
  truth = [cube_env.synthetic.PlantedEffect({"proc": "A"}, "race", "B", "minutes", 0.4)]
  pos = ranking.collect_positions(shallow, truth, budget=6, seed=0, unmarked=1.0, samples=4)
  c = shallow.env.shape.num_values
  codes = ranking.planted_codes(shallow, truth)[0]
  column = int(np.nonzero(codes >= 0)[0][0])
  proc_a = column * (c + 1) + int(codes[column])
  assert len(pos.legal) >= 2  # unmarked=1: every visited cohort is kept
  assert pos.marked[0].sum() == 1 and pos.marked[0, proc_a]  # the root's one on-path drill-down
  assert pos.actions[0, 0] == proc_a and pos.labels[0].tolist() == [1.0, 0.0, 0.0, 0.0]
  assert pos.marked[1:].sum() == 0  # proc=A's own drill-downs lie at depth 2, off the planted cohort
  assert np.all(pos.marked <= pos.legal) and np.all(pos.legal[np.arange(len(pos.legal))[:, None], pos.actions])
  np.testing.assert_array_equal(pos.weights, 1.0)
  assert pos.scores[0] == 0.0 and pos.scores.shape == (len(pos.legal),)  # the root's own score is 0
  assert pos.obs.shape == (len(pos.legal), len(CHANNELS), shallow.env.shape.num_filters, c + 1)
  np.testing.assert_array_equal(pos.legal, pos.obs[:, CHANNELS.index("legal")].reshape(len(pos.legal), -1) > 0)
  again = ranking.collect_positions(shallow, truth, budget=6, seed=0, unmarked=1.0, samples=4)
  for field in dataclasses.fields(pos):
    np.testing.assert_array_equal(getattr(pos, field.name), getattr(again, field.name))
  few = ranking.collect_positions(shallow, truth, budget=6, seed=0, unmarked=1e-9, samples=4)
  assert len(few.legal) == 1 and few.marked[0, proc_a]  # only the marked position is kept
  with pytest.raises(ValueError, match="unmarked"):
    ranking.collect_positions(shallow, truth, budget=6, seed=0, unmarked=0.0)
  with pytest.raises(ValueError, match="samples"):
    ranking.collect_positions(shallow, truth, budget=6, seed=0, samples=0)


def test_depth_preference_adds_log_odds_per_level(space, small_cube):
  weights = ranking.load()
  obs, _, _ = space_lib.Ledger(space, 1).root()  # the root: its drill-downs lie at depth 1
  base = ranking.learned_ranker(weights)(obs, 0.0)
  deeper = ranking.learned_ranker(weights, depth=1.5, max_depth=space.max_depth)(obs, 0.0)
  np.testing.assert_allclose(deeper - base, 1.5)
  np.testing.assert_array_equal(ranking.learned_ranker(weights, depth=0.0, max_depth=3)(obs, 0.0), base)
  with pytest.raises(ValueError, match="depth must be a finite number"):
    ranking.learned_ranker(weights, depth=float("nan"), max_depth=3)
  with pytest.raises(ValueError, match="needs the space's max_depth"):
    ranking.learned_ranker(weights, depth=1.0)
  # by default (None) the preference follows the space's depth: none to depth 3, DEPTH_PREFERENCE from depth 4
  assert ranking.default_depth(3) == 0.0 and ranking.default_depth(4) == ranking.DEPTH_PREFERENCE == 1.0
  np.testing.assert_array_equal(ranking.learned_ranker(weights, max_depth=3)(obs, 0.0), base)
  deep = cube_env.make_space(small_cube, max_depth=4, z_screen=Z)
  deep_obs, _, _ = space_lib.Ledger(deep, 1).root()
  np.testing.assert_allclose(
    ranking.learned_ranker(weights, max_depth=4)(deep_obs, 0.0)
    - ranking.learned_ranker(weights, depth=0.0)(deep_obs, 0.0),
    1.0,
  )
  # run rows record the setting (None: by the space's depth) for the learned searches and `auto`'s fallback
  suite = qsuite.SUITES["quick"]
  for method in ("learned", "muzero", "auto"):
    assert ["depth", None] in suite.options_row(method)
  assert qsuite.parse_variant("learned@depth=1") == ("learned", {"depth": 1})
