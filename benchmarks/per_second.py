"""Per second, in one call (benchmarks/README.md): a method's recall minus the best recall the heuristics reached on
the same world in no more seconds (any of their budgets); paired over worlds, the suites' bootstrap 95% interval
(`experiments.quality.summary.bootstrap_interval`).

`python benchmarks/per_second.py RUNS.jsonl greedy,beam learned,muzero` (RUNS from one `benchmark quality` call).
"""

import collections
import json
import sys

import numpy as np

from experiments.quality.summary import bootstrap_interval

path, heur, methods = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
runs = collections.defaultdict(list)
with open(path) as handle:
  for line in handle:
    r = json.loads(line)
    if r.get("kind") == "run":
      runs[(r["family"], r["seed"])].append(r)
for fam in ("wide", "deep"):
  for m in methods:
    for b in (100, 300, 1000):
      d, ms = [], []
      for (f, _seed), rows in sorted(runs.items()):
        if f != fam:
          continue
        mine = [r for r in rows if r["method"] == m and r["budget"] == b]
        if not mine:
          continue
        me = mine[0]
        best = max([r["recall"] for r in rows if r["method"] in heur and r["seconds"] <= me["seconds"]], default=0.0)
        d.append(me["recall"] - best)
        ms.append(me["seconds"])
      if d:
        low, high = bootstrap_interval(d)
        print(
          f"{fam:5s} {m:8s} {b:5d} q: mean seconds {np.mean(ms):6.2f}  minus best heuristic within its seconds "
          f"{np.mean(d):+.2f} [{low:+.2f}, {high:+.2f}] (n {len(d)})"
        )
  for h in heur:
    for b in (100, 300, 1000):
      rs = [r for rows in runs.values() for r in rows if r["family"] == fam and r["method"] == h and r["budget"] == b]
      if rs:
        print(
          f"   {fam} {h} {b} q: recall {np.mean([r['recall'] for r in rs]):.2f} seconds {np.mean([r['seconds'] for r in rs]):.2f}"
        )
