"""cube_env: a pure-functional JAX environment over a healthcare data cube.

Public API (see DESIGN.md): ingest a case table into a `Cube`, compute
group-versus-rest statistics, explore cohorts as an environment, enumerate
every finding exhaustively and score findings against planted truth.
"""

from cube_env import stats
from cube_env.adjust import expected_values, strata
from cube_env.check import check_env
from cube_env.cohorts import cohort_table
from cube_env.confirm import benjamini_hochberg, confirm_candidates
from cube_env.discovery import Discovery, DiscoveryConfig, discover, run_discovery, truth_score
from cube_env.env import CHANNELS, CubeEnv, EnvState, make_env, make_env_pool
from cube_env.holdout import Halves, split_cubes, split_rows
from cube_env.ingest import MISSING, OTHER, Cube, CubeMeta, build_cube, encode_table, read_table
from cube_env.methods import METHODS, beam, exhaustive, greedy, random_walk, uct
from cube_env.oracle import cohort_stats, enumerate_findings
from cube_env.params import EnvParams, EnvShape, bonferroni_z, make_params, stack_params
from cube_env.schema import Schema
from cube_env.scoring import score_findings
from cube_env.search import Anytime, Ledger, SearchResult, Space, make_space

__all__ = (
  "Anytime",
  "CHANNELS",
  "Cube",
  "CubeEnv",
  "CubeMeta",
  "Discovery",
  "DiscoveryConfig",
  "EnvParams",
  "EnvShape",
  "EnvState",
  "Halves",
  "Ledger",
  "METHODS",
  "MISSING",
  "OTHER",
  "Schema",
  "SearchResult",
  "Space",
  "beam",
  "benjamini_hochberg",
  "bonferroni_z",
  "build_cube",
  "check_env",
  "cohort_stats",
  "cohort_table",
  "confirm_candidates",
  "discover",
  "encode_table",
  "enumerate_findings",
  "exhaustive",
  "expected_values",
  "greedy",
  "make_env",
  "make_env_pool",
  "make_params",
  "make_space",
  "random_walk",
  "read_table",
  "run_discovery",
  "score_findings",
  "split_cubes",
  "split_rows",
  "stack_params",
  "stats",
  "strata",
  "truth_score",
  "uct",
)
