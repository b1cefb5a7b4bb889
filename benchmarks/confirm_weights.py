"""Weighted Holm's weights, replayed on the same searches (benchmarks/README, *Confirmation weights*).

Each (world, method, budget) search runs once at quick sizes on training worlds; its candidates are confirmed
once with the pipeline's defaults, then the weighted-Holm step is redone under other weights from the same
`p_confirm` and the other rules' outcomes (sign, relative difference, newness, mirror), and each variant is scored
as the benchmark scores a run (`runner.score` of the confirmed rows). The replayed "base" must reproduce the
pipeline's confirmations exactly (asserted).

`python benchmarks/confirm_weights.py standard,wide,deep,masked,null,confounded FIRST LAST greedy,learned OUT.jsonl`
(training worlds FIRST..LAST-1 of each family).
"""

import dataclasses
import json
import sys
import time

import numpy as np
import pandas as pd
from scipy import stats

import cube_env
from cube_env.discovery.confirm import exploration_weights, holm, pooled_p
from experiments.quality import runner as R
from experiments.quality import suite as S


def weights(f, *, pooled, floor, tilt=1.0):
  """Weighted Holm's weights (mean 1) from a confirmed table's exploration columns: exp(tilt |z|), |z| capped at
  the pooled-variance z on continuous measures when `pooled`, mixed with a share `floor` of equal weights."""
  z = np.abs(np.nan_to_num(f["explore_z"].to_numpy(float)))
  if pooled:
    cols = [
      pd.to_numeric(f[f"explore_{c}"], errors="coerce").to_numpy(float)
      for c in ("n_group", "var_group", "n_rest", "var_rest", "diff")
    ]
    pz = stats.norm.isf(pooled_p(*cols) / 2)
    cont = (f["scale"] != "binary").to_numpy(bool)
    z = np.where(cont, np.minimum(z, np.nan_to_num(pz)), z)
  return (1 - floor) * exploration_weights(z, tilt=tilt) + floor


VARIANTS = {
  "base": dict(pooled=False, floor=0.0),
  "pooled": dict(pooled=True, floor=0.0),
  "floor50": dict(pooled=False, floor=0.5),
  "pooled_floor50": dict(pooled=True, floor=0.5),
  "floor20": dict(pooled=False, floor=0.2),
  "holm": dict(pooled=False, floor=1.0),
}


def main() -> None:
  fams = sys.argv[1].split(",")
  first, last = int(sys.argv[2]), int(sys.argv[3])
  methods = sys.argv[4].split(",")
  suite = dataclasses.replace(S.SUITES["quick"], split="train")
  with open(sys.argv[5], "a") as out:
    for fam, i, case, prepared, name, budget, nominal, result in R.each_search(suite, fams, first, last, methods):
      t0 = time.perf_counter()
      f = cube_env.confirm(result, prepared)
      row = dict(
        family=fam,
        world=i,
        seed=case.seed,
        method=name,
        budget=budget,
        nominal=nominal,
        n_truth=len(case.truth),
        candidates=len(f),
        confirm_seconds=time.perf_counter() - t0,
      )
      if len(f):
        rest_ok = np.logical_and.reduce(list(R.confirmation_checks(f, prepared.config).values()))
      for v, kw in VARIANTS.items():
        if len(f):
          rej, _ = holm(f["p_confirm"].to_numpy(float), alpha=prepared.config.q, weights=weights(f, **kw))
          conf = f[rej & rest_ok]
          if v == "base":
            assert (rej & rest_ok).sum() == int(f["confirmed"].sum()), (fam, i, name, budget)
        else:
          conf = f
        s = R.score(conf, case.truth, prepared.halves.explore)
        row[v] = dict(recall=s["recall"], confirmed=len(conf), false=s["n_false"])
      out.write(json.dumps(row) + "\n")
      out.flush()
      print(fam, i, name, budget, {v: (round(row[v]["recall"], 2), row[v]["false"]) for v in VARIANTS}, flush=True)


if __name__ == "__main__":
  main()
