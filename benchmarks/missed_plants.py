"""Which planted cohorts the learned search reveals but never visits, and how they rank (a diagnosis on training
worlds; benchmarks/README.md, *Where planted candidates are lost at 1,000 queries*).

For each world the packaged learned ranking (`learned`'s own: `learned_ranker` with the space's depth) walks the
frontier for BUDGET queries, and every drill-down it reveals is kept with its best log-odds, its features and its
depth. Per planted effect one row: whether its cohort was revealed and visited (by `learned`, and by greedy at the
same budget), its log-odds and its share of the revealed cohorts ranked above it, its size (`log_size`, log rows
over log rows of the table) and pixel |z|, beside the median of the cohorts `learned` visited at the same depth.

`python benchmarks/missed_plants.py SUITE FAMILY[,FAMILY...] FIRST STOP BUDGET OUT.jsonl` (training worlds).
"""

import dataclasses
import json
import sys

import numpy as np

import cube_env
from cube_env.discovery import frontier as F
from cube_env.discovery import ranking
from cube_env.discovery.space import target
from experiments.launch import compile_cache
from experiments.quality import runner as R
from experiments.quality import suite as S

LOG_SIZE, Z = ranking.FEATURES.index("log_size"), ranking.FEATURES.index("z")


def visited_keys(result, meta) -> set:
  return {tuple(int(v) for v in cube_env.filters_to_codes(meta, f)) for f in result.visits["filters"]}


def main() -> None:
  suite = dataclasses.replace(S.SUITES[sys.argv[1]], split="train")
  families = sys.argv[2].split(",")
  first, stop, budget = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
  greedy = R.build_methods(["greedy"], None, suite.method_options)["greedy"]
  with open(sys.argv[6], "a") as out:
    for index in range(first, stop):
      for family in families:
        case = S.make_case(family, index, suite)
        prep = R.prepare_case(case, max_depth=suite.depth(family))
        space, meta = prep.prepared.space, prep.prepared.space.cube.meta
        c = space.env.shape.num_values
        rank = ranking.learned_ranker(max_depth=space.max_depth)
        seen: dict[tuple, tuple] = {}  # revealed cohort -> (best log-odds, features)

        def watch(filters, obs, own, actions, rank=rank, seen=seen, c=c):
          acts = np.asarray(actions, np.int64)
          scores, x = rank(obs, own)[acts], ranking.features(obs, own)[acts]
          for a, s, row in zip(acts.tolist(), scores.tolist(), x):
            key = target(filters, a, c)
            if key not in seen or seen[key][0] < s:
              seen[key] = (s, row)

        compile_cache.release_if_crowded()  # each world compiles its own shapes' programs
        walked = F.frontier(space, budget=budget, seed=0, ranker=rank, watch=watch)
        by_learned = visited_keys(walked, meta)
        by_greedy = visited_keys(cube_env.search(prep.prepared, greedy.search, budget=budget), meta)
        depth_of = {k: sum(v >= 0 for v in k) for k in seen}
        for p, t in enumerate(case.truth):
          key = tuple(int(v) for v in cube_env.filters_to_codes(meta, t.cohort))
          depth = sum(v >= 0 for v in key)
          peers = [seen[k] for k in by_learned if k in seen and depth_of[k] == depth]
          row = dict(
            suite=sys.argv[1],
            family=family,
            world=index,
            plant=p,
            depth=depth,
            budget=budget,
            revealed=key in seen,
            visited=key in by_learned,
            greedy_visited=key in by_greedy,
            visited_same_depth=len(peers),
            peers_median_log_odds=float(np.median([s for s, _ in peers])) if peers else None,
            peers_median_log_size=float(np.median([x[LOG_SIZE] for _, x in peers])) if peers else None,
            peers_median_z=float(np.median([x[Z] for _, x in peers])) if peers else None,
          )
          if key in seen:
            s, x = seen[key]
            row.update(
              log_odds=float(s),
              log_size=float(x[LOG_SIZE]),
              z=float(x[Z]),
              ranked_above=float(np.mean([v[0] > s for v in seen.values()])),
            )
          out.write(json.dumps(row) + "\n")
          out.flush()
          print(family, index, p, {k: row[k] for k in ("depth", "revealed", "visited", "greedy_visited")}, flush=True)


if __name__ == "__main__":
  main()
