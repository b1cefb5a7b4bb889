"""Two methods' recall, paired run by run, on the worlds both ran: the mean difference over all paired runs with the
percentile bootstrap 95% interval over worlds (`summary.bootstrap_interval` of the per-world mean differences; the
runs are balanced, so their mean is the mean over worlds), then per family and budget, and how many runs differ.

`python benchmarks/arms.py FILE.jsonl A B` (A minus B; e.g. `muzero@depth=1 muzero`).
"""

import collections
import sys

import numpy as np

from experiments.quality.pool import read_rows, undefined
from experiments.quality.summary import bootstrap_interval


def main() -> None:
  path, a, b = sys.argv[1:4]
  recall: dict = collections.defaultdict(dict)  # (family, seed, budget) -> method -> recall
  for r in read_rows(path):
    if r.get("kind") == "run" and r.get("applicable") and r["method"] in (a, b) and not undefined(r["recall"]):
      key = (r["family"], r["seed"], r["budget"] if r["budget_kind"] == "fixed" else r["nominal_fraction"])
      recall[key][r["method"]] = r["recall"]
  pairs = {k: v[a] - v[b] for k, v in recall.items() if a in v and b in v}
  by_world = collections.defaultdict(list)
  for (family, seed, _), d in pairs.items():
    by_world[(family, seed)].append(d)
  per_world = np.array([np.mean(v) for v in by_world.values()])
  low, high = bootstrap_interval(per_world, reps=10000, seed=0)
  diffs = np.array(list(pairs.values()))
  print(
    f"{a} minus {b}: {diffs.mean():+.3f} [{low:+.3f}, {high:+.3f}] over {len(diffs)} paired runs in {len(per_world)} "
    f"worlds ({int((diffs > 0).sum())} runs better, {int((diffs < 0).sum())} worse)"
  )
  for family, budget in sorted({(k[0], k[2]) for k in pairs}):
    d = np.array([v for k, v in pairs.items() if k[0] == family and k[2] == budget])
    ra = np.mean([recall[k][a] for k in pairs if k[0] == family and k[2] == budget])
    rb = np.mean([recall[k][b] for k in pairs if k[0] == family and k[2] == budget])
    lo, hi = bootstrap_interval(d, reps=10000, seed=0)
    print(f"  {family} {budget}: {ra:.3f} vs {rb:.3f}, {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] ({len(d)} worlds)")


if __name__ == "__main__":
  main()
