"""What the mirror rule of 2026-12-05 changes (README, Mirrors): each (world, method, budget) search runs once and
its candidates are confirmed twice, under today's `confirm.mirror_of` and under the rule before (a candidate is the
mirror of an opposite gap with a larger |z| that its own gap does not stand without, whatever the other's gap does
without it), and one row a run is written with both rules' confirmations, recalled plants and false findings.

`python benchmarks/mirror_rule.py SUITE SPLIT FAMILIES FIRST LAST METHODS OUT.jsonl`
(worlds FIRST..LAST-1 of each family, SPLIT train or eval, at the sizes and budgets of SUITE; FAMILIES and METHODS
comma-separated). Judges nothing: the rule was fixed by an audit's case before any of these runs.
"""

import dataclasses
import json
import sys
import unittest.mock

import numpy as np

import cube_env
from cube_env.discovery import confirm as C
from experiments.quality import runner as R
from experiments.quality import suite as S


def before(again, table, cohort, *, z_min):
  """The rule before 2026-12-05: the larger |z| of two opposite gaps is never the mirror."""
  out = []
  groups = table.groupby(["cohort_index", "protected", "measure"], sort=False)
  for i, row in enumerate(again.to_dict("records")):
    out.append(None)
    if not row["tested"]:
      continue
    try:
      same = groups.get_group((int(cohort[i]), row["protected"], row["measure"]))
    except KeyError:
      continue
    for other in same.to_dict("records"):
      if other["group"] == row["group"] or not other["tested"] or np.sign(other["z"]) != -np.sign(row["z"]):
        continue
      if abs(other["z"]) > abs(row["z"]) and C._vanishes_without(row, other, z_min):
        out[-1] = str(other["group"])
        break
  return out


def summary(table, case, explore) -> dict:
  conf = table[table["confirmed"].astype(bool)]
  s = R.score(conf, case.truth, explore)
  found = sorted((str(r.filters), r.protected, r.group, r.measure) for r in conf.itertuples())
  return dict(confirmed=len(conf), recalled=sorted(s["recalled"]), false=int(s["n_false"]), found=found)


def main() -> None:
  name, split, fams, first, last, methods, path = sys.argv[1:8]
  suite = dataclasses.replace(S.SUITES[name], split=split)
  with open(path, "a") as out:
    for fam, i, case, prepared, method, budget, _nominal, result in R.each_search(
      suite, fams.split(","), int(first), int(last), methods.split(",")
    ):
      explore = prepared.halves.explore
      now = summary(cube_env.confirm(result, prepared), case, explore)
      with unittest.mock.patch.object(C, "mirror_of", before):
        old = summary(cube_env.confirm(result, prepared), case, explore)
      row = dict(
        suite=name, split=split, family=fam, world=i, method=method, budget=budget, candidates=len(result.candidates)
      )
      row.update(
        {f"now_{k}": v for k, v in now.items() if k != "found"},
        **{f"before_{k}": v for k, v in old.items() if k != "found"},
      )
      row["changed"] = now["found"] != old["found"]
      out.write(json.dumps(row) + "\n")
      out.flush()
      print(
        fam, i, method, budget, "changed" if row["changed"] else "same", now["recalled"], old["recalled"], flush=True
      )


if __name__ == "__main__":
  main()
