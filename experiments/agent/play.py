"""The `muzero` discovery method: a trained `muzero_jax` agent plays a `cube_env` search space.

The agent searches with its learned model (no queries); only the real
environment steps it takes cost a query each (the root once). It plays
episodes of the horizon it was trained with from the root: the first greedy
(no search noise), later ones with the search's own noise so that they
explore differently, until the budget is spent. The cube is padded to the
agent's observation grid; a cube with more filter columns or categories than
the agent saw is refused (retrain, or lower `--max-categories`). See
docs/design.md, The agent.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import cube_env
import muzero_jax
from experiments.agent.loading import PackagedAgent, load_agent

MISSING_CHECKPOINT = (
  "the muzero method needs a trained agent: --checkpoint DIR on the command line (method option checkpoint=DIR "
  "in Python), a directory written by python -m experiments.train --checkpoint-dir DIR; without one use "
  "--method auto, frontier, uct, beam, greedy, random or exhaustive"
)


def padded_env(agent: PackagedAgent, space: cube_env.Space):
  """The env and params of `space.cube` padded to the agent's grid (ValueError when the cube is wider)."""
  own = cube_env.EnvShape.of(space.cube)
  if own.num_filters > agent.num_filters or own.num_values > agent.num_values:
    raise ValueError(
      f"the agent in {agent.directory!r} was trained on a grid of {agent.num_filters} filter columns x "
      f"{agent.num_values} categories; this table needs {own.num_filters} x {own.num_values}. Use fewer "
      "dimension/protected columns or a lower --max-categories, or train an agent on a wider task"
    )
  shape = dataclasses.replace(
    cube_env.bucketed_shape(space.cube), num_filters=agent.num_filters, num_values=agent.num_values
  )
  env, params = cube_env.make_env(
    space.cube,
    max_depth=space.max_depth,
    horizon=agent.horizon,
    min_group=space.min_group,
    z_screen=space.z_screen,
    shape=shape,
  )
  return dataclasses.replace(env, meta=None), params


def unqueried(ledger: cube_env.Ledger, state, num_values: int) -> jnp.ndarray:
  """The legal-move mask without the moves to cohorts this search has already queried, if any move is left.

  A later episode that walks back into a known cohort pays a query for a
  group-by whose answer the search already has, so the agent picks among the
  moves to new cohorts while there are any; where every legal move reaches a
  known cohort it may pass through one (the first, greedy episode plays the
  agent's own mask).
  """
  mask = np.asarray(state.mask)
  here = tuple(int(v) for v in np.asarray(state.filters))
  fresh = mask.copy()
  for action in np.nonzero(mask)[0]:
    if cube_env.target(here, int(action), num_values) in ledger.index:
      fresh[action] = False
  return jnp.asarray(fresh if fresh.any() else mask)


def play_agent(
  agent: PackagedAgent, space: cube_env.Space, *, budget: int, seed: int, progress=None
) -> cube_env.SearchResult:
  """Episodes of `agent` on `space` until `budget` queries are spent (see the module docstring)."""
  env, params = padded_env(agent, space)
  ledger = cube_env.Ledger(space, budget, progress)
  root_obs, root_state, _ = ledger.root(env, params)
  key = jax.random.PRNGKey(seed)
  episode = 0
  while ledger.left:
    obs, state = root_obs, root_state  # the root is known: no second query
    used = ledger.used
    for _ in range(agent.horizon):
      if not ledger.left:
        break
      mask = unqueried(ledger, state, env.shape.num_values) if episode else state.mask
      if not bool(mask.any()):
        break  # no legal move (the environment ends the episode)
      key, sub = jax.random.split(key)
      out = muzero_jax.act(
        agent.params, jnp.asarray(obs, jnp.float32)[None], mask[None], sub, agent.config, greedy=episode == 0
      )
      obs, state, _ = ledger.step(state, int(out.action[0]), env=env, params=params)
    episode += 1
    if ledger.used == used:  # the root has no legal move
      break
  return ledger.result(
    "muzero",
    note=f"agent {agent.directory}: {episode} episodes of up to {agent.horizon} "
    "steps (first greedy, then with search noise, preferring moves to "
    "cohorts not yet queried)",
  )


def muzero_search(
  space: cube_env.Space,
  *,
  budget: int,
  seed: int,
  progress=None,
  checkpoint: str | PackagedAgent | None = None,
) -> cube_env.SearchResult:
  """The registered `muzero` method: plays the agent in `checkpoint` (a method option; ValueError without).

  `checkpoint` is the agent's directory, or an agent already loaded from one
  (`load_agent`), so that a caller that searches many times reads it once.
  """
  if checkpoint is None:
    raise ValueError(MISSING_CHECKPOINT)
  loaded = checkpoint if isinstance(checkpoint, PackagedAgent) else load_agent(checkpoint)
  return play_agent(loaded, space, budget=budget, seed=seed, progress=progress)
