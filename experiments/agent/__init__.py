"""The trained agent as a discovery method (docs/design.md, The agent).

Importing this package registers the `muzero` method with `cube_env`
(`cube_env.register_method`); it takes the agent's directory as the method
option `checkpoint` (`DiscoveryConfig.method_options`, `--checkpoint` on the
command line).
"""

import cube_env
from experiments.agent.checkpoint import ensure_checkpoint
from experiments.agent.loading import PackagedAgent, load_agent
from experiments.agent.play import muzero_search, padded_env, play_agent, unqueried

cube_env.register_method("muzero", muzero_search)

__all__ = (
  "PackagedAgent",
  "ensure_checkpoint",
  "load_agent",
  "muzero_search",
  "padded_env",
  "play_agent",
  "unqueried",
)
