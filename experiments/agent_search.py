"""The `muzero` discovery method: a trained `muzero_jax` agent plays `cube_env`.

The agent searches with its learned model (no queries); only the real
environment steps it takes cost a query each (the root once). It plays
episodes of the horizon it was trained with from the root: the first greedy
(no search noise), later ones with the search's own noise so that they
explore differently, until the budget is spent. The cube is padded to the
agent's observation grid; a cube with more filter columns or categories than
the agent saw is refused (retrain, or lower `--max-categories`).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

import cube_env
from cube_env.search import Ledger, Progress, SearchResult, Space, bucketed_shape, target

ENV_CLASS = "cube_env.env.CubeEnv"


@dataclasses.dataclass(frozen=True)
class Agent:
  """A trained agent loaded for inference."""

  params: object
  config: object  # muzero_jax.MuZeroConfig
  num_filters: int  # F of the grid it was trained on
  num_values: int  # C (the grid has C + 1 columns)
  horizon: int  # episode length it was trained with
  directory: str


def load_agent(directory: str) -> Agent:
  """Loads parameters and checks the checkpoint was made on `cube_env` (ValueError otherwise)."""
  import muzero_jax  # only this method needs the agent library

  if not os.path.isdir(directory):
    raise ValueError(f"--checkpoint {directory!r}: no such directory")
  try:
    params, config, meta = muzero_jax.load_params(directory)
  except Exception as err:  # noqa: BLE001 (any unreadable checkpoint is the user's input problem)
    raise ValueError(f"--checkpoint {directory!r}: cannot load an agent ({type(err).__name__}: {err})") from None
  env = meta.get("env") or {}
  if env.get("env") != ENV_CLASS:
    raise ValueError(f"--checkpoint {directory!r} holds an agent for {env.get('env')!r}, not {ENV_CLASS}")
  _, num_f, width = env["observation_shape"]
  task = (meta.get("extra") or {}).get("task") or {}
  horizon = int(task.get("horizon", config.max_episode_steps))
  return Agent(
    params=params,
    config=config,
    num_filters=int(num_f),
    num_values=int(width) - 1,
    horizon=horizon,
    directory=str(directory),
  )


def agent_space(agent: Agent, space: Space):
  """The env and params of `space.cube` padded to the agent's grid."""
  own = cube_env.EnvShape.of(space.cube)
  if own.num_filters > agent.num_filters or own.num_values > agent.num_values:
    raise ValueError(
      f"the agent in {agent.directory!r} was trained on a grid of {agent.num_filters} filter columns x "
      f"{agent.num_values} categories; this table needs {own.num_filters} x {own.num_values}. Use fewer "
      "dimension/protected columns or a lower --max-categories, or train an agent on a wider task"
    )
  shape = dataclasses.replace(bucketed_shape(space.cube), num_filters=agent.num_filters, num_values=agent.num_values)
  env, params = cube_env.make_env(
    space.cube,
    max_depth=space.max_depth,
    horizon=agent.horizon,
    min_group=space.min_group,
    z_screen=space.z_screen,
    shape=shape,
  )
  return dataclasses.replace(env, meta=None), params


def unqueried(ledger: Ledger, state, num_values: int) -> jnp.ndarray:
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
    if target(here, int(action), num_values) in ledger.index:
      fresh[action] = False
  return jnp.asarray(fresh if fresh.any() else mask)


def muzero_method(directory: str):
  """A discovery method (see `cube_env.discovery`) playing the agent saved in `directory`."""
  import muzero_jax

  agent = load_agent(directory)

  def method(space: Space, *, budget: int, seed: int, progress: Progress | None = None) -> SearchResult:
    env, params = agent_space(agent, space)
    ledger = Ledger(space, budget, progress)
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

  method.method_name = "muzero"
  return method
