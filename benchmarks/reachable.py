"""The ceiling of confirmed recall on a suite's worlds (benchmarks/README, *What any search can reach*).

A planted effect can be confirmed by a search only if, on the exploration half, its test at its own cohort is
significant and new by the space's own thresholds (`cohort_table` with the search space's params: the |z| screen
and the exploration newness z), so that visiting the cohort makes it a candidate; and then only if it passes
confirmation. Per world and plant this script reports both: `reachable` (a candidate when visited) and `alone`
(confirmed when it is the only candidate: no multiplicity; a reference, not a bound: the mirror and newness checks
read the candidate's own cohort, and a run's larger candidate set can change which groups they compare). It
chooses nothing; it describes the worlds the methods are scored on. Each row records the world's table
(`world_sha256`, `suite.world_id`), and `compare` counts only run rows of the same tables (a machine can draw
another table for a seed: benchmarks/README.md, *The same seed, another table*). Only the planted group's own
test is read (a plant on a two-group column tested through its other group would read as unreachable).

`python benchmarks/reachable.py SUITE SPLIT FAMILY[,FAMILY...] [FIRST-STOP] > OUT.jsonl` (e.g. `standard eval
standard,wide,deep,masked`); `python benchmarks/reachable.py compare OUT.jsonl RUNS.jsonl` sets the counts beside
each method's confirmed plants at its largest budget (fixed budgets: 1,000 queries; fractions: 5%).
"""

import dataclasses
import json
import sys

import pandas as pd

import cube_env
from experiments.quality import runner as R
from experiments.quality import suite as S
from experiments.quality.pool import read_rows


def plant_rows(case: S.Case, prep: R.PreparedCase) -> list[dict]:
  """One row per planted effect of a case: significant, new, reachable and confirmed alone."""
  prepared = prep.prepared
  space, explore = prepared.space, prepared.halves.explore
  out = []
  for i, t in enumerate(case.truth):
    codes = cube_env.filters_to_codes(explore.meta, t.cohort)
    table = cube_env.cohort_table(
      explore,
      codes[None],
      **space.thresholds,
      params=space.params,
    )
    test = table[(table.protected == t.protected) & (table.group == t.group) & (table.measure == t.measure)]
    row = dict(plant=i, depth=len(t.cohort), explore_z=None, significant=False, new=False, reachable=False, alone=False)
    if len(test):
      hit = test.iloc[0]
      row.update(explore_z=float(hit.z), significant=bool(hit.significant), new=bool(hit.new))
      row["reachable"] = row["significant"] and row["new"]
      if row["reachable"]:
        single = test.iloc[:1].assign(query=0, path="")
        found = cube_env.confirm(dataclasses.replace(_empty_result(), candidates=single), prepared)
        row["alone"] = bool(found["confirmed"].any())
    out.append(row)
  return out


def _empty_result() -> cube_env.SearchResult:
  return cube_env.SearchResult(
    method="ceiling", budget=0, queries=0, seconds=0.0, visits=pd.DataFrame(), candidates=pd.DataFrame(), z_screen=0.0
  )


def compare(reach_path: str, runs_path: str) -> None:
  """Per family: plants, reachable, confirmed alone, and each method's confirmed plants at its largest budget."""
  reach = read_rows(reach_path)
  runs = [r for r in read_rows(runs_path) if r.get("kind") == "run" and r.get("applicable")]
  for family in sorted({r["family"] for r in reach}):
    mine = [r for r in reach if r["family"] == family]
    seeds = {r["seed"] for r in mine}
    tables = {r["seed"]: r.get("world_sha256") for r in mine}
    line = (
      f"{family:8s} worlds {len(seeds):2d} plants {len(mine):3d} reachable {sum(r['reachable'] for r in mine):3d} "
      f"confirmed alone {sum(r['alone'] for r in mine):3d} |"
    )
    for method in ("greedy", "beam", "learned", "muzero"):
      best = {}  # seed -> the run at the method's largest budget (walkers: at most 5%)
      for r in runs:
        if (
          r["family"] == family
          and r["seed"] in seeds
          and r.get("world_sha256") == tables[r["seed"]]  # the same table (both unrecorded: assumed the same)
          and r["method"] == method
          and (r.get("nominal_fraction") or r["budget_fraction"]) <= 0.05 + 1e-9  # 5% stands for 0.050002
        ) and (r["seed"] not in best or r["budget"] > best[r["seed"]]["budget"]):
          best[r["seed"]] = r
      line += f" {method} {sum(len(r['recalled']) for r in best.values())} ({len(best)} worlds)"
    print(line)


def main() -> None:
  """`reachable.py SUITE SPLIT FAMILIES [FIRST-STOP]`, or `reachable.py compare REACH RUNS` (module docstring)."""
  if sys.argv[1] == "compare":
    compare(sys.argv[2], sys.argv[3])
    return
  suite = dataclasses.replace(S.SUITES[sys.argv[1]], split=sys.argv[2])
  families = sys.argv[3].split(",")
  worlds = range(*map(int, sys.argv[4].split("-"))) if len(sys.argv) > 4 else range(suite.seeds)
  for index in worlds:
    for family in families:
      case = S.make_case(family, index, suite)
      prep = R.prepare_case(case, max_depth=suite.depth(family))
      ident = dict(family=family, world=index, seed=case.seed, split=case.split, world_sha256=S.world_id(case))
      for row in plant_rows(case, prep):
        print(json.dumps(dict(ident, **row)), flush=True)


if __name__ == "__main__":
  main()
