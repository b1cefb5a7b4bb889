"""Issue 18's figures on the twenty-world `standard` file (benchmarks/README.md, *Twenty evaluation worlds a family*):
`muzero` minus the best heuristic, minus greedy, and minus the best of the heuristics and `frontier`, per family and
budget (paired bootstrap 95% over worlds, `summary.paired`; then the paired sign flip's two-sided p and the worlds
better and worse) on worlds 0-19, 0-9 and 10-19 (and the replication's 20-39 and 0-39 where the rows hold them);
worlds with a false finding on null and confounded; `muzero` against `learned` run by run.

`python benchmarks/twenty_worlds.py [benchmarks/quality_standard20_cpu.jsonl RERUN.jsonl ...] [--plot PNG]` (a later
file's rows replace the earlier ones of the same family, world, method and budget; with no file, `COMMITTED`, the
files `twenty_worlds_cpu.txt` was printed from). `--plot` also draws the merged rows' recall against queries and seconds
(`experiments.quality.plot`; `quality_standard20_cpu.png`): their seconds come from several calls on two VMs, so
read per-second comparisons from a one-call file instead (`per_second.py`).
"""

import json
import os
import sys

from cube_env.worlds import EVAL_SEED_BASE as BASE
from experiments.quality.plot import plot
from experiments.quality.pool import undefined
from experiments.quality.summary import HEURISTICS, paired, summarize

FAMILIES = ("wide", "deep", "masked", "standard")
SETS = {"0-19": (0, 20), "0-9": (0, 10), "10-19": (10, 20)}
# The registered replication on fresh worlds (benchmarks/README.md, *A replication on twenty fresh evaluation
# worlds*): printed when the rows hold worlds past 19.
REPLICATION = {"20-39": (20, 40), "0-39": (0, 40)}


def cell(row: dict, *, detail: bool) -> str:
  out = f"{row['budget_key']} {row['diff_mean']:+.2f} [{row['diff_low']:+.2f}, {row['diff_high']:+.2f}]"
  # The paired sign flip's p and the worlds better / worse (a cold audit: the bootstrap's interval excludes 0 too
  # easily where most worlds differ by 0; `summary.sign_flip_p`).
  p = row["sign_flip_p"]
  out += f" p {'<0.001' if p < 0.001 else f'{p:.3f}'} {row['worlds_better']}+/{row['worlds_worse']}-"
  if detail:
    out += f" ({row['recall_mean']:.2f} v {row['other']} {row['other_recall_mean']:.2f}, n {row['seeds']})"
  return out


def report(runs: list[dict]) -> None:
  sets = {**SETS, **(REPLICATION if any(r["seed"] - BASE >= 20 for r in runs) else {})}
  for name, (low, high) in sets.items():
    sub = [r for r in runs if low <= r["seed"] - BASE < high]
    for title, among, detail in (
      ("the best of " + ", ".join(HEURISTICS), HEURISTICS, True),
      ("greedy", ["greedy"], False),
      # The project's own frontier search with the pixel |z| ranking is a heuristic too, though not among issue
      # 18's (a reproducibility audit: against it most of masked's margin goes).
      ("the best of those and frontier (not in issue 18's list)", [*HEURISTICS, "frontier"], True),
    ):
      print(f"== worlds {name}: muzero minus {title}")
      rows = paired(sub, method="muzero", among=among)
      for fam in FAMILIES:
        cells = sorted(
          (r for r in rows if r["family"] == fam), key=lambda r: (r["budget_fraction"], r["budget"])
        )  # as tables.py orders budgets
        if cells:
          print(fam, " | ".join(cell(r, detail=detail) for r in cells))
    for fam in ("null", "confounded"):
      fr = [r for r in sub if r["family"] == fam]
      if not fr:
        continue
      bad: dict[str, set] = {}
      for r in fr:
        if r.get("family_wise_error"):
          bad.setdefault(r["method"], set()).add(r["seed"] - BASE)
      found = {m: sorted(v) for m, v in bad.items()}
      print(f"-- {fam}: {len({r['seed'] for r in fr})} worlds; worlds with a false finding, by method: {found}")
    learned = {(r["family"], r["seed"], r["budget"]): r["recall"] for r in sub if r["method"] == "learned"}
    pairs = [
      (r["recall"], learned[k])
      for r in sub
      if r["method"] == "muzero" and (k := (r["family"], r["seed"], r["budget"])) in learned
    ]
    same = sum(a == b or (undefined(a) and undefined(b)) for a, b in pairs)  # no plant: counts as equal
    confirmed = {(r["family"], r["seed"], r["budget"]): r["confirmed"] for r in sub if r["method"] == "learned"}
    alike = sum(
      r["confirmed"] == confirmed[k]
      for r in sub
      if r["method"] == "muzero" and (k := (r["family"], r["seed"], r["budget"])) in confirmed
    )
    print(f"-- muzero's recall equals learned's in {same} of {len(pairs)} runs, its confirmed count in {alike}")


HERE = os.path.dirname(os.path.abspath(__file__))
# The committed rows, in order (twenty_worlds_cpu.txt's first line): the full file, then the re-runs that replace rows.
COMMITTED = [
  os.path.join(HERE, f"quality_standard20_{name}cpu.jsonl")
  for name in ("", "deep_floor_", "widemasked_floor_", "nullconf_floor_", "standard_floor_", "others_floor_", "split_")
]


def merged(paths: list[str]) -> list[dict]:
  """The `standard` suite's run rows of `paths`, a later file's row replacing an earlier one's of the same family,
  world, method and budget (a re-run of some families or methods on top of the full file)."""
  runs: dict[tuple, dict] = {}
  for path in paths:
    with open(path) as handle:
      for line in handle:
        r = json.loads(line)
        if r.get("kind") == "run" and r.get("suite") == "standard":
          runs[(r["family"], r["seed"], r["method"], r["budget"])] = r
  return list(runs.values())


if __name__ == "__main__":
  args = sys.argv[1:]
  png = None
  if "--plot" in args:
    at = args.index("--plot")
    if at + 1 >= len(args):
      sys.exit("--plot needs a PNG path")
    png = args.pop(at + 1)
    args.pop(at)
  runs = merged(args or COMMITTED)
  if not runs:
    sys.exit(f"no run rows of the standard suite in {', '.join(args)}")
  report(runs)
  if png:
    title = "suite standard, 20 evaluation worlds a family; seconds from several calls on two 2-core VMs"
    plot(summarize(runs), png, title=title)
    print(f"plot: {png}")
