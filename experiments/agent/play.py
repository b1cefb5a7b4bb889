"""The `muzero` discovery method: a trained `muzero_jax` agent searches a `cube_env` search space.

Two modes (method option `mode`):

* `frontier` (the default): best-first over the frontier of seen, unvisited
  cohorts (`cube_env.frontier`), every query spent on a new cohort (none walks
  back through known ones). A drill-down's rank starts where the heuristics
  stop: the learned frontier value (`cube_env.discovery.ranking`, the
  `learned` method's log-odds that the cohort leads to a planted effect), and
  the agent refines it near the top: at a visited cohort (by default once one
  of its drill-downs reaches the top of the queue; `refine_at` below) it runs its mctx
  search in its learned model (greedy Gumbel MuZero, `num_simulations`
  simulations over the `max_num_considered_actions` moves its policy ranks
  highest) and adds `refine` times each searched move's advantage (the
  search's Q, reward plus discounted value of the cohort reached in the model,
  minus the network's value of the parent; 0 for moves the search did not
  visit), by default centred over the moves the search visited (`ADVANTAGE`:
  their raw advantages are all negative, which demoted the agent's own
  favourites). With `refine` 0 the mode is the `learned` method; `REFINE` and
  `ADVANTAGE` were chosen on training worlds (see their comments). The agent reads the cube on its
  own grid (an any-grid agent is required in this mode).
* `episodes`: episodes of the horizon the agent was trained with from the
  root: the first greedy (no search noise), later ones with the search's own
  noise so that they explore differently, until the budget is spent. Every
  search adds greedy's preference at its root (method option `prior`, the
  `MuZeroConfig.expert_prior` weight): by default the agent's own when it was
  trained with one, else `EPISODES_PRIOR`; `prior=0` searches without it
  (`frontier` reads the agent's search advantage without it: its ranking
  already starts from the learned value).

The agent searches in its learned model (no queries); only the real
environment steps cost a query each (the root once). Without a checkpoint the
packaged agent plays (`loading.PACKAGED`).

Any table: an agent whose policy is fully convolutional (`any_grid`, the
`resnet` network with grid policy heads) plays a grid of any size with the same
parameters, up to `MAX_FILTERS` filter columns x `MAX_VALUES` categories; the
cube is padded to its own grid rounded up (`GRID_ROUND`, so that tables of
similar width share compiled programs), never below the agent's trained grid.
An agent with dense heads plays only cubes that fit its trained grid. A wider
table is refused with the limit and the flags that narrow it. See
docs/design.md, The agent.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import cube_env
import muzero_jax
from experiments.agent.loading import PACKAGED, PackagedAgent, load_agent

MAX_FILTERS = 128  # filter columns (dimensions + protected) an any-grid agent plays at most (issue 18 asks >= 64)
MAX_VALUES = 40  # categories per filter column an any-grid agent plays at most
GRID_ROUND = (8, 4)  # an any-grid agent's grid: filter columns and categories rounded up to these multiples
MODES = ("frontier", "episodes")
# How the frontier reads the agent's search advantage: "raw" (Q minus network value; 0 for unvisited moves) or
# "centred" (each visited move's minus the mean over the parent's visited moves; 0 for unvisited moves). Every
# visited move's raw advantage came out negative on training worlds (benchmarks/agent_advantage.py), so "raw"
# demotes the moves the agent's search visits; "centred" keeps only their order.
ADVANTAGES = ("raw", "centred")
# Chosen on training worlds 0-7 of standard, wide, deep and masked by a rule written before the run (80 runs,
# benchmarks/quality_muzero_centred_train_cpu.jsonl): "centred" 0.917 mean recall against "raw"'s 0.896 (+0.021
# [0.004, 0.044], 4 runs better, none worse); `learned` 0.917 too, the same recall in all 80 runs.
ADVANTAGE = "centred"
REFINE_ATS = ("visit", "top")  # where the frontier runs the agent's search (module docstring)
# Adopted by the rule written before the run (benchmarks/README.md, *The agent's search near the top only*): on the
# training validation (worlds 0-7 of standard, wide, deep and masked, quick sizes; 112 runs a setting,
# benchmarks/quality_muzero_lazy_train_cpu.jsonl) "top" confirmed the same cohorts as "visit" in all 112 runs (mean
# recall 0.927 both) in 278 s of run time against 371 s.
REFINE_AT = "top"
# Weight of the agent's search advantage on the learned frontier value (module docstring). Chosen on training worlds
# 0-1 of standard, wide, deep and masked (`benchmark quality --suite quick --split train --sweep`,
# benchmarks/quality_muzero_sweep_train_cpu.jsonl; mean recall at 0.5-5% and 300-1,000 queries): 0.5, 1 and 2 tie
# with `learned` at 0.925, 8 gives 0.900 and 32 0.792 (the agent's search alone, the first frontier mode: 0.175;
# episodes 0.271). The agent's search adds nothing measurable there and hurts when it weighs more. The packaged
# agent was then retrained with the imitation warm start (benchmarks/quality_muzero_imitation_train_cpu.jsonl, the
# same worlds and window): refine 1 fell to 0.825, 0.25 and 0.5 tie `learned` at 0.925; 0.5 kept (episodes 0.675).
# On the larger training validation (worlds 0-7 of the four families, 80 runs; quality_muzero_refine_train_cpu.jsonl)
# refine 0.5 scored 0.875 and 0.25 0.896 (+0.021 [0.004, 0.044], 4 runs better, none worse), `learned` 0.917:
# 0.25 adopted by the rule written before the run (benchmarks/README.md). The agent's search costs recall there in
# proportion to its weight.
REFINE = 0.25
# Greedy's preference at the root of the episodes' searches for an agent trained without one (`prior`). Chosen on
# training worlds 0-1 of standard, wide, deep and masked by a rule written before the runs (benchmarks/README.md,
# quality_muzero_playprior_train_cpu.jsonl; mean recall at 0.5-5% and 300-1,000 queries): the packaged agent's
# episodes 0.675 without it, 0.7375 with 0.2, 0.725 with 1.0 (greedy 0.72).
EPISODES_PRIOR = 0.2
LEGAL = cube_env.CHANNELS.index("legal")
TIME_LEFT = cube_env.CHANNELS.index("time_left")
NARROWER = "Use fewer dimension/protected columns (--dimensions, --protected) or a lower --max-categories"


def _who(agent: PackagedAgent) -> str:
  return "the packaged agent" if agent.directory == PACKAGED else f"agent {agent.directory}"


def _round_up(n: int, k: int) -> int:
  return -(-n // k) * k


def agent_shape(agent: PackagedAgent, cube) -> cube_env.EnvShape:
  """The grid `agent` plays `cube` on (ValueError naming the limit when the table is wider)."""
  # From the table's own sizes, not the small-table floor (`cube_env.bucketed_shape`): the errors below quote them,
  # and the agent's results were measured on them.
  own = cube_env.bucketed_shape(cube, small_floor=False)
  if agent.any_grid:
    if own.num_filters > MAX_FILTERS or own.num_values > MAX_VALUES:
      raise ValueError(
        f"the muzero agent plays tables of at most {MAX_FILTERS} filter columns x {MAX_VALUES} categories; this "
        f"table has {own.num_filters} x {own.num_values}. {NARROWER}"
      )
    num_f = max(agent.num_filters, min(_round_up(own.num_filters, GRID_ROUND[0]), MAX_FILTERS))
    num_v = max(agent.num_values, min(_round_up(own.num_values, GRID_ROUND[1]), MAX_VALUES))
  else:
    if own.num_filters > agent.num_filters or own.num_values > agent.num_values:
      raise ValueError(
        f"the agent in {agent.directory!r} (dense policy heads) was trained on a grid of {agent.num_filters} filter "
        f"columns x {agent.num_values} categories; this table needs {own.num_filters} x {own.num_values}. "
        f"{NARROWER}, or train an agent with grid policy heads (--policy-head conv)"
      )
    num_f, num_v = agent.num_filters, agent.num_values
  return dataclasses.replace(own, num_filters=num_f, num_values=num_v)


def padded_env(agent: PackagedAgent, space: cube_env.Space):
  """The env and params of `space.cube` on the agent's grid for it (`agent_shape`), with the space's thresholds
  (`Space.thresholds`): its newness threshold `new_z` too, so a cohort the agent reaches counts the new findings any
  other method's visit there would (it was `z_screen`, stricter under the pipeline's `explore_new_z`; the
  observation does not depend on it)."""
  env, params = cube_env.make_env(
    space.cube, horizon=agent.horizon, shape=agent_shape(agent, space.cube), **space.thresholds
  )
  return dataclasses.replace(env, meta=None), params


def agent_ranker(
  agent: PackagedAgent,
  seed: int,
  refine: float = REFINE,
  *,
  backup: str = "mean",
  simulations: int = 0,
  advantage: str = ADVANTAGE,
  base=None,
  horizon: int | None = None,
):
  """The `frontier` ranking: the learned frontier value (`base`, a `cube_env.learned_ranker`; default the packaged
  ranker's) plus `refine` x the agent's search advantage (module docstring), its search Q read with a `backup` of
  "mean" (mctx's) or "max" (the best path found below each move, `muzero_jax.search.max_backup_qvalues`), with
  `simulations` per search (0: the agent's own), the advantage read as `advantage` says (`ADVANTAGES`; a visited
  move whose Q equals the network value exactly counts as unvisited).
  `horizon`: the horizon of the environment whose observations it ranks (None: the agent's own). The agent reads
  their time-left plane on its own horizon, the steps taken (a cohort's depth, on the frontier) out of the
  `agent.horizon` steps it was trained with: a search space's horizon (`cube_env.SEARCH_HORIZON`, 8) had told the
  packaged agent (16) that it had used twice the steps it had (a cold audit)."""
  if not np.isfinite(refine) or refine < 0:
    raise ValueError(f"muzero: refine must be a finite number >= 0, got {refine!r}")
  if backup not in muzero_jax.search.BACKUPS:
    raise ValueError(f"muzero: backup must be one of {muzero_jax.search.BACKUPS}, got {backup!r}")
  if simulations < 0:
    raise ValueError(f"muzero: simulations must be >= 0 (0: the agent's own), got {simulations!r}")
  if advantage not in ADVANTAGES:
    raise ValueError(f"muzero: advantage must be one of {ADVANTAGES}, got {advantage!r}")
  config = agent.config.replace(num_simulations=simulations) if simulations else agent.config
  if backup == "max" and config.search == "gumbel" and config.num_simulations <= config.max_num_considered_actions:
    # Gumbel's sequential halving spends its first round visiting each considered move once: with no simulation
    # left the tree is one level deep, where a max backup equals the mean (an audit: the packaged agent, 8 and 8).
    warnings.warn(
      f"muzero: backup='max' reads what the mean backup does with {config.num_simulations} simulations over "
      f"{config.max_num_considered_actions} considered moves wherever that many moves are legal (each is searched "
      f"once, a tree one level deep); give simulations above {config.max_num_considered_actions}",
      UserWarning,
      stacklevel=2,
    )
  base = base if base is not None else cube_env.learned_ranker()
  key = jax.random.PRNGKey(seed)  # greedy search: no noise drawn from the key

  rescale = horizon is not None and horizon != agent.horizon

  def rank(obs: np.ndarray, parent_score: float) -> np.ndarray:
    scores = base(obs, parent_score)
    if refine == 0:
      return scores
    legal = jnp.asarray(obs[LEGAL].reshape(1, -1) > 0)
    seen = np.asarray(obs, np.float32)
    if rescale:  # 1 - t / horizon, read as 1 - t / agent.horizon
      seen = seen.copy()
      seen[TIME_LEFT] = 1.0 - (1.0 - seen[TIME_LEFT]) * (horizon / agent.horizon)
    out = muzero_jax.act(agent.params, jnp.asarray(seen)[None], legal, key, config, greedy=True, backup=backup)
    gain = np.asarray(out.action_values[0], np.float64) - float(out.network_value[0])
    visited = gain != 0
    if advantage == "centred" and visited.any():
      gain = np.where(visited, gain - gain[visited].mean(), 0.0)
    return scores + refine * gain

  return rank


def play_frontier(
  agent: PackagedAgent,
  space: cube_env.Space,
  *,
  budget: int,
  seed: int,
  progress=None,
  refine: float = REFINE,
  backup: str = "mean",
  simulations: int = 0,
  advantage: str = ADVANTAGE,
  refine_at: str = REFINE_AT,
  depth: float | None = None,
) -> cube_env.SearchResult:
  """Best-first over the frontier, the learned value refined by the agent's search (see the module docstring);
  `depth`: the learned value's preference per level of depth (`cube_env.learned_ranker`; None: the default for the
  space's depth)."""
  if refine_at not in REFINE_ATS:
    raise ValueError(f"muzero: refine_at must be one of {REFINE_ATS}, got {refine_at!r}")
  if not agent.any_grid:
    raise ValueError(
      f"the agent in {agent.directory!r} has dense policy heads (its own grid only): --agent-mode frontier needs "
      "an agent with grid policy heads; use --agent-mode episodes"
    )
  agent_shape(agent, space.cube)  # the grid limit
  own = cube_env.bucketed_shape(space.cube, small_floor=False)
  if space.env.shape != own:  # the small-table floor's padded filter columns would reach the agent's network
    space = cube_env.make_space(space.cube, shape=own, horizon=space.env.horizon, **space.thresholds)
  # read once: the cheap ranking near the top, and the value the agent refines
  learned = cube_env.learned_ranker(depth=depth, max_depth=space.max_depth)
  ranker = agent_ranker(
    agent,
    seed,
    refine,
    backup=backup,
    simulations=simulations,
    advantage=advantage,
    base=learned,
    horizon=space.env.horizon,
  )
  if refine_at == "top" and refine:
    ranker, refiner = learned, ranker
  else:
    refiner = None
  result = cube_env.frontier(space, budget=budget, seed=seed, progress=progress, ranker=ranker, refiner=refiner)
  note = (
    f"{_who(agent)}: best-first over the frontier by the learned value plus {refine:g} x the {advantage} advantage "
    f"of its search ({simulations or agent.config.num_simulations} simulations, {backup} backup, at "
    f"{'each visited cohort' if refine_at == 'visit' else 'a cohort once a drill-down of it reaches the top'})"
    if refine
    else f"{_who(agent)}: best-first over the frontier by the learned value (refine 0: no search)"
  )
  return dataclasses.replace(result, method="muzero", note=note)


def unqueried(ledger: cube_env.Ledger, state, num_values: int) -> jnp.ndarray:
  """The legal-move mask without the moves to cohorts this search has already queried, if any move is left.

  A later episode that walks back into a known cohort pays a query for a
  group-by whose answer the search already has, so the agent picks among the
  moves to new cohorts while there are any; where every legal move reaches a
  known cohort it may pass through one (the first, greedy episode plays the
  agent's own mask).
  """
  mask = np.asarray(state.mask)
  fresh = mask.copy()
  for action, cohort in _legal_steps(state, num_values):
    fresh[action] = cohort not in ledger.index
  return jnp.asarray(fresh if fresh.any() else mask)


def _legal_steps(state, num_values: int) -> list[tuple[int, tuple]]:
  """`(action, cohort it leads to)` of each of `state`'s legal moves."""
  here = tuple(int(v) for v in np.asarray(state.filters))
  return [(int(a), cube_env.target(here, int(a), num_values)) for a in np.nonzero(np.asarray(state.mask))[0]]


def _shown_steps(ledger: cube_env.Ledger, state, num_values: int) -> set:
  """The cohorts `state`'s legal moves lead to that this search has not queried."""
  return {cohort for _, cohort in _legal_steps(state, num_values) if cohort not in ledger.index}


def _root_bias(env, obs, state, params, mask, config: muzero_jax.MuZeroConfig):
  """`[1, A]` the search root's bias from greedy's preference for one position, as in training (None when its
  weight, `config.expert_prior`, is 0; see `muzero_jax.expert_bias`)."""
  if not config.expert_prior:
    return None
  logits = env.expert_logits(jnp.asarray(obs), state, params)
  return muzero_jax.bias_from_expert(logits, jnp.asarray(mask), config)[None]


def episodes_prior(agent: PackagedAgent, prior: float | None = None) -> float:
  """The weight of greedy's preference in the episodes' searches: `prior`, else the agent's own `expert_prior`
  when it has one, else `EPISODES_PRIOR` (``ValueError`` for a negative or non-finite `prior`)."""
  if prior is None:
    return float(agent.config.expert_prior or EPISODES_PRIOR)
  if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not np.isfinite(prior) or prior < 0:
    raise ValueError(f"muzero: prior must be a number >= 0 (0: no preference), got {prior!r}")
  return float(prior)


def play_agent(
  agent: PackagedAgent,
  space: cube_env.Space,
  *,
  budget: int,
  seed: int,
  progress=None,
  prior: float | None = None,
) -> cube_env.SearchResult:
  """Episodes of `agent` on `space` until `budget` queries are spent (see the module docstring)."""
  weight = episodes_prior(agent, prior)
  bias_config = agent.config.replace(expert_prior=weight)
  env, params = padded_env(agent, space)
  ledger = cube_env.Ledger(space, budget, progress)
  root_obs, root_state, _ = ledger.root(env, params)
  key = jax.random.PRNGKey(seed)
  episode = 0
  # Cohorts a visited one showed as legal steps, not yet visited (some may be since): once none is left, every
  # cohort the episodes can reach is known and they stop (an audit: they spent the rest of the budget walking
  # known cohorts, 3,000 queries on an 11-cohort table, where every other method stops "nothing left").
  unvisited = _shown_steps(ledger, root_state, env.shape.num_values)
  while ledger.left:
    if episode:
      unvisited = {t for t in unvisited if t not in ledger.index}
      if not unvisited:
        break
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
        agent.params,
        jnp.asarray(obs, jnp.float32)[None],
        mask[None],
        sub,
        agent.config,
        greedy=episode == 0,
        root_bias=_root_bias(env, obs, state, params, mask, bias_config),
      )
      obs, state, _ = ledger.step(state, int(out.action[0]), env=env, params=params)
      unvisited |= _shown_steps(ledger, state, env.shape.num_values)
    episode += 1
    if ledger.used == used:  # the root has no legal move
      break
  return ledger.result(
    "muzero",
    note=f"{_who(agent)}: {episode} episodes of up to {agent.horizon} "
    "steps (first greedy, then with search noise, preferring moves to "
    f"cohorts not yet queried; greedy's preference at the root, weight {weight:g})",
  )


def muzero_search(
  space: cube_env.Space,
  *,
  budget: int,
  seed: int,
  progress=None,
  checkpoint: str | PackagedAgent | None = None,
  mode: str = "frontier",
  refine: float = REFINE,
  backup: str = "mean",
  simulations: int = 0,
  prior: float | None = None,
  advantage: str = ADVANTAGE,
  refine_at: str = REFINE_AT,
  depth: float | None = None,
) -> cube_env.SearchResult:
  """The registered `muzero` method: the agent in `checkpoint` (default the packaged one) searches `space`.

  `checkpoint` is a checkpoint directory or exported `.npz`, or an agent
  already loaded (`load_agent`), so that a caller that searches many times
  reads it once; `mode` is "frontier" or "episodes"; `refine`, `backup` and
  `simulations` are the frontier's weight on the agent's search, how its Q is
  backed up and its simulations per search, `advantage` how its advantage is
  read (`agent_ranker`), `refine_at` where it searches (`REFINE_ATS`), `depth` the learned
  value's preference per level of depth (`cube_env.learned_ranker`); `prior` is the
  episodes' weight on greedy's preference (`episodes_prior`).
  """
  if mode not in MODES:
    raise ValueError(f"muzero: mode must be one of {MODES}, got {mode!r}")
  if mode == "frontier" and prior is not None:
    raise ValueError("muzero: prior is an option of mode='episodes' (frontier's ranking starts from the learned value)")
  if mode == "episodes" and advantage != ADVANTAGE:
    raise ValueError("muzero: advantage is an option of mode='frontier' (episodes play the agent's own search)")
  if mode == "episodes" and refine_at != REFINE_AT:
    raise ValueError("muzero: refine_at is an option of mode='frontier' (episodes search at every step)")
  if mode == "episodes" and depth:
    raise ValueError("muzero: depth is an option of mode='frontier' (it weighs the learned frontier value)")
  loaded = checkpoint if isinstance(checkpoint, PackagedAgent) else load_agent(checkpoint)
  if mode == "frontier":
    return play_frontier(
      loaded,
      space,
      budget=budget,
      seed=seed,
      progress=progress,
      refine=refine,
      backup=backup,
      simulations=simulations,
      advantage=advantage,
      refine_at=refine_at,
      depth=depth,
    )
  return play_agent(loaded, space, budget=budget, seed=seed, progress=progress, prior=prior)
