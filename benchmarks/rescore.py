"""Scores a quality file's runs again from the confirmed findings they kept, under today's `score_findings` rule
(`scoring.RULE`, "other_side_share" from 2026-12-07) and under the rule each row records (`scoring`: "other_side"
from 2026-12-04, none before it), without re-running a search (benchmarks/README.md, *The other side of a
near-binary column*).

Each world is drawn again from its family, seed and size (`make_case`) and split as the runner split it
(`prepare_case`), so its exploration half scores the findings as the run was scored. The runs must keep their
findings (`confirmed_findings`, rows written from 2026-12-04 on) and their world must hash as recorded
(`world_sha256`); a run that fails either check stops the script.

`python benchmarks/rescore.py IN.jsonl OUT.jsonl [--keep]`: writes IN's run rows with `recall`, `recalled`, `precision`,
`false_confirmed` and `family_wise_error` (applicable run rows only: not a whole quality file) from today's rule (and
`scoring` = today's rule's name) to OUT, and prints every run whose score moved, then how many moved by family and
method. The row's own rule (`scoring`, or absent: the rule before any) must reproduce its recorded score (checked): a
row that it does not stops the script. `--keep`: a whole quality file, its rows that did not keep their findings
(and every other row) as they are.

`python benchmarks/rescore.py plants SUITE SPLIT SEEDS FAMILIES`: for runs that did not keep their findings, where
the rule could matter at all. Per planted effect of worlds 0..SEEDS-1 (FAMILIES comma-separated), the fewest rows
of its cohort's exploration half, with the measure, outside the planted group and one other group of its column
(`others`), and whether today's rule reads the other side there (`scoring.other_side_holds`: `others` < 11 or at
most 5% of the two groups' rows; a two-valued column's other group was read through `reference` before either rule).
Prints one line a plant and a count by family.

`python benchmarks/rescore.py compare OLD.jsonl NEW.jsonl`: NEW's runs that keep their findings against OLD's runs
of the same family, world, method and budget (the same search run again, OLD without its findings): queries,
candidates and confirmations must be equal, and OLD's own rule, applied to NEW's findings, must give OLD's recall,
recalled plants and false findings; prints what today's rule changes.
"""

import collections
import dataclasses
import json
import sys

import pandas as pd

from cube_env.discovery import scoring
from experiments.quality import runner as R
from experiments.quality import suite as S
from experiments.quality.pool import read_rows, undefined


def _world(row: dict):
  suite = dataclasses.replace(S.SUITES[row["suite"]], split=row["split"], n_rows=row["n_rows"])
  index = next((i for i in range(10_000) if S.case_seed(suite, i) == row["seed"]), None)
  if index is None:
    raise SystemExit(f"seed {row['seed']} is not among the first 10,000 worlds of the {row['split']} split")
  case = S.make_case(row["family"], index, suite)
  if S.world_id(case) != row["world_sha256"]:
    raise SystemExit(
      f"{row['family']} seed {row['seed']}: the world drawn here is not the run's ({row['world_sha256']})"
    )
  prep = R.prepare_case(case, max_depth=row["max_depth"])
  return case.truth, prep.prepared.halves.explore


def _scores(findings: list[dict], truth: list, cube, *, rule: str | None) -> dict:
  return R.score(pd.DataFrame(findings, columns=["filters", *R.FINDING_FIELDS]), truth, cube, rule=rule)


def _same(a, b) -> bool:
  """Equal, or both undefined (NaN, or null in a row written since 2026-12-06)."""
  return (undefined(a) and undefined(b)) or a == b


def _agree(score: dict, row: dict) -> bool:
  """The score is the row's recorded one (recall, recalled plants, false findings)."""
  return (
    _same(score["recall"], row["recall"])
    and score["recalled"] == row["recalled"]
    and score["n_false"] == row["false_confirmed"]
  )


def _runs(path: str) -> list[dict]:
  return [r for r in read_rows(path) if r.get("kind") == "run" and r.get("applicable")]


class _Worlds:
  """Each world drawn once: (truth, exploration half) by the run row's family, seed and sizes."""

  def __init__(self):
    self.cache: dict = {}

  def __call__(self, r: dict):
    key = (r["suite"], r["split"], r["family"], r["seed"], r["n_rows"], r["max_depth"])
    if key not in self.cache:
      self.cache[key] = _world(r)
    return self.cache[key]


def _both(r: dict, world, rule: str | None) -> tuple[dict, dict]:
  """(the score of r's kept findings under `rule`, under today's)."""
  truth, cube = world(r)
  return tuple(_scores(r["confirmed_findings"], truth, cube, rule=k) for k in (rule, R.SCORING))


def _line(r: dict, before: dict, now: dict) -> str:
  return (
    f"{r['family']} {r['seed']} {r['method']} {r['budget']}: recall {before['recall']:.2f} -> {now['recall']:.2f}, "
    f"false {before['n_false']} -> {now['n_false']}"
  )


def rescore(path: str, out_path: str, *, keep: bool = False) -> None:
  """`keep`: every row of IN goes to OUT, and run rows that did not keep their findings go as they are (with the
  score and rule they were written with), instead of stopping the script."""
  rows = _runs(path) if not keep else list(read_rows(path))
  if not keep and any("confirmed_findings" not in r for r in rows):
    raise SystemExit(f"{path}: some runs do not keep their confirmed findings (`confirmed_findings`)")
  world = _Worlds()
  moved = collections.Counter()
  with open(out_path, "w") as out:
    for r in rows:
      if keep and not (r.get("kind") == "run" and r.get("applicable") and "confirmed_findings" in r):
        out.write(json.dumps(r) + "\n")
        continue
      before, now = _both(r, world, r.get("scoring"))
      if not _agree(before, r):
        raise SystemExit(f"the row's own rule does not reproduce {r['family']} {r['seed']} {r['method']} {r['budget']}")
      if not all(_same(now[k], before[k]) for k in now):
        moved[(r["family"], r["method"])] += 1
        print(_line(r, before, now), flush=True)
      new = dict(r, recall=now["recall"], recalled=now["recalled"], precision=now["precision"])
      new.update(false_confirmed=now["n_false"], family_wise_error=bool(now["n_false"] > 0), scoring=R.SCORING)
      out.write(json.dumps(new) + "\n")
  scored = sum(1 for r in rows if "confirmed_findings" in r and r.get("kind") == "run" and r.get("applicable"))
  print(f"{scored} runs in {len(world.cache)} worlds; runs whose score moved, by family and method: {dict(moved)}")


def compare(old_path: str, new_path: str) -> None:
  key = lambda r: (r["suite"], r["family"], r["seed"], r["method"], r["budget"])  # noqa: E731
  old = {key(r): r for r in _runs(old_path)}
  world = _Worlds()
  moved = collections.Counter()
  checked = 0
  for r in _runs(new_path):
    if "confirmed_findings" not in r:
      continue
    o = old.get(key(r))
    if o is None:
      raise SystemExit(f"{old_path} has no run {key(r)}")
    if any(o[k] != r[k] for k in ("queries", "candidates", "confirmed", "world_sha256")):
      raise SystemExit(f"another search than {old_path}'s: {key(r)}")
    before, now = _both(r, world, o.get("scoring"))
    if not _agree(before, o):
      raise SystemExit(f"{old_path}'s own rule does not give its score: {key(r)}")
    checked += 1
    if not all(_same(now[k], before[k]) for k in now):
      moved[(r["family"], r["method"])] += 1
      print(_line(r, before, now), flush=True)
  print(f"{checked} runs checked against {old_path}; runs whose score moved, by family and method: {dict(moved)}")


def plants(suite_name: str, split: str, seeds: int, families: list[str]) -> None:
  suite = dataclasses.replace(S.SUITES[suite_name], split=split)
  near = collections.Counter()
  total = collections.Counter()
  for family in families:
    for index in range(seeds):
      case = S.make_case(family, index, suite)
      cube = R.prepare_case(case, max_depth=suite.depth(family)).prepared.halves.explore
      for i, e in enumerate(case.truth):
        mask = scoring._cell_mask(cube, {str(k): str(v) for k, v in e.cohort.items()})
        cats = cube.meta.categories[cube.meta.column_index(e.protected)]
        pairs = [(str(e.group), h) for h in cats if h != str(e.group)]
        in_pair, others = min(
          (scoring._pair_and_others(cube, mask, e.protected, pair, e.measure) for pair in pairs), key=lambda x: x[1]
        )
        holds = scoring.other_side_holds(in_pair, others)
        total[family] += 1
        near[family] += len(cats) > 2 and holds  # two values: every rule read `reference`
        print(
          f"{family} world {index} plant {i}: {e.protected} ({len(cats)} values), others {others:.0f} of "
          f"{in_pair + others:.0f}, other side read: {holds}",
          flush=True,
        )
  print(f"plants by family {dict(total)}; on a column of 3+ values whose other side today's rule reads: {dict(near)}")


def main() -> None:
  if sys.argv[1] == "plants":
    plants(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].split(","))
  elif sys.argv[1] == "compare":
    compare(sys.argv[2], sys.argv[3])
  else:
    rescore(sys.argv[1], sys.argv[2], keep="--keep" in sys.argv[3:])


if __name__ == "__main__":
  main()
