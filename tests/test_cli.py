"""The discover and benchmark entry points on tiny inputs."""

import json

from experiments import benchmark, discover
from tests.conftest import make_small_df


def test_discover_on_a_csv(tmp_path, capsys):
  path = tmp_path / "cases.csv"
  make_small_df(n=3000).to_csv(path, index=False)
  code = discover.main(
    [
      "--data",
      str(path),
      "--dimensions",
      "proc",
      "site",
      "urgency",
      "--protected",
      "race",
      "sex",
      "--measures",
      "minutes",
      "complication",
      "--max-depth",
      "2",
      "--z-screen",
      "4",
    ]
  )
  out = capsys.readouterr().out
  assert code == 0
  assert "group-by queries" in out and "new findings" in out
  assert "proc=A" in out  # the planted gap (race B, minutes) is new at proc=A


def test_discover_errors_name_the_problem(tmp_path, capsys):
  path = tmp_path / "cases.csv"
  make_small_df(n=200).to_csv(path, index=False)
  assert (
    discover.main(["--data", str(path), "--dimensions", "proc", "nope", "--protected", "race", "--measures", "minutes"])
    == 2
  )
  assert "'nope'" in capsys.readouterr().err
  assert discover.main(["--demo", "mixed", "--min-group", "5"]) == 2
  assert "--min-group" in capsys.readouterr().err
  assert discover.main(["--demo", "unknown"]) == 2
  assert "--demo" in capsys.readouterr().err


def test_benchmark_env_emits_json(tmp_path):
  out = tmp_path / "env.jsonl"
  assert (
    benchmark.main(
      [
        "env",
        "--cells",
        "500",
        "--batches",
        "1",
        "2000",
        "--max-work",
        "1e5",
        "--out",
        str(out),
      ]
    )
    == 0
  )
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  measured = [r for r in rows if r.get("bench") == "env" and "steps_per_s" in r]
  skipped = [r for r in rows if "skipped" in r]
  assert len(measured) == 1 and measured[0]["steps_per_s"] > 0 and measured[0]["method"] == "index"
  # Beside today's dense step, the bare reduction and the memory bound, in the same run.
  assert measured[0]["speedup"] > 0 and measured[0]["ratio_to_reduction"] > 0 and measured[0]["ratio_to_numpy"] > 0
  assert 0 < measured[0]["peak_bytes"] <= measured[0]["bound_bytes"]
  assert len(skipped) == 1 and skipped[0]["batch"] == 2000
