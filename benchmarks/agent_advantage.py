"""What the packaged agent's search adds to the learned frontier value, on training worlds (issue 18, diagnosis).

`python benchmarks/agent_advantage.py [FAMILIES] [WORLDS] [CACHE.json]` (default standard,wide,deep,masked 2
runs/agent_advantage.json): the `muzero` frontier search (refine 0.25 on the raw advantage, 300 queries) on training worlds 0..WORLDS-1
of each family (quick sizes; the validation worlds of the training split, never evaluation worlds); at every
visited cohort, each revealed drill-down's learned log-odds `s`, the agent's search advantage `a` (search Q minus
network value; 0 where its search did not visit the move) and the on-path label. Prints, per family, the
advantage's sign and size over visited moves, AUCs (all moves; visited moves only, where the advantage is
raw or centred per parent) and, per parent with an on-path drill-down, how many siblings rank above the best
on-path one under the learned value and under it plus a multiple of the (centred) advantage.
"""

import dataclasses
import json
import os
import sys

import jax
import numpy as np

import cube_env
from cube_env.discovery import ranking
from experiments.agent import play
from experiments.agent.loading import PACKAGED, load_agent
from experiments.quality.runner import prepare_case
from experiments.quality.suite import SUITES, make_case


def _watcher(out: list, family: str, index: int, space, planted: np.ndarray, full):
  """A `frontier` watch that appends one parent's drill-downs: learned value, raw advantage (`full`: the agent's
  ranking at refine 1 on the raw advantage), on-path label."""
  learned = ranking.learned_ranker()

  def watch(filters, obs, own, actions):
    acts = np.asarray(actions, np.int64)
    s = np.asarray(learned(obs, own), np.float64)[acts]
    a = np.asarray(full(obs, own), np.float64)[acts] - s
    y = ranking.drilldown_labels(space, planted, filters, acts)
    out.append(dict(family=family, index=index, s=s.tolist(), adv=a.tolist(), y=y.astype(int).tolist()))

  return watch


def collect(families: list[str], worlds: int) -> list[dict]:
  """The walk of the committed output: refine 0.25 on the raw advantage (the default before the centred one)."""
  agent = load_agent(PACKAGED)
  out = []
  for family in families:
    for index in range(worlds):
      base = dataclasses.replace(SUITES["quick"], split="train")
      case = make_case(family, index, base)
      if case.split != "train":
        raise RuntimeError(f"{family} {index} is not a training world")
      space = prepare_case(case, max_depth=base.depth(family)).prepared.space
      planted = ranking.planted_codes(space, case.truth)
      full = play.agent_ranker(agent, case.seed, 1.0, advantage="raw")
      walk = play.agent_ranker(agent, case.seed, 0.25, advantage="raw")
      cube_env.frontier(
        space, budget=300, seed=case.seed, ranker=walk, watch=_watcher(out, family, index, space, planted, full)
      )
      jax.clear_caches()
  return out


def report(parents: list[dict]) -> None:
  per: dict = {}
  above: dict = {}
  scores = {"learned": 0.0, "+0.25 a": 0.25, "+0.5 a": 0.5, "+0.25 centred a": 0.25, "-0.25 centred a": -0.25}
  for p in parents:
    s, a, y = np.array(p["s"]), np.array(p["adv"]), np.array(p["y"], bool)
    vis = a != 0
    centred = np.where(vis, a - (a[vis].mean() if vis.any() else 0.0), 0.0)
    fam = per.setdefault(p["family"], {"s": [], "a": [], "c": [], "y": [], "vis": []})
    for k, x in (("s", s), ("a", a), ("c", centred), ("y", y), ("vis", vis)):
      fam[k].append(x)
    if y.any():
      for name, r in scores.items():
        sc = s + r * (centred if "centred" in name else a)
        above.setdefault((p["family"], name), []).append(int((sc > sc[y].max()).sum()))
  for family, fam in per.items():
    s, a, c, y, vis = (np.concatenate(fam[k]) for k in ("s", "a", "c", "y", "vis"))
    ones = np.ones(len(y))

    def auc(x, m, y=y, ones=ones):
      return round(ranking.auc(x[m], y[m], ones[m]), 3) if y[m].any() and (~y[m]).any() else None

    everywhere = np.ones(len(y), bool)
    row = dict(
      family=family,
      drilldowns=int(len(y)),
      on_path=int(y.sum()),
      visited=int(vis.sum()),
      visited_advantage_mean=round(float(a[vis].mean()), 3),
      visited_advantage_negative=round(float((a[vis] < 0).mean()), 3),
      advantage_on_path_visited=round(float(a[vis & y].mean()), 3) if (vis & y).any() else None,
      advantage_off_path_visited=round(float(a[vis & ~y].mean()), 3),
      auc_learned=auc(s, everywhere),
      auc_learned_plus_025a=auc(s + 0.25 * a, everywhere),
      auc_visited_learned=auc(s, vis),
      auc_visited_advantage=auc(a, vis),
      auc_visited_centred_advantage=auc(c, vis),
      auc_visited_learned_plus_025_centred=auc(s + 0.25 * c, vis),
    )
    print(json.dumps(row))
  for (family, name), v in sorted(above.items()):
    print(
      json.dumps(
        dict(family=family, score=name, parents=len(v), siblings_above_best_on_path=round(float(np.mean(v)), 2))
      )
    )


if __name__ == "__main__":
  families = (sys.argv[1] if len(sys.argv) > 1 else "standard,wide,deep,masked").split(",")
  worlds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
  cache = sys.argv[3] if len(sys.argv) > 3 else "runs/agent_advantage.json"
  if os.path.exists(cache):
    with open(cache) as f:
      parents = json.load(f)
  else:
    parents = collect(families, worlds)
    os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
    with open(cache, "w") as f:
      json.dump(parents, f)
  report(parents)
