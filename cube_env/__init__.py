"""cube_env: a pure-functional JAX environment over a healthcare data cube.

Public API (see docs/design.md). The subpackages follow the flow of a table
to a confirmed finding, each importing only from those before it:

* `cube_env.data`: schema, ingest into a `Cube`, holdout halves, case-mix
  adjustment, the small-cell rule, the synthetic generator.
* `cube_env.environment`: padded params, group-by, statistics, what a finding
  is, the environment `CubeEnv`, pools of training cubes.
* `cube_env.discovery`: the search space and query ledger, the method
  registry and baselines, the exhaustive oracle, confirmation, scoring
  against planted truth, episode scoring, and the pipeline
  (`prepare`, `search`, `confirm`, `run_discovery`).
* `cube_env.worlds`: random worlds, where a seed draws a table, its schema
  and its planted truth from a family (`make_world`); on top of the flow,
  since it checks its plants with discovery's own statistics.
"""

from cube_env.data import synthetic
from cube_env.data.adjust import expected_values, strata
from cube_env.data.disclosure import (
  SMALL_CELL,
  hide_cohort_remainders,
  hide_remainders,
  hide_small_rates,
  note_text,
  redact_counts,
)
from cube_env.data.holdout import Halves, split_cubes, split_rows
from cube_env.data.ingest import (
  MISSING,
  OTHER,
  Cube,
  CubeMeta,
  build_cube,
  codes_to_filters,
  cohort_label,
  encode_table,
  filters_to_codes,
  read_table,
)
from cube_env.data.schema import Schema
from cube_env.discovery.auto import auto
from cube_env.discovery.cohorts import cohort_stats, cohort_table
from cube_env.discovery.confirm import benjamini_hochberg, confirm_candidates
from cube_env.discovery.episodes import (
  cube_oracle,
  greedy_rollouts,
  random_rollouts,
  score_episode,
  visited_cohorts,
)
from cube_env.discovery.methods import (
  METHODS,
  Method,
  beam,
  exhaustive,
  frontier,
  get_method,
  greedy,
  learned,
  method_names,
  random_walk,
  register_method,
  uct,
)
from cube_env.discovery.oracle import enumerate_findings
from cube_env.discovery.pipeline import (
  Discovery,
  DiscoveryConfig,
  Prepared,
  confirm,
  discover,
  prepare,
  run_discovery,
  search,
  shown_findings,
  truth_score,
  untestable_measures,
  untested_groups,
)
from cube_env.discovery.ranking import learned_ranker
from cube_env.discovery.scoring import score_findings
from cube_env.discovery.space import (
  STOPPED_BUDGET,
  STOPPED_DONE,
  STOPPED_TIME,
  Anytime,
  Ledger,
  Progress,
  SearchResult,
  Space,
  TimeLimit,
  cohort_bound,
  count_cohorts,
  make_space,
  target,
)
from cube_env.environment import stats
from cube_env.environment.env import CHANNELS, CubeEnv, EnvState, make_env, make_env_pool
from cube_env.environment.groupby import default_groupby
from cube_env.environment.params import EnvParams, EnvShape, bonferroni_z, bucketed_shape, make_params, stack_params
from cube_env.environment.pools import (
  EVAL_SEED_BASE,
  TASK_SCENARIOS,
  TASK_SCHEMA,
  TRAIN_SEED_BASE,
  CubeSet,
  CubeTask,
  make_pool,
)
from cube_env.worlds import FAMILIES as WORLD_FAMILIES
from cube_env.worlds import World, make_world, world_seeds
from cube_env.worlds import make_task_cubes as make_cubes

__all__ = (
  "WORLD_FAMILIES",
  "World",
  "make_world",
  "world_seeds",
  "Anytime",
  "CHANNELS",
  "Cube",
  "CubeEnv",
  "CubeMeta",
  "CubeSet",
  "CubeTask",
  "Discovery",
  "DiscoveryConfig",
  "EVAL_SEED_BASE",
  "EnvParams",
  "EnvShape",
  "EnvState",
  "Halves",
  "Ledger",
  "METHODS",
  "MISSING",
  "Method",
  "OTHER",
  "Prepared",
  "Progress",
  "SMALL_CELL",
  "STOPPED_BUDGET",
  "STOPPED_DONE",
  "STOPPED_TIME",
  "Schema",
  "SearchResult",
  "Space",
  "TASK_SCENARIOS",
  "TASK_SCHEMA",
  "TRAIN_SEED_BASE",
  "beam",
  "benjamini_hochberg",
  "bonferroni_z",
  "bucketed_shape",
  "build_cube",
  "codes_to_filters",
  "cohort_label",
  "cohort_stats",
  "cohort_table",
  "confirm",
  "confirm_candidates",
  "auto",
  "cohort_bound",
  "count_cohorts",
  "TimeLimit",
  "cube_oracle",
  "default_groupby",
  "discover",
  "encode_table",
  "enumerate_findings",
  "exhaustive",
  "expected_values",
  "frontier",
  "filters_to_codes",
  "get_method",
  "greedy",
  "greedy_rollouts",
  "learned",
  "learned_ranker",
  "make_cubes",
  "make_env",
  "make_env_pool",
  "make_params",
  "make_pool",
  "make_space",
  "method_names",
  "prepare",
  "random_rollouts",
  "random_walk",
  "read_table",
  "hide_cohort_remainders",
  "hide_remainders",
  "hide_small_rates",
  "note_text",
  "redact_counts",
  "register_method",
  "run_discovery",
  "score_episode",
  "score_findings",
  "search",
  "shown_findings",
  "split_cubes",
  "split_rows",
  "stack_params",
  "stats",
  "strata",
  "synthetic",
  "target",
  "truth_score",
  "untestable_measures",
  "untested_groups",
  "uct",
  "visited_cohorts",
)
