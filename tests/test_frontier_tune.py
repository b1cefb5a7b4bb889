"""experiments.agent.frontier_tune: positions round-trip, group by shape, and the command writes a loadable agent."""

import json

import jax
import numpy as np
import pytest

from cube_env.discovery import ranking
from cube_env.environment.env import CHANNELS
from experiments.agent import frontier_tune, loading


def _positions(seed: int, n: int, num_f: int, width: int, k: int = 4) -> ranking.Positions:
  rng = np.random.default_rng(seed)
  obs = rng.random((n, len(CHANNELS), num_f, width)).astype(np.float32)
  legal = np.ones((n, num_f * width), bool)
  marked = np.zeros_like(legal)
  marked[np.arange(n), rng.integers(0, num_f * width, n)] = True
  actions = np.stack([rng.permutation(num_f * width)[:k] for _ in range(n)]).astype(np.int32)
  labels = np.take_along_axis(marked, actions, axis=1).astype(np.float32)
  return ranking.Positions(obs, legal, marked, actions, labels, np.ones((n, k), np.float32), rng.random(n))


def test_positions_round_trip_and_group_by_shape(tmp_path):
  walked = [
    ("wide", 20, _positions(0, 5, 4, 5)),
    ("deep", 20, _positions(1, 3, 6, 5)),
    ("wide", 21, _positions(2, 2, 4, 5)),
  ]
  path = str(tmp_path / "positions.npz")
  frontier_tune.save_positions(path, walked)
  back = frontier_tune.load_positions(path)
  assert [(f, i) for f, i, _ in back] == [("wide", 20), ("deep", 20), ("wide", 21)]
  for (_, _, a), (_, _, b) in zip(walked, back, strict=True):
    for field in frontier_tune.STORED:
      np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
  groups = frontier_tune.groups_by_shape(back)
  assert sorted(len(g.legal) for g in groups) == [3, 7]  # the two 4 x 5 worlds in one group
  seven = next(g for g in groups if len(g.legal) == 7)
  np.testing.assert_array_equal(seven.obs, np.concatenate([walked[0][2].obs, walked[2][2].obs]))


def test_the_command_fine_tunes_and_exports_an_agent(tmp_path, capsys):
  """From cached positions the command fine-tunes the packaged agent a few steps and writes an agent that loads,
  plays the same grids, records how it was made, and differs from the packaged one."""
  path = str(tmp_path / "positions.npz")
  frontier_tune.save_positions(path, [("standard", 20, _positions(0, 6, 8, 5))])
  out = str(tmp_path / "tuned.npz")
  assert frontier_tune.main(["--out", out, "--positions", path, "--steps", "3", "--batch-size", "4"]) == 0
  assert "6 positions in 1 shapes, 6 marked" in capsys.readouterr().out
  tuned, packaged = loading.load_agent(out), loading.load_agent(None)
  assert tuned.any_grid and (tuned.num_filters, tuned.num_values) == (packaged.num_filters, packaged.num_values)
  record = json.loads(tuned.source)
  assert record["from"] == "pretrained.npz" and record["frontier_tune"]["steps"] == 3
  assert record["walked"] == [["standard", 20]] and record["positions"] == 6
  leaves = zip(jax.tree_util.tree_leaves(tuned.params), jax.tree_util.tree_leaves(packaged.params), strict=True)
  assert any(not np.array_equal(a, b) for a, b in leaves)
  with pytest.raises(SystemExit):
    frontier_tune.main(["--out", str(tmp_path / "tuned.bin"), "--positions", path])
