"""How well each ranking orders a visited cohort's drill-downs, on fresh training worlds (issue 18; a diagnosis).

    python benchmarks/frontier_tune_diagnosis.py --agent FT.npz [--worlds 4 --first-index 32] > OUT.txt

Walks training worlds `first_index`.. of the four planted families (none an evaluation world, a validation world
0-19, or a world the tuned agent learned from, 20-31) as `frontier_tune` does, and at every visited cohort with a
drill-down on a path to a plant compares, over that cohort's drill-downs: the learned ranking (`learned`), the
`muzero` ranking at refine 1 and 4 with the packaged agent and with `--agent`, each agent's policy logits and
its model's value of every drill-down's successor alone, and `learned` plus w x each agent's policy logits centred
over the cohort's drill-downs (the `muzero` option `policy`). Per ranking: mean AUC (on-path against the rest, within
a cohort), the share of cohorts whose top drill-down is on a path, and the mean number of drill-downs ranked above
the best on-path one.
"""

from __future__ import annotations

import argparse
import os

import jax.numpy as jnp
import numpy as np

import muzero_jax
from cube_env.discovery import ranking
from cube_env.discovery.space import drill_down_actions
from cube_env.environment.env import CHANNELS
from experiments.agent import frontier_tune, loading, play
from muzero_jax import support

CURRENT, LEGAL = CHANNELS.index("current"), CHANNELS.index("legal")


def drill_mask(obs: np.ndarray) -> np.ndarray:
  """`[A]` the drill-downs of a cohort (`drill_down_actions`), its filters read off the `current` channel (a
  column's current value, or -1 where its "all" column is current)."""
  current = obs[CURRENT] > 0
  filters = np.where(current[:, -1], -1, current[:, :-1].argmax(axis=1))
  mask = np.zeros(obs[LEGAL].size, bool)
  mask[drill_down_actions(tuple(filters), obs[LEGAL].reshape(-1) > 0, obs.shape[2] - 1)] = True
  return mask


def agent_signals(agent, obs: np.ndarray, drill: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(policy logits `[A]`, the model's value of each drill-down's successor `[A]`, -inf off the drill-downs)."""
  net = muzero_jax.make_network(agent.config, obs[LEGAL].size, obs.shape)
  latent = net.apply(agent.params, jnp.asarray(obs)[None], method="represent")
  policy, _, _ = net.apply(agent.params, latent, method="predict")
  acts = np.nonzero(drill)[0]
  nxt, _ = net.apply(agent.params, jnp.repeat(latent, len(acts), axis=0), jnp.asarray(acts), method="dynamics")
  _, v_logits, _ = net.apply(agent.params, nxt, method="predict")
  value = np.full(drill.shape, -np.inf)
  value[acts] = np.asarray(
    support.logits_to_scalar(v_logits, agent.config.support_size, agent.config.value_transform_eps)
  )
  return np.asarray(policy[0], np.float64), value


def scores_of(s: np.ndarray, on: np.ndarray) -> tuple[float, float, float]:
  """(AUC, top is on-path, drill-downs above the best on-path one) of scores `s` over drill-downs with marks `on`."""
  pos, neg = s[on], s[~on]
  auc = float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()) if len(neg) else 1.0
  top = float(on[np.argmax(s)])
  above = float((neg > pos.max()).sum())
  return auc, top, above


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--agent", required=True)
  parser.add_argument("--worlds", type=int, default=4)
  parser.add_argument("--first-index", type=int, default=32)
  parser.add_argument("--positions", default=None, help="cache (.npz) of the walks, reused when present")
  args = parser.parse_args()
  if args.positions and os.path.exists(args.positions):
    walked = frontier_tune.load_positions(args.positions)
  else:
    walked = frontier_tune.collect(args.worlds, budget=300, suite="quick", workers=2, first_index=args.first_index)
    if args.positions:
      frontier_tune.save_positions(args.positions, walked)
  agents = {"packaged": loading.load_agent(None), "tuned": loading.load_agent(args.agent)}
  base = ranking.learned_ranker()
  rankers = {"learned": lambda o, s: base(o, s)}
  for name, agent in agents.items():
    for r in (1.0, 4.0):
      rankers[f"muzero {name} refine {r:g}"] = play.agent_ranker(agent, 0, r)
  table: dict[tuple, list] = {}
  for family, _, pos in walked:
    for i in np.nonzero(pos.marked.any(axis=1))[0]:
      obs = pos.obs[i]
      drill = drill_mask(obs)
      assert not (pos.marked[i] & ~drill).any()
      on = pos.marked[i][drill]
      if on.all():
        continue
      for name, rank in rankers.items():
        s = np.asarray(rank(obs, float(pos.scores[i])), np.float64)[drill]
        table.setdefault((family, name), []).append(scores_of(s, on))
      learned = np.asarray(base(obs, float(pos.scores[i])), np.float64)[drill]
      for name, agent in agents.items():
        policy, value = agent_signals(agent, obs, drill)
        table.setdefault((family, f"{name} policy alone"), []).append(scores_of(policy[drill], on))
        table.setdefault((family, f"{name} model value alone"), []).append(scores_of(value[drill], on))
        centred = policy[drill] - policy[drill].mean()
        for w in (0.25, 0.5, 1.0, 2.0):
          table.setdefault((family, f"learned + {w:g} x {name} policy"), []).append(
            scores_of(learned + w * centred, on)
          )
  names = list(dict.fromkeys(n for _, n in table))
  families = list(dict.fromkeys(f for f, _ in table))
  print("cohorts with an on-path drill-down (and an off-path one):", {f: len(table[(f, "learned")]) for f in families})
  print(f"{'ranking':36s} " + " ".join(f"{f:>22s}" for f in families + ["all"]))
  for name in names:
    cells = []
    for f in families + ["all"]:
      rows = [r for (ff, n), v in table.items() if n == name and f in (ff, "all") for r in v]
      auc, top, above = np.mean(rows, axis=0)
      cells.append(f"{auc:.3f} {top:.2f} {above:6.1f}")
    print(f"{name:36s} " + " ".join(f"{c:>22s}" for c in cells))
  print(
    "cells: mean AUC within a cohort, share of cohorts whose top drill-down is on a path, drill-downs above the "
    "best on-path one"
  )


if __name__ == "__main__":
  main()
