"""Where planted candidates are lost between the search and confirmation (a diagnosis on training worlds).

Each (world, method, budget) search runs once; its candidates are confirmed with the pipeline's
defaults, and every candidate row that tests a planted effect (scored alone: it recalls a plant) is written with
its exploration and confirmation statistics, the weighted-Holm weight it drew, and which of confirmation's rules
it passed: Holm's step (`holm`), the same sign, the relative difference, newness on the confirmation half and the
mirror check, and `alone` (its p-value under alpha, as if it were the only candidate).

Each run also gets one row (`kind` "run") with its candidates, confirmations and recalled plants, and how much of
the weight went to continuous-measure candidates whose group's measure is constant on the exploration half
(`flat`: variance 0, so Welch's z is unbounded; the alpha hog of benchmarks/README.md, *Confirmation weights*).

`python benchmarks/confirm_loss.py SUITE wide,deep FIRST LAST greedy,learned OUT.jsonl`
(training worlds FIRST..LAST-1 of each family, at the sizes and budgets of SUITE: quick or standard).
"""

import dataclasses
import json
import sys

import numpy as np
import pandas as pd

import cube_env
from cube_env.discovery.confirm import exploration_weights, holm
from experiments.quality import runner as R
from experiments.quality import suite as S


def main() -> None:
  suite = dataclasses.replace(S.SUITES[sys.argv[1]], split="train")
  fams = sys.argv[2].split(",")
  first, last = int(sys.argv[3]), int(sys.argv[4])
  methods = sys.argv[5].split(",")
  with open(sys.argv[6], "a") as out:
    for fam, i, case, prepared, name, budget, nominal, result in R.each_search(suite, fams, first, last, methods):
      explore, alpha = prepared.halves.explore, prepared.config.q
      f = cube_env.confirm(result, prepared).reset_index(drop=True)
      if not len(f):
        continue
      if prepared.config.correction != "weighted":
        raise ValueError(f"confirm_loss replays weighted Holm; this config uses {prepared.config.correction!r}")
      w = exploration_weights(f["explore_z"].to_numpy(float), tilt=prepared.config.tilt)
      rej, adj = holm(f["p_confirm"].to_numpy(float), alpha=alpha, weights=w)
      checks = R.confirmation_checks(f, prepared.config)
      conf = f[f["confirmed"].astype(bool)]
      # the replay is the pipeline's rule: Holm's step and the other checks give exactly its confirmations
      replayed = rej & np.logical_and.reduce(list(checks.values()))
      assert np.array_equal(replayed, f["confirmed"].to_numpy(bool)), (fam, i, name)
      recalled = set(R.score(conf, case.truth, explore)["recalled"])
      flat = (f["scale"] != "binary").to_numpy(bool) & (
        pd.to_numeric(f["explore_var_group"], errors="coerce").to_numpy(float) == 0.0
      )
      run = dict(kind="run", suite=sys.argv[1], family=fam, world=i, method=name, budget=budget)
      run.update(
        candidates=len(f),
        confirmed=int(f["confirmed"].sum()),
        recalled=sorted(recalled),
        flat=int(flat.sum()),
        flat_weight_share=float(w[flat].sum() / w.sum()),
        top_weight_share=float(w.max() / w.sum()),
        top_is_flat=bool(flat[int(np.argmax(w))]),
      )
      out.write(json.dumps(run) + "\n")
      for j in range(len(f)):
        s = R.score(f.iloc[[j]].assign(new=True), case.truth, explore)
        if not s["recalled"]:
          continue
        row = dict(
          suite=sys.argv[1],
          family=fam,
          world=i,
          method=name,
          budget=budget,
          nominal=nominal,
          candidates=len(f),
          plants=s["recalled"],
          plant_recalled=bool(set(s["recalled"]) & recalled),
          confirmed=bool(f["confirmed"].iloc[j]),
          explore_z=float(f["explore_z"].iloc[j]),
          z=float(np.nan_to_num(f["z"].iloc[j])),
          p_confirm=float(f["p_confirm"].iloc[j]),
          weight=float(w[j]),
          z_rank=int((np.abs(f["explore_z"]) > abs(f["explore_z"].iloc[j])).sum()),
          holm=bool(rej[j]),
          adjusted=float(adj[j]),
          alone=bool(f["p_confirm"].iloc[j] <= alpha),
          **{rule: bool(holds[j]) for rule, holds in checks.items()},
        )
        out.write(json.dumps(row) + "\n")
        out.flush()
      print(fam, i, name, budget, len(f), "recalled", sorted(recalled), flush=True)


if __name__ == "__main__":
  main()
