"""Speed benchmark: the linearity check fits log-log slopes of step time; the commands' flags are checked first."""

import json
import re

import pytest

from experiments import benchmark
from experiments.speed import scaling
from tests.conftest import override_flags

SMALL_SPEED = ["--cells", "1000", "--batches", "1", "--profile-cells", "1000", "--table-rows", "0", "--wide-rows", "0"]


def test_slopes_flag_superlinear_cost():
  rows = [
    dict(bench="env", cells=c, batch=b, step_s=1e-6 * c * (b if b == 1 else b * b))
    for c in (1e3, 1e4, 1e5)
    for b in (1, 4)
  ] + [dict(bench="env", cells=1e6, batch=4, skipped="too big")]
  by_cells = {r["batch"]: r for r in scaling.slopes(rows, x="cells", group="batch")}
  assert by_cells[1]["slope"] == pytest.approx(1.0) and by_cells[1]["at_most_linear"]
  by_batch = {r["cells"]: r for r in scaling.slopes(rows, x="batch", group="cells")}
  assert by_batch[1e3]["slope"] == pytest.approx(2.0) and not by_batch[1e3]["at_most_linear"]
  assert by_batch[1e3]["points"] == 2 and set(by_batch) == {1e3, 1e4, 1e5}


def test_slopes_keep_group_by_methods_apart():
  rows = [
    dict(bench="env", method=m, cells=c, batch=1, step_s=1e-6 * c ** (1 if m == "matmul" else 2))
    for m in ("matmul", "segment")
    for c in (1e3, 1e4)
  ]
  by_method = {r["method"]: r for r in scaling.slopes(rows, x="cells", group="batch")}
  assert by_method["matmul"]["slope"] == pytest.approx(1.0) and by_method["matmul"]["at_most_linear"]
  assert by_method["segment"]["slope"] == pytest.approx(2.0) and not by_method["segment"]["at_most_linear"]


@pytest.mark.parametrize(
  "argv, message",
  [
    # Before any measurement (an audit: each was a traceback, a KeyError after minutes of other figures, or, for
    # --repeats 0, nothing measured and nothing said).
    (["env", "--methods", "nope", "--cells", "1000", "--batches", "1"], "unknown --methods 'nope'; choose from index"),
    (["search", "--preset", "nope"], "unknown --preset 'nope'; choose from smoke, cpu"),
    (["selfplay", "--preset", "smoke", "--batch-sizes", "0"], "--batch-sizes must be at least 1, got 0"),
    (["checkpoint", "--preset", "nope"], "unknown --preset 'nope'"),
    (["checkpoint", "--preset", "smoke", "--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["speed", *SMALL_SPEED, "--preset", "nope"], "unknown --preset 'nope'"),
    (["speed", *override_flags(SMALL_SPEED, ["--cells", "0"])], "--cells and --batches must be at least 1"),
    (["cartpole", "--preset", "nope", "--speed-presets", "smoke"], "unknown --preset 'nope'; choose from smoke"),
    (["cartpole", "--speed-presets", "nope"], "unknown --speed-presets 'nope'"),
  ],
)
def test_speed_commands_name_the_bad_flag(argv, message, capsys):
  with pytest.raises(SystemExit, match=re.escape(message)) as exit_:
    benchmark.main(argv)
  assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_out_file_in_a_new_directory(tmp_path):
  """`--out` into a directory that does not exist yet makes it, as the plot's is (it was a traceback)."""
  out = tmp_path / "new" / "dir" / "rows.jsonl"
  benchmark._emit([{"bench": "x", "n": 1}], str(out))
  assert [json.loads(line) for line in out.read_text().splitlines()] == [{"bench": "x", "n": 1}]
