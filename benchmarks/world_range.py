"""A suite's methods on a range of worlds that do not start at world 0 (the benchmark's `--seeds N` runs worlds
0..N-1): fresh training worlds for a validation that earlier ones have been used up for (benchmarks/README.md, *A
depth preference for spaces searched to depth 4*).

`python benchmarks/world_range.py SUITE SPLIT FAMILY FIRST STOP OUT METHOD [METHOD ...]` runs `runner.run_case` on
worlds FIRST..STOP-1 of FAMILY (the suite's sizes and budgets, the methods' suite settings) and appends the run rows
to OUT as JSON lines; a world's method that already has rows in OUT with today's settings is skipped, so a stopped
call resumes.
"""

import json
import os
import sys

from cube_env import worlds
from experiments.launch import compile_cache
from experiments.quality import runner as R
from experiments.quality import suite as S
from experiments.quality.pool import read_rows


def main() -> None:
  name, split, family, first, stop, out = sys.argv[1:7]
  methods = sys.argv[7:]
  # An integrity audit: this script could run the packaged ranker's training worlds (20-67) or the agent's (from
  # 1,000) as if they were fresh validation worlds. Evaluation worlds stay allowed: re-running them reports (after a
  # change that moves their rows), and nothing may be chosen from them.
  lo, hi = int(first), int(stop)
  if split not in ("train", "eval") or (split == "train" and (hi > worlds.AGENT_WORLD_INDEX or (lo < 68 and hi > 20))):
    sys.exit(
      "world_range.py: training worlds 20-67 trained the packaged ranker and 1,000 on the agent; use 0-19 or 68-999"
    )
  suite = S.resize(S.SUITES[name], method_names=methods, scenarios=[family], split=split)
  # a world is done for a method when OUT holds its rows run with today's settings (a row of other settings, such as
  # a default changed since, does not count and is run again beside it)
  done = {
    (r["family"], r["seed"], r["method"])
    for r in read_rows(out)
    if r.get("kind") == "run" and r.get("options") == suite.options_row(r["method"])
  }
  fns = R.build_methods(suite.methods, suite.checkpoint, suite.method_options)
  for index in range(int(first), int(stop)):
    seed = S.case_seed(suite, index)
    todo = {m: fn for m, fn in fns.items() if (family, seed, m) not in done}
    if not todo:
      continue
    case = S.make_case(family, index, suite)
    rows = [dict(r, world=index) for r in R.run_case(case, suite, todo, log=lambda s: print(s, file=sys.stderr))]
    with open(out, "a") as handle:
      for r in rows:
        handle.write(json.dumps(r) + "\n")
      handle.flush()
      os.fsync(handle.fileno())
    print(f"{family} world {index}: {len(rows)} rows", flush=True)
    compile_cache.release_if_crowded()  # each world compiles its own shapes' programs


if __name__ == "__main__":
  main()
