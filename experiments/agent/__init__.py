"""The trained agent as a discovery method (docs/design.md, The agent).

Importing this package registers the `muzero` method with `cube_env`
(`cube_env.register_method`); it takes the agent's checkpoint directory or
exported `.npz` as the method option `checkpoint` (`DiscoveryConfig.method_options`,
`--checkpoint` on the command line), by default the packaged agent, and the
options `mode` ("frontier" or "episodes") and, for episodes, `prior` (greedy's preference in their searches).
"""

import cube_env
from experiments.agent.loading import PACKAGED, PackagedAgent, agent_id, export_agent, load_agent
from experiments.agent.play import (
  EPISODES_PRIOR,
  MAX_FILTERS,
  MAX_VALUES,
  agent_ranker,
  agent_shape,
  episodes_prior,
  muzero_search,
  padded_env,
  play_agent,
  play_frontier,
  unqueried,
)

cube_env.register_method("muzero", muzero_search)

__all__ = (
  "EPISODES_PRIOR",
  "MAX_FILTERS",
  "MAX_VALUES",
  "PACKAGED",
  "PackagedAgent",
  "agent_id",
  "agent_ranker",
  "agent_shape",
  "episodes_prior",
  "export_agent",
  "load_agent",
  "muzero_search",
  "padded_env",
  "play_agent",
  "play_frontier",
  "unqueried",
)
