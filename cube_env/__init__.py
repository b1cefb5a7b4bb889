"""cube_env: a pure-functional JAX environment over a healthcare data cube.

Public API (see DESIGN.md): ingest a case table into a `Cube`, compute
group-versus-rest statistics, explore cohorts as an environment, enumerate
every finding exhaustively and score findings against planted truth.
"""

from cube_env import stats
from cube_env.check import check_env
from cube_env.env import CHANNELS, CubeEnv, EnvState, make_env, make_env_pool
from cube_env.ingest import MISSING, OTHER, Cube, CubeMeta, build_cube, encode_table, read_table
from cube_env.oracle import cohort_stats, enumerate_findings
from cube_env.params import EnvParams, EnvShape, bonferroni_z, make_params, stack_params
from cube_env.schema import Schema
from cube_env.scoring import score_findings

__all__ = (
    "CHANNELS",
    "Cube",
    "CubeEnv",
    "CubeMeta",
    "EnvParams",
    "EnvShape",
    "EnvState",
    "MISSING",
    "OTHER",
    "Schema",
    "bonferroni_z",
    "build_cube",
    "check_env",
    "cohort_stats",
    "encode_table",
    "enumerate_findings",
    "make_env",
    "make_env_pool",
    "make_params",
    "read_table",
    "score_findings",
    "stack_params",
    "stats",
)
