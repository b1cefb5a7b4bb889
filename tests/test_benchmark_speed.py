"""Speed benchmark: the linearity check fits log-log slopes of step time."""

import pytest

from experiments.speed import scaling


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
