"""Power and family-wise error of the discovery defaults on a small fixed set of random worlds (issue 16).

The benchmark-sized check (20+ worlds of each family, depth 3) is `python -m experiments.benchmark power`;
here a few training worlds at 50,000 rows, depth 1 (where their plants sit), keep the defaults honest in CI.
"""

import numpy as np
import pytest
import scipy.stats

from cube_env import worlds
from experiments.quality import power


@pytest.mark.parametrize("k,n", [(0, 20), (1, 20), (7, 13), (20, 20)])
def test_clopper_pearson_matches_scipy(k, n):
  ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
  np.testing.assert_allclose(power.clopper_pearson(k, n), (ci.low, ci.high), rtol=1e-9, atol=1e-12)
  assert np.isnan(power.clopper_pearson(0, 0)).all()


def test_summary_pools_worlds():
  rows = [
    {"family": "standard", "setting": "s", "n_truth": 3, "n_recalled": 3, "confirmed": 4, "n_false": 1},
    {"family": "standard", "setting": "s", "n_truth": 2, "n_recalled": 1, "confirmed": 1, "n_false": 0},
    {"family": "null", "setting": "s", "n_truth": 0, "n_recalled": 0, "confirmed": 0, "n_false": 0},
    {"family": "null", "setting": "s", "n_truth": 0, "n_recalled": 0, "confirmed": 2, "n_false": 2},
  ]
  for r in rows:
    r.update(candidates=10, seconds=1.0, candidate_recalled=r["n_recalled"])
  by = {s["family"]: s for s in power.summarize(rows)}
  assert by["standard"]["recall"] == pytest.approx(4 / 5) and by["standard"]["precision"] == pytest.approx(4 / 5)
  assert by["null"]["fwer"] == 0.5 and by["null"]["recall"] is None
  np.testing.assert_allclose(by["null"]["fwer_ci"], power.clopper_pearson(1, 2))
  assert "fwer" not in by["standard"]


def test_defaults_recall_planted_effects_and_confirm_nothing_on_a_null_world():
  default = power.SETTINGS["default"]
  worlds_ = [("narrow", s) for s in worlds.world_seeds("train", 2, "narrow")] + [("null", worlds.TRAIN_SEED_BASE)]
  rows = []
  for family, seed in worlds_:
    world = worlds.make_world(seed, family=family)
    assert world.rows >= 50_000
    rows += list(power.world_rows(world, [default], max_depth=1))
  by = {s["family"]: s for s in power.summarize(rows)}
  narrow, null = by["narrow"], by["null"]
  assert narrow["planted"] == 3  # the two worlds plant a root effect, then a root and a one-filter effect
  assert narrow["recall"] == 1.0 and narrow["precision"] == 1.0, rows
  assert null["fwer"] == 0.0 and null["confirmed"] == 0, null
  for r in rows:  # the funnel: each planted effect's halves see it in its direction
    for z, ze, zc in zip(r["truth_z"], r["explore_z"], r["confirm_z"]):
      assert np.sign(ze) == np.sign(z) and np.sign(zc) == np.sign(z)


def test_power_rows_release_compiled_programs_between_worlds(monkeypatch):
  """Each world compiles programs for its own shapes; a sweep in one process releases them when crowded (a suite's
  worker died at its 25th world of the mappings they held) after every world."""
  calls = []
  monkeypatch.setattr(power.worlds, "make_world", lambda seed, family, **_: (family, seed))
  monkeypatch.setattr(power, "world_rows", lambda world, *_, **__: iter([{"world": world}]))
  monkeypatch.setattr(power.compile_cache, "release_if_crowded", lambda: calls.append(len(rows)))
  rows = []
  for row in power.power_rows(["narrow", "wide"], 3, [power.SETTINGS["default"]]):
    rows.append(row)
  assert len(rows) == 6 and calls == [1, 2, 3, 4, 5, 6]  # once after each world, its rows already out
