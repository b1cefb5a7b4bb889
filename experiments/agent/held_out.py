"""The trained agent against a random walk and greedy search on held-out cubes (`experiments.train`'s last check).

All three play the same query budget (the task's horizon) on cubes from
evaluation seeds the agent never trained on; each episode's first visits are
scored against the planted truth, beside the exhaustive oracle's recall.
Greedy search's episode (`cube_env.greedy_rollouts`: each step the target with
the strongest |z|) is the bar a learned agent has to clear.
"""

import jax
import numpy as np

import cube_env
import muzero_jax


def evaluate_held_out(task, env, params, config, eval_set, eval_pool, *, seed: int = 0) -> list[dict]:
  """The agent's greedy episodes vs a random walk and greedy search on held-out cubes; findings scored against truth."""
  key = jax.random.PRNGKey(seed)
  agent = muzero_jax.evaluate(params, config, env, eval_pool, key)
  rnd_ret, rnd_actions = cube_env.random_rollouts(env, eval_pool, key, num_steps=task.horizon)
  greedy_ret, greedy_actions = cube_env.greedy_rollouts(env, eval_pool, key, num_steps=task.horizon)
  rows = []
  agent_actions, rnd_actions, greedy_actions = map(np.asarray, (agent.actions, rnd_actions, greedy_actions))
  for i, cube in enumerate(eval_set.cubes):
    one = jax.tree.map(lambda x, i=i: x[i], eval_pool)
    oracle = cube_env.cube_oracle(one, cube)
    truth = eval_set.truths[i]
    a = cube_env.score_episode(env, one, cube, truth, agent_actions[i], oracle)
    r = cube_env.score_episode(env, one, cube, truth, rnd_actions[i], oracle)
    g = cube_env.score_episode(env, one, cube, truth, greedy_actions[i], oracle)
    rows.append(
      dict(
        scenario=eval_set.scenarios[i],
        seed=eval_set.seeds[i],
        agent_return=float(agent.returns[i]),
        random_return=float(rnd_ret[i]),
        greedy_return=float(greedy_ret[i]),
        agent_recall=a["recall"],
        random_recall=r["recall"],
        greedy_recall=g["recall"],
        oracle_recall=cube_env.score_findings(oracle, truth, cube=cube)["recall"],
        oracle_findings=len(oracle),
        oracle_queries=oracle.attrs["queries"],
        budget=task.horizon,
      )
    )
  return rows
