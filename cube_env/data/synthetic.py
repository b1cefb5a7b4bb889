"""Synthetic perioperative case tables with planted disparities and their truth.

`make_cases(scenario, seed)` returns one row per surgical case (procedure,
site, surgeon, ASA class, urgency, anesthesia, ...; race, ethnicity, sex, age
group, payer, language; case minutes, turnover, PACU minutes, length of stay,
complication, readmission, PONV prophylaxis, opioid dose, first-case delay), the
`Schema` naming their roles and the list of planted disparities.

How the data are made (docs/design.md, "Synthetic data with planted disparities"):
- Case mix: a joint (site, procedure) table (an orthopedic specialty hospital,
  an ambulatory surgery center without emergencies, an academic center with the
  cardiac and spine volume, ...); urgency, ASA class and anesthesia type depend
  on the procedure; surgeons are nested in (site, service line) with skewed
  volumes and their own case-minute and complication effects.
- Measures: log-normal durations (case minutes by procedure, turnover by site
  and service line, PACU by anesthesia, length of stay by procedure, ASA,
  urgency and complication), logistic binary outcomes (complication 3-15% by
  procedure, ASA and urgency; readmission; PONV prophylaxis about 70%),
  log-normal opioid doses, and a first-case delay that exists only for first
  cases (NaN elsewhere). Planted shifts of binary outcomes flip recorded events
  and do not propagate to the outcomes that the baseline complication drives.
- Protected attributes are drawn independently of every driver of the measures
  and of sex, age group and payer; race, ethnicity and language are correlated
  with each other (never planted on ethnicity or language). So without a planted
  effect no protected group differs from the rest of any cohort except by
  chance. The one exception is the `confounded` scenario, where race shifts
  the procedure mix and age shifts the ASA class (the realistic age-ASA
  correlation lives only there, because elsewhere it would be a real,
  unplanted gap).
- Planted effects act on the recorded values (a row whose race is missing is
  not in the Black group), in the measure's test scale: a shift of the log for
  log-scale measures (`effect` = log ratio of geometric means) and a shift of
  the event probability for binary ones (`effect` = risk difference). Sizes are
  set so that at `n_rows=20000` each is seen at |z| of about 8-10 in its cohort
  (two- and three-filter cohorts need large effects at that size, 25-60%);
  `effect_scale` multiplies them.
  Planted groups are minorities (6-22% of their column, whose largest group is
  under half): the other groups of the column see the planted group in their
  "rest", a mirror of about 0.35 times the planted z (fixed cohorts: median
  3.5, never 6 in 20 seeds; drawn: median 3.5, up to about 6 in 20 seeds with
  the base noise), which a Bonferroni threshold (~6) ignores but z_screen = 4
  sometimes does not.
- Masked effects are 2x2 checkerboards of two dimensions (fixed: procedure x
  anesthesia type; never site: surgeons are nested in sites, so a surgeon's
  cohort would carry a site-cell effect undiluted). Cell effects are +-x /
  n_cell so that the group's shifts sum to zero in both one-filter marginals
  of each dimension and at the root; the table is regenerated (next attempt)
  until every such marginal shows |z| < 2.
- Correlated and nested dimensions carry a planted effect into cohorts that
  are neither ancestors nor descendants of its cohort (service_line =
  orthopedics holds the knee replacements, most neuraxial anesthetics are
  joint replacements): `planted_difference` gives the part of any cohort's gap
  that the truth explains. No planted cohort has an exact alias (no procedure
  alone in its service line is used).

Where the effects sit (`make_cases(..., cohorts=...)`):
- "fixed": each scenario's preset (`_SPECS`), the same cohorts in every seed
  (`marginal`: Medicaid readmission at the root, Black case minutes in total
  knee arthroplasty, 80+ PACU minutes in ASA 3; the masked checkerboard on
  total knee / total hip x neuraxial / general; ...). The docs and the tests
  that name a cohort use it.
- "drawn" (the default): the seed draws them. The drawn dimensions hold a
  few hundred cohorts of depth 0-2 and the row counts favour some, so seeds
  do share positions: held-out cubes are drawn away from their training
  cubes' (`make_cases`' `avoid`, `pools.make_cubes`), so that nothing scores
  there by remembering positions. After the rows and the base measures, the same
  generator places each spec of the scenario (checkerboards first, then the
  deepest cohorts, which binary measures rarely fit):
  - a group of `DRAWN_GROUPS` (race Black or Asian, payer Medicaid or
    Self-pay, age 80+ or 18-44), then a cohort with as many filters as the
    spec, uniformly among the cohorts on `DRAWN_DIMENSIONS` (procedure, site,
    ASA class, anesthesia type, urgency) that hold at least 60 rows of the
    group per 20000 rows and in which every filter keeps at most 45% of the
    rows of the cohort without it (the largest share among the fixed
    cohorts: no alias, and the parents see the effect diluted enough for the
    cohort's own test to stay new); then a measure of `DRAWN_MEASURES` that
    no other spec of the table uses (so planted effects never add up) and a
    sign.
  - Size: `DRAWN_Z` (9) times the standard error of group versus rest in that
    cohort on the base measures (log sd, or the base rates for a binary
    measure), with the counts scaled to 20000 rows. So at 20000 rows a drawn
    effect is seen at |z| ~ 9 whatever its cohort (mean 9-10 and 5-15 in 20
    seeds, checkerboard cells up to 1.5 times; the fixed ones at 6-13), and
    like the fixed sizes it does not depend on `n_rows`. A candidate over a
    cap is drawn again: log effects at most 0.6 (the largest fixed one), a
    raised rate at most double the group's base rate, a lowered one only
    where 3 times it stays below the 5% quantile of the group's event
    probabilities (feasible up to `effect_scale` 3).
  - A checkerboard: two of procedure, ASA class, anesthesia type and urgency
    (not site, see above) and two values of each, uniformly among the boards
    whose four cells hold at least 60 rows of the group per 20000 rows, each
    cell at most 60% of either one-filter parent (fixed: 54%), the cells'
    group rows within a factor of 2 (fixed: 1.5); a log-scale measure; x such
    that the weakest cell is at `DRAWN_Z` and none is over 1.5 times that.
  - No leak into a sibling: a candidate is drawn again when, by row counts,
    it would show at nominal |z| > 4.5 in a cohort of up to 3 filters on the
    drawn dimensions that is neither its ancestor nor its descendant, has
    under half of its rows in it and is no near-alias of its parent (what
    `discovery.scoring` would call a false finding; ASA 3 & neuraxial holds
    40% total hip & ASA 3 rows, say).
  - A spec without a candidate in `_DRAWN_TRIES` draws regenerates the table.
  The drawn columns are those of the fixed specs plus urgency, all in the
  reduced schema (`cube_env.TASK_SCHEMA`) of the training pools and the
  quality benchmark. A drawn and a fixed table of one seed share their rows
  and base measures.

Everything is deterministic given (scenario, seed, n_rows, cohorts): the
generator is `numpy.random.default_rng` seeded with (seed, CRC-32 of the
scenario name, attempt).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from cube_env.data.schema import Schema

SCENARIOS = ("null", "marginal", "interactions", "masked", "confounded", "mixed")

DIMENSIONS = (
  "procedure",
  "service_line",
  "site",
  "surgeon",
  "asa_class",
  "urgency",
  "anesthesia_type",
  "weekday",
  "first_case",
)
PROTECTED = ("race", "ethnicity", "sex", "age_group", "payer", "language")
MEASURES = (
  "case_minutes",
  "turnover_minutes",
  "pacu_minutes",
  "length_of_stay",
  "complication",
  "readmit_30d",
  "ponv_prophylaxis",
  "opioid_mme",
  "first_case_delay_minutes",
)
LOG_MEASURES = (
  "case_minutes",
  "turnover_minutes",
  "pacu_minutes",
  "length_of_stay",
  "opioid_mme",
  "first_case_delay_minutes",
)
BINARY_MEASURES = ("complication", "readmit_30d", "ponv_prophylaxis")
ADJUSTERS = ("procedure", "asa_class", "urgency")

MASKED_MAX_ATTEMPTS = 25  # regenerations allowed until every masked marginal is quiet
MASKED_MARGINAL_Z = 2.0  # |z| every one-filter marginal and the root must stay below

COHORTS = ("drawn", "fixed")  # `make_cases(cohorts=...)`: drawn per seed, or the scenario's preset

# Drawn cohorts (module docstring, "Where the effects sit"). The pools are the columns of the fixed specs
# plus urgency, all in the reduced schema `cube_env.TASK_SCHEMA` of the training pools and the quality
# benchmark, so every drawn truth is reachable there. Not drawn: service_line and surgeon (procedure and
# site nest in them or they in site), weekday and first_case.
DRAWN_DIMENSIONS = ("procedure", "site", "asa_class", "anesthesia_type", "urgency")
# Minority groups (6-22% of their column, whose largest group is under half), never ethnicity or language
# (correlated with race) nor sex (two groups: the other one would mirror the planted one in full).
DRAWN_GROUPS = (
  ("race", "Black"),
  ("race", "Asian"),
  ("payer", "Medicaid"),
  ("payer", "Self-pay"),
  ("age_group", "80+"),
  ("age_group", "18-44"),
)
DRAWN_MEASURES = ("case_minutes", "turnover_minutes", "pacu_minutes", "opioid_mme", "readmit_30d", "complication")
DRAWN_Z = 9.0  # nominal |z| of a drawn effect at 20000 rows (the fixed effects are seen at 7-10)
_DRAWN_MASKED_DIMENSIONS = ("procedure", "asa_class", "anesthesia_type", "urgency")  # no site: surgeons nest in it
_DRAWN_MIN_GROUP = 60  # group rows with the measure in a drawn cohort (or cell), per 20000 rows (fixed: 48-333)
_DRAWN_MAX_SHARE = 0.45  # each filter keeps at most this share of the cohort without it (fixed: up to ~0.45)
_DRAWN_MASKED_MAX_SHARE = 0.6  # the same for checkerboard cells, whose one-filter parents are quiet (fixed: 0.54)
_DRAWN_MASKED_BALANCE = 2.0  # a checkerboard's cells' group rows are within this factor (fixed: 1.5)
_DRAWN_MASKED_MAX_Z = 1.5  # and their nominal |z| within this factor of the weakest cell's DRAWN_Z (fixed: 1.4)
_DRAWN_MAX_LOG = 0.6  # largest log effect (the fixed three-filter one)
_DRAWN_MAX_RISK_RATIO = 2.0  # a raised rate at most doubles the group's base rate (fixed: 0.045 on 6%)
_DRAWN_HEADROOM = 3.0  # a risk difference stays feasible up to effect_scale 3 (see `_Drawer.size`)
_DRAWN_LEAK_Z = 4.5  # largest nominal |z| a drawn effect may make in an unrelated cohort (see `_Drawer.leak_z`)
_DRAWN_ALIAS_SHARE = 0.8  # a cohort with a filter keeping this share of its parent's rows is a near-alias
_DRAWN_LEAK_SHARE = 0.5  # a cohort with this share of its rows in a planted one is related (scoring.OVERLAP_TRUE)
_DRAWN_TRIES = 300  # candidates tried per planted spec before the table is regenerated


@dataclasses.dataclass(frozen=True)
class PlantedEffect:
  """One planted disparity: in `cohort`, `group` of `protected` differs in `measure`.

  Attributes:
    cohort: filters defining the cohort, {} for the whole population.
    protected: protected column, e.g. "race".
    group: the group compared with the rest of the cohort, e.g. "Black".
    measure: measure column.
    effect: planted effect on the measure's test scale: log ratio of geometric
      means (log-scale measures) or risk difference (binary measures).
    kind: "planted".
  """

  cohort: dict[str, str]
  protected: str
  group: str
  measure: str
  effect: float
  kind: str = "planted"

  def __post_init__(self):
    object.__setattr__(self, "cohort", dict(self.cohort))
    object.__setattr__(self, "effect", float(self.effect))

  def __hash__(self):
    return hash((tuple(sorted(self.cohort.items())), self.protected, self.group, self.measure, self.effect, self.kind))

  @property
  def sign(self) -> int:
    """+1 when the group's measure is higher than the rest's, else -1."""
    return 1 if self.effect >= 0 else -1

  @property
  def depth(self) -> int:
    """Number of filters of the cohort."""
    return len(self.cohort)


@dataclasses.dataclass(frozen=True)
class _Procedure:
  name: str
  service_line: str
  share: float  # share of all cases before the sites' case mix
  minutes: float  # median case minutes
  minutes_sigma: float  # sd of log case minutes
  los_days: float  # median length of stay (elective, ASA 2)
  complication: float  # complication rate (elective, ASA 2)
  readmit: float  # 30-day readmission rate (elective, ASA 2, no complication)
  mme: float  # median opioid dose, oral morphine milligram equivalents
  asa_shift: float  # shift of the latent ASA score
  urgency: tuple[float, float, float]  # elective, urgent, emergent
  anesthesia: tuple[float, float, float, float]  # general, neuraxial, regional, mac


_PROCEDURES = (
  _Procedure(
    "lap_cholecystectomy",
    "general_surgery",
    0.11,
    85,
    0.30,
    0.40,
    0.04,
    0.05,
    30,
    0.0,
    (0.70, 0.22, 0.08),
    (1.0, 0.0, 0.0, 0.0),
  ),
  _Procedure(
    "inguinal_hernia_repair",
    "general_surgery",
    0.09,
    75,
    0.28,
    0.30,
    0.03,
    0.04,
    25,
    -0.1,
    (0.90, 0.08, 0.02),
    (0.70, 0.10, 0.0, 0.20),
  ),
  _Procedure(
    "lap_appendectomy",
    "general_surgery",
    0.06,
    65,
    0.30,
    1.0,
    0.06,
    0.06,
    30,
    -0.4,
    (0.05, 0.45, 0.50),
    (1.0, 0.0, 0.0, 0.0),
  ),
  _Procedure(
    "colectomy", "general_surgery", 0.05, 190, 0.32, 4.5, 0.075, 0.10, 70, 0.6, (0.70, 0.20, 0.10), (1.0, 0.0, 0.0, 0.0)
  ),
  _Procedure(
    "total_knee_arthroplasty",
    "orthopedics",
    0.12,
    105,
    0.22,
    1.6,
    0.04,
    0.05,
    80,
    0.4,
    (0.99, 0.01, 0.0),
    (0.40, 0.55, 0.05, 0.0),
  ),
  _Procedure(
    "total_hip_arthroplasty",
    "orthopedics",
    0.09,
    100,
    0.22,
    1.5,
    0.04,
    0.05,
    70,
    0.4,
    (0.93, 0.06, 0.01),
    (0.45, 0.55, 0.0, 0.0),
  ),
  _Procedure(
    "knee_arthroscopy",
    "orthopedics",
    0.10,
    50,
    0.30,
    0.25,
    0.025,
    0.02,
    20,
    -0.5,
    (0.98, 0.02, 0.0),
    (0.60, 0.0, 0.15, 0.25),
  ),
  _Procedure(
    "spinal_fusion", "spine", 0.06, 220, 0.32, 3.0, 0.085, 0.08, 100, 0.3, (0.90, 0.08, 0.02), (1.0, 0.0, 0.0, 0.0)
  ),
  _Procedure(
    "cabg", "cardiac_surgery", 0.04, 260, 0.22, 6.5, 0.05, 0.07, 90, 1.3, (0.60, 0.30, 0.10), (1.0, 0.0, 0.0, 0.0)
  ),
  _Procedure(
    "cataract_extraction",
    "ophthalmology",
    0.16,
    22,
    0.30,
    0.15,
    0.025,
    0.02,
    3,
    0.35,
    (0.99, 0.01, 0.0),
    (0.05, 0.0, 0.0, 0.95),
  ),
  _Procedure(
    "carpal_tunnel_release",
    "hand_surgery",
    0.09,
    25,
    0.28,
    0.15,
    0.025,
    0.02,
    10,
    -0.2,
    (1.0, 0.0, 0.0),
    (0.10, 0.0, 0.40, 0.50),
  ),
)
_PROC_NAMES = tuple(p.name for p in _PROCEDURES)

_SITES = (
  "academic_medical_center",
  "community_north",
  "community_south",
  "orthopedic_specialty_hospital",
  "ambulatory_surgery_center",
)
_SITE_SIZE = (0.32, 0.22, 0.19, 0.12, 0.15)
# Multiplier of each procedure's share at each site (default 1): the case mix.
_SITE_MIX = (
  {
    "cabg": 3.0,
    "spinal_fusion": 2.0,
    "colectomy": 2.0,
    "cataract_extraction": 0.6,
    "carpal_tunnel_release": 0.6,
    "knee_arthroscopy": 0.6,
  },
  {"cabg": 1.0},
  {"cabg": 0.0, "spinal_fusion": 0.5},
  {p.name: 0.0 for p in _PROCEDURES}
  | {
    "total_knee_arthroplasty": 3.0,
    "total_hip_arthroplasty": 3.0,
    "knee_arthroscopy": 2.0,
    "spinal_fusion": 2.0,
    "carpal_tunnel_release": 1.0,
  },
  {p.name: 0.0 for p in _PROCEDURES}
  | {
    "cataract_extraction": 3.0,
    "carpal_tunnel_release": 2.0,
    "knee_arthroscopy": 2.0,
    "inguinal_hernia_repair": 1.0,
    "lap_cholecystectomy": 0.5,
  },
)
_SITE_MINUTES = (0.12, 0.0, 0.03, -0.08, -0.12)  # log case-minute shift (teaching adds time)
_SITE_TURNOVER = (35.0, 30.0, 28.0, 25.0, 18.0)  # median turnover minutes
_SITE_PONV = (0.3, 0.0, -0.3, 0.1, -0.2)  # logit shift of PONV prophylaxis
_SITE_DELAY = (0.35, 0.0, 0.15, -0.1, -0.3)  # log shift of first-case delay
_SERVICE_TURNOVER = {
  "orthopedics": 0.15,
  "spine": 0.15,
  "cardiac_surgery": 0.3,
  "ophthalmology": -0.2,
  "hand_surgery": -0.1,
}
_N_SURGEONS = 75  # about this many surgeons, split by the volume of (site, service line)

_URGENCY = ("elective", "urgent", "emergent")
_URGENCY_ASA = (0.0, 0.3, 0.7)
_URGENCY_LOGIT = (0.0, 0.3, 0.6)
_URGENCY_LOS = (0.0, 0.2, 0.4)
_ANESTHESIA = ("general", "neuraxial", "regional", "mac")
_ANESTHESIA_PACU = (75.0, 95.0, 55.0, 40.0)  # median PACU minutes
_ANESTHESIA_PONV = (2.1, 0.3, 0.1, -0.3)  # logit of PONV prophylaxis
_ANESTHESIA_MME = (0.0, -0.25, -0.35, -0.5)  # log shift of opioid dose
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")
_WEEKDAY_P = (0.21, 0.21, 0.20, 0.20, 0.18)
_ASA_CUTS = (-1.0, 0.45, 1.9)  # latent ASA score cut points: ASA 1 | 2 | 3 | 4

_RACES = ("White", "Black", "Asian", "Other")
_RACE_P = (0.45, 0.13, 0.07, 0.35)
_HISPANIC_GIVEN_RACE = (0.12, 0.04, 0.02, 0.45)
_LANGUAGES = ("English", "Spanish", "Other")
_LANGUAGE_GIVEN_HISPANIC = ((0.62, 0.36, 0.02), (0.94, 0.005, 0.055))  # Hispanic, Not Hispanic
_SEXES = ("F", "M")
_SEX_P = (0.56, 0.44)
_AGE_GROUPS = ("18-44", "45-64", "65-79", "80+")
_AGE_P = (0.22, 0.33, 0.31, 0.14)
_PAYERS = ("Medicare", "Commercial", "Medicaid", "Self-pay", "Other")
_PAYER_P = (0.34, 0.34, 0.14, 0.06, 0.12)

# Missing recorded values: column -> fraction of rows.
_MISSING_CATEGORICAL = {"race": 0.03, "ethnicity": 0.03, "language": 0.02, "asa_class": 0.02, "anesthesia_type": 0.015}
_MISSING_MEASURE = {"turnover_minutes": 0.03, "pacu_minutes": 0.02, "opioid_mme": 0.025}

# `confounded`: case-mix shifts that create raw gaps without any within-stratum effect.
_CONFOUNDED_PROCEDURE_TILT = {
  "cabg": 2.2,
  "spinal_fusion": 2.0,
  "colectomy": 2.0,
  "cataract_extraction": 0.5,
  "knee_arthroscopy": 0.6,
  "carpal_tunnel_release": 0.6,
}  # for Black patients
_CONFOUNDED_AGE_ASA = (-0.6, -0.1, 0.5, 1.2)  # latent ASA shift by age group


@dataclasses.dataclass(frozen=True)
class _Masked:
  """A 2x2 checkerboard: +d in (a1, b1) and (a2, b2), -d in (a1, b2) and (a2, b1)."""

  dim_a: str
  values_a: tuple[str, str]
  dim_b: str
  values_b: tuple[str, str]
  protected: str
  group: str
  measure: str
  effect: float  # nominal |d| at the mean group count of the four cells


def _effect(cohort, protected, group, measure, effect):
  return PlantedEffect(cohort=cohort, protected=protected, group=group, measure=measure, effect=effect)


_TKA = "total_knee_arthroplasty"
_THA = "total_hip_arthroplasty"
_CHOLE = "lap_cholecystectomy"
_MARGINAL = (
  _effect({}, "payer", "Medicaid", "readmit_30d", 0.045),
  _effect({"procedure": _TKA}, "race", "Black", "case_minutes", 0.13),
  _effect({"asa_class": "3"}, "age_group", "80+", "pacu_minutes", 0.18),
)
_INTERACTIONS = (
  _effect({"procedure": _CHOLE, "asa_class": "3"}, "race", "Black", "case_minutes", 0.40),
  _effect({"site": "community_north", "asa_class": "3"}, "payer", "Medicaid", "turnover_minutes", 0.34),
  _effect(
    {"site": "academic_medical_center", "anesthesia_type": "mac", "asa_class": "2"},
    "age_group",
    "80+",
    "pacu_minutes",
    0.6,
  ),
)
_MASKED = _Masked(
  "procedure", (_TKA, _THA), "anesthesia_type", ("neuraxial", "general"), "race", "Black", "case_minutes", 0.25
)
_MIXED = (
  _effect({}, "payer", "Medicaid", "readmit_30d", 0.048),
  _effect({"procedure": _TKA}, "race", "Black", "opioid_mme", -0.30),
  _effect({"procedure": _CHOLE, "asa_class": "3"}, "race", "Black", "case_minutes", 0.41),
  _effect(
    {"site": "academic_medical_center", "anesthesia_type": "mac", "asa_class": "2"},
    "age_group",
    "80+",
    "pacu_minutes",
    0.6,
  ),
  _Masked(
    "procedure", (_TKA, _THA), "anesthesia_type", ("neuraxial", "general"), "age_group", "80+", "case_minutes", 0.22
  ),
)
_SPECS = {
  "null": (),
  "marginal": _MARGINAL,
  "interactions": _INTERACTIONS,
  "masked": (_MASKED,),
  "confounded": (),
  "mixed": _MIXED,
}

# Raw root gaps of `confounded` with |z| > 5 at 20000 rows in each of seeds 0-19, and the
# adjusters that explain them.
_CONFOUNDERS = tuple(
  {"protected": "race", "group": "Black", "measure": m, "explained_by": ("procedure",)}
  for m in ("case_minutes", "turnover_minutes", "pacu_minutes", "length_of_stay", "ponv_prophylaxis", "opioid_mme")
) + tuple(
  {"protected": "age_group", "group": g, "measure": m, "explained_by": ADJUSTERS}
  for g, measures in (
    ("80+", ("pacu_minutes", "length_of_stay", "complication")),
    ("18-44", ("pacu_minutes", "length_of_stay")),
  )
  for m in measures
)


def confounders(scenario: str) -> list[dict]:
  """Raw root gaps that case mix explains, for a scenario (empty except `confounded`).

  In `confounded`, Black patients get more long inpatient procedures (cabg,
  spine, colectomy) and fewer short ones, and age shifts the ASA class (80+
  up, 18-44 down); nothing else differs. Each entry names `protected`, `group`,
  `measure` (a raw root gap of group versus rest with |z| > 5 at 20000 rows in
  each of seeds 0-19) and `explained_by`, adjusters within whose strata the gap
  vanishes (|z| < 3). The same two mechanisms leave weaker or less regular raw
  gaps (|z| of 2-8 depending on the seed): the mirror image in White and Other
  patients, Hispanic ethnicity (correlated with race), complication and
  readmission for Black patients, and the middle age groups. None of these is
  a planted disparity: `make_cases` lists none for `confounded`.
  """
  _check_scenario(scenario)
  if scenario != "confounded":
    return []
  return [dict(c, explained_by=list(c["explained_by"])) for c in _CONFOUNDERS]


def make_schema() -> Schema:
  """The schema of every generated table (log scale fixed for the durations and doses)."""
  return Schema(
    dimensions=DIMENSIONS,
    protected=PROTECTED,
    measures=MEASURES,
    adjusters=ADJUSTERS,
    log_scale=dict.fromkeys(LOG_MEASURES, True),
  )


def make_cases(
  scenario: str,
  seed: int,
  n_rows: int = 20000,
  *,
  effect_scale: float = 1.0,
  cohorts: str = "drawn",
  avoid: Iterable[Mapping[str, str]] = (),
) -> tuple[pd.DataFrame, Schema, list[PlantedEffect]]:
  """Generates a case table with planted disparities.

  Args:
    scenario: one of `SCENARIOS`: "null" (no effect), "marginal" (root and
      one-filter effects), "interactions" (two- and three-filter), "masked" (a
      checkerboard whose one-filter marginals cancel), "confounded" (raw gaps
      that case mix explains, see `confounders`; no planted effect) or "mixed".
    seed: non-negative integer.
    n_rows: number of cases.
    effect_scale: multiplies every planted effect (sizes are set for 20000 rows).
    cohorts: "drawn" (default): the seed's generator draws where each planted
      effect of the scenario sits (cohort of the scenario's depth, protected
      group, measure, sign; for a masked checkerboard its two columns and
      their two values each) and sizes it for |z| ~ `DRAWN_Z` at 20000 rows
      (module docstring, "Where the effects sit"). "fixed": the scenario's preset
      cohorts and sizes (same in every seed; what the docs and the tests that
      name a cohort use). Both give the same rows and base measures for a
      seed; only the planted shifts differ (and, for masked, which
      regeneration succeeds). `null` and `confounded` plant nothing, so the
      two are one table there.
    avoid: cohorts (filter dicts) a drawn effect or checkerboard cell must not
      sit at (the root excepted: every search starts there). Held-out cubes
      pass the training cubes' planted cohorts (`pools.make_cubes`): the drawn
      dimensions hold a few hundred cohorts of depth 0-2, of which the row
      counts favour few, so without it 11 of 18 held-out plants of the main
      job sat at a cohort planted in one of its 8 training cubes (a cold
      audit, 2026-12-07). Empty (the default): the draws are as before.

  Returns:
    (frame [n_rows, 24], schema, planted effects). Categorical columns hold
    strings (missing values are NA), measures float64 (NaN where missing). The
    columns are `DIMENSIONS + PROTECTED + MEASURES`.

  Raises:
    ValueError: unknown scenario or cohorts, negative seed, n_rows < 1, bad
      effect_scale, or cohorts that cannot be placed within
      `MASKED_MAX_ATTEMPTS` regenerations (too few rows: an empty
      checkerboard cell, marginals that do not cancel, or no drawn cohort with
      enough rows; a few hundred rows suffice).
  """
  _check_scenario(scenario)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 1:
    raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")
  if not np.isfinite(effect_scale) or effect_scale < 0:
    raise ValueError(f"effect_scale must be finite and >= 0, got {effect_scale!r}")
  if cohorts not in COHORTS:
    raise ValueError(f"cohorts must be one of {COHORTS}, got {cohorts!r}")
  specs = _SPECS[scenario]
  drawn = cohorts == "drawn" and bool(specs)
  avoided = frozenset(_cohort_key(c) for c in avoid if len(c))
  attempts = MASKED_MAX_ATTEMPTS if drawn or any(isinstance(s, _Masked) for s in specs) else 1
  for attempt in range(attempts):
    rng = np.random.default_rng([int(seed), zlib.crc32(scenario.encode()), attempt])
    cols = _case_mix(rng, int(n_rows), confounded=scenario == "confounded")
    present = _measure_presence(rng, cols)
    base = _base_measures(rng, cols, present)
    planted = _draw_specs(rng, specs, cols, base, avoid=avoided) if drawn else specs
    if planted is None:
      continue
    truth = _resolve_effects(planted, cols, present, effect_scale)
    if truth is None:
      continue
    frame = _frame(cols, _measures(cols, base, truth))
    if all(_masked_quiet(frame, m) for m in planted if isinstance(m, _Masked)):
      return frame, make_schema(), truth
  if avoided and drawn:  # a review: 16 training cubes of 4,000 rows leave no checkerboard clear of their cohorts
    raise ValueError(
      f"scenario {scenario!r}: no drawn cohorts with enough rows clear of the {len(avoided)} cohorts to avoid (a "
      f"held-out cube avoids every cohort its task's training cubes planted) within {attempts} regenerations at "
      f"n_rows={n_rows}: use fewer training cubes (--num-train-cubes) or more rows (--n-rows)"
    )
  raise ValueError(
    f"scenario {scenario!r}: no {cohorts} cohorts with enough rows (a masked checkerboard needs a group row in "
    f"every cell and quiet marginals) within {attempts} regenerations at n_rows={n_rows}; use more rows"
  )


def _check_scenario(scenario: str) -> None:
  if scenario not in SCENARIOS:
    raise ValueError(f"unknown scenario {scenario!r}; choose one of {SCENARIOS}")


def _categorical(rng, probs: np.ndarray) -> np.ndarray:
  """One draw per row from `probs` [n, k] (rows sum to 1); returns [n] int indices."""
  cum = np.cumsum(probs, axis=1)
  u = rng.random(len(probs)) * cum[:, -1]
  return np.minimum((cum < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _site_procedure_joint() -> np.ndarray:
  """P(site, procedure) [S, P]: each site's size times its case mix."""
  share = np.array([p.share for p in _PROCEDURES])
  mix = np.array([[m.get(p, 1.0) for p in _PROC_NAMES] for m in _SITE_MIX]) * share
  return np.array(_SITE_SIZE)[:, None] * mix / mix.sum(axis=1, keepdims=True)


def _case_mix(rng, n: int, *, confounded: bool) -> dict[str, np.ndarray]:
  """Draws patients and cases; returns true codes (int arrays) and recorded labels."""
  c: dict[str, np.ndarray] = {}
  # Patients.
  c["race"] = rng.choice(len(_RACES), size=n, p=_RACE_P)
  c["hispanic"] = rng.random(n) < np.array(_HISPANIC_GIVEN_RACE)[c["race"]]
  c["language"] = _categorical(rng, np.array(_LANGUAGE_GIVEN_HISPANIC)[np.where(c["hispanic"], 0, 1)])
  c["sex"] = rng.choice(len(_SEXES), size=n, p=_SEX_P)
  c["age_group"] = rng.choice(len(_AGE_GROUPS), size=n, p=_AGE_P)
  c["payer"] = rng.choice(len(_PAYERS), size=n, p=_PAYER_P)
  # Cases: procedure (tilted by race only when confounded), then site given procedure.
  joint = _site_procedure_joint()
  proc_p = np.tile(joint.sum(axis=0), (n, 1))
  if confounded:
    tilt = np.array([_CONFOUNDED_PROCEDURE_TILT.get(p, 1.0) for p in _PROC_NAMES])
    black = c["race"] == _RACES.index("Black")
    proc_p[black] *= tilt
  c["procedure"] = _categorical(rng, proc_p / proc_p.sum(axis=1, keepdims=True))
  site_given_proc = (joint / joint.sum(axis=0, keepdims=True)).T  # [P, S]
  c["site"] = _categorical(rng, site_given_proc[c["procedure"]])
  urgency_p = np.array([p.urgency for p in _PROCEDURES])[c["procedure"]]
  asc = c["site"] == _SITES.index("ambulatory_surgery_center")
  urgency_p[asc] = (1.0, 0.0, 0.0)
  c["urgency"] = _categorical(rng, urgency_p)
  latent = (
    np.array([p.asa_shift for p in _PROCEDURES])[c["procedure"]]
    + np.array(_URGENCY_ASA)[c["urgency"]]
    + rng.standard_normal(n)
  )
  if confounded:
    latent += np.array(_CONFOUNDED_AGE_ASA)[c["age_group"]]
  c["asa"] = np.searchsorted(np.array(_ASA_CUTS), latent) + 1  # 1..4
  c["anesthesia"] = _categorical(rng, np.array([p.anesthesia for p in _PROCEDURES])[c["procedure"]])
  c["weekday"] = rng.choice(len(_WEEKDAYS), size=n, p=_WEEKDAY_P)
  long_case = np.array([p.minutes >= 60 for p in _PROCEDURES])[c["procedure"]]
  first_p = np.array([0.32, 0.08, 0.03])[c["urgency"]] * np.where(long_case, 1.0, 0.6)
  c["first_case"] = rng.random(n) < first_p
  c["surgeon"], c["surgeon_effect"] = _surgeons(rng, c["site"], c["procedure"])
  c["labels"] = _labels(rng, c)
  return c


def _surgeons(rng, site: np.ndarray, procedure: np.ndarray):
  """Surgeon ids nested in (site, service line) with skewed volumes, and their effects.

  Returns:
    (surgeon [n] str, effects [n, 2]: log case-minute shift, complication logit shift).
  """
  lines = sorted({p.service_line for p in _PROCEDURES})
  line_of_proc = np.array([lines.index(p.service_line) for p in _PROCEDURES])
  joint = _site_procedure_joint()
  volume = joint @ np.eye(len(lines))[line_of_proc]  # [S, L]
  # Pool sizes are fixed by the design (not the seed), so surgeon ids mean the same in every table.
  pools = np.where(volume > 0, np.maximum(1, np.rint(volume * _N_SURGEONS)), 0).astype(int)
  first_id = np.concatenate([[0], np.cumsum(pools.ravel())[:-1]]).reshape(pools.shape)
  n_total = int(pools.sum())
  effects = np.stack([rng.normal(0.0, 0.10, n_total), rng.normal(0.0, 0.20, n_total)], axis=1)
  line = line_of_proc[procedure]
  size = pools[site, line]
  # Within a pool, volumes fall off as 1 / rank^0.8.
  u = rng.random(len(site))
  rank = np.zeros(len(site), dtype=int)
  for k in np.unique(size):
    w = np.cumsum(1.0 / np.arange(1, k + 1) ** 0.8)
    rows = size == k
    rank[rows] = np.minimum(np.searchsorted(w / w[-1], u[rows], side="right"), k - 1)
  ids = first_id[site, line] + rank
  names = np.array([f"surgeon_{i + 1:03d}" for i in range(n_total)], dtype=object)
  return names[ids], effects[ids]


def _with_missing(rng, labels: np.ndarray, fraction: float) -> np.ndarray:
  labels = labels.astype(object)
  labels[rng.random(len(labels)) < fraction] = None
  return labels


def _labels(rng, c) -> dict[str, np.ndarray]:
  """Recorded string columns (with missing values) from the true codes."""
  lines = np.array([p.service_line for p in _PROCEDURES], dtype=object)
  out = {
    "procedure": np.array(_PROC_NAMES, dtype=object)[c["procedure"]],
    "service_line": lines[c["procedure"]],
    "site": np.array(_SITES, dtype=object)[c["site"]],
    "surgeon": c["surgeon"],
    "asa_class": np.array(["1", "2", "3", "4"], dtype=object)[c["asa"] - 1],
    "urgency": np.array(_URGENCY, dtype=object)[c["urgency"]],
    "anesthesia_type": np.array(_ANESTHESIA, dtype=object)[c["anesthesia"]],
    "weekday": np.array(_WEEKDAYS, dtype=object)[c["weekday"]],
    "first_case": np.where(c["first_case"], "yes", "no").astype(object),
    "race": np.array(_RACES, dtype=object)[c["race"]],
    "ethnicity": np.where(c["hispanic"], "Hispanic", "Not Hispanic").astype(object),
    "sex": np.array(_SEXES, dtype=object)[c["sex"]],
    "age_group": np.array(_AGE_GROUPS, dtype=object)[c["age_group"]],
    "payer": np.array(_PAYERS, dtype=object)[c["payer"]],
    "language": np.array(_LANGUAGES, dtype=object)[c["language"]],
  }
  for name, fraction in _MISSING_CATEGORICAL.items():
    out[name] = _with_missing(rng, out[name], fraction)
  return out


def _measure_presence(rng, c) -> dict[str, np.ndarray]:
  """Which rows have each measure (cabg goes to the ICU, not PACU; delay only for first cases)."""
  n = len(c["procedure"])
  present = {m: np.ones(n, bool) for m in MEASURES}
  for name, fraction in _MISSING_MEASURE.items():
    present[name] = rng.random(n) >= fraction
  present["pacu_minutes"] &= c["procedure"] != _PROC_NAMES.index("cabg")
  present["first_case_delay_minutes"] = c["first_case"].copy()
  return present


def _in_cohort(labels, cohort: Mapping[str, str]) -> np.ndarray:
  """Rows in a cohort; `labels` maps column -> recorded values (a dict of arrays or a frame)."""
  mask = np.ones(len(labels["procedure"]), bool)
  for column, value in cohort.items():
    mask &= np.asarray(labels[column] == value, dtype=bool)
  return mask


def _planted_shift(labels, truth: Sequence[PlantedEffect], measure: str) -> np.ndarray:
  """Per-row sum of the planted effects on `measure` [n] (test scale)."""
  shift = np.zeros(len(labels["procedure"]))
  for e in truth:
    if e.measure == measure:
      rows = _in_cohort(labels, e.cohort) & np.asarray(labels[e.protected] == e.group, dtype=bool)
      shift[rows] += e.effect
  return shift


def _resolve_effects(specs, c, present, scale: float) -> list[PlantedEffect] | None:
  """Planted effects with masked checkerboards expanded into their four cells.

  Cell effects are +-x / n_cell, with n_cell the group's rows in the cell that
  have the measure, so the group's shifts sum to zero in every marginal and at
  the root. Returns None when a cell holds no group row (retry).
  """
  truth = []
  for spec in specs:
    if isinstance(spec, PlantedEffect):
      truth.append(dataclasses.replace(spec, effect=spec.effect * scale))
      continue
    labels = c["labels"]
    group = (labels[spec.protected] == spec.group) & present[spec.measure]
    cells, counts = [], []
    for i, a in enumerate(spec.values_a):
      for j, b in enumerate(spec.values_b):
        cohort = {spec.dim_a: a, spec.dim_b: b}
        cells.append((cohort, 1 if i == j else -1))
        counts.append(int((group & _in_cohort(labels, cohort)).sum()))
    if min(counts) == 0:
      return None
    x = spec.effect * scale * float(np.mean(counts))
    for (cohort, sign), count in zip(cells, counts):
      truth.append(
        PlantedEffect(
          cohort=cohort, protected=spec.protected, group=spec.group, measure=spec.measure, effect=sign * x / count
        )
      )
  return truth


_VALUES = {
  "procedure": _PROC_NAMES,
  "site": _SITES,
  "asa_class": ("1", "2", "3", "4"),
  "anesthesia_type": _ANESTHESIA,
  "urgency": _URGENCY,
}  # recorded values of the drawn dimensions


def _drawn_values(column: str) -> tuple[str, ...]:
  """Values a drawn cohort may filter `column` on (no procedure alone in its service line: an exact alias)."""
  if column == "procedure":
    lines = [p.service_line for p in _PROCEDURES]
    return tuple(p.name for p in _PROCEDURES if lines.count(p.service_line) > 1)
  return _VALUES[column]


def _marginal(table: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
  """`table` summed over every axis but `axes` (sorted)."""
  return table.sum(axis=tuple(i for i in range(table.ndim) if i not in axes))


class _Drawer:
  """Draws planted specs on one generated table (recorded labels, base measures) from the seed's generator.

  A candidate is a group, then a cohort (or checkerboard) drawn uniformly from those that row counts allow
  for that group, then a measure and a sign; it is kept when its size on the base measures is within the
  caps.
  """

  def __init__(self, rng, c, base, *, avoid: frozenset = frozenset()):
    self.rng, self.labels, self.base = rng, c["labels"], base
    self.avoid = avoid  # `_cohort_key`s no effect or checkerboard cell may sit at
    self.n = len(c["procedure"])
    self.min_group = max(2, int(np.ceil(_DRAWN_MIN_GROUP * self.n / 20000)))
    self._masks: dict = {}
    self._cohorts: dict = {}
    self._boards: dict = {}
    # Rows per combination of the drawn dimensions' values (`_VALUES`; the last index of an axis: missing).
    codes = []
    for column in DRAWN_DIMENSIONS:
      code = np.full(self.n, len(_VALUES[column]))
      for i, value in enumerate(_VALUES[column]):
        code[self.mask(column, value)] = i
      codes.append(code)
    self._shape = tuple(len(_VALUES[d]) + 1 for d in DRAWN_DIMENSIONS)
    self._drawn = [np.array([_VALUES[d].index(v) for v in _drawn_values(d)]) for d in DRAWN_DIMENSIONS]
    self._cell = np.ravel_multi_index(codes, self._shape)
    self._tables = {None: self._table(np.ones(self.n, bool))}

  def _table(self, rows: np.ndarray) -> np.ndarray:
    return np.bincount(self._cell[rows], minlength=int(np.prod(self._shape))).reshape(self._shape)

  def mask(self, column: str, value: str) -> np.ndarray:
    key = (column, value)
    if key not in self._masks:
      self._masks[key] = np.asarray(self.labels[column] == value, dtype=bool)
    return self._masks[key]

  def rows(self, cohort: Mapping[str, str]) -> np.ndarray:
    out = np.ones(self.n, bool)
    for column, value in cohort.items():
      out = out & self.mask(column, value)
    return out

  def pick(self, options):
    return options[int(self.rng.integers(len(options)))]

  def _counts(self, axes: tuple[int, ...], group=None) -> np.ndarray:
    """Rows (of `group`, a (protected, value) pair) of every cohort filtering the dimensions `axes` (sorted)
    on drawn values, one array axis each."""
    if group not in self._tables:
      self._tables[group] = self._table(self.mask(*group))
    counts = _marginal(self._tables[group], axes)
    return counts[np.ix_(*[self._drawn[a] for a in axes])] if axes else counts

  def cohorts(self, depth: int, dims: tuple[str, ...], max_share: float, group) -> list[dict[str, str]]:
    """Cohorts of `depth` filters on `dims` with `min_group` rows of `group`, each filter keeping at most
    `max_share` of the rows of the cohort without it (no alias, no near-alias)."""
    key = (depth, dims, max_share, group)
    if key not in self._cohorts:
      out = [{}] if depth == 0 else []
      for axes in itertools.combinations(sorted(DRAWN_DIMENSIONS.index(d) for d in dims), depth) if depth else ():
        counts = self._counts(axes)
        ok = self._counts(axes, group) >= self.min_group
        for k, axis in enumerate(axes):
          parent = self._counts(tuple(a for a in axes if a != axis))
          ok &= counts <= max_share * np.expand_dims(parent, k)
        for index in zip(*np.nonzero(ok)):
          names = [DRAWN_DIMENSIONS[a] for a in axes]
          out.append({d: _drawn_values(d)[int(i)] for d, i in zip(names, index)})
      self._cohorts[key] = out
    return self._cohorts[key]

  def boards(self, group) -> list[tuple[str, tuple[str, str], str, tuple[str, str]]]:
    """2x2 checkerboards on two of `_DRAWN_MASKED_DIMENSIONS` whose four cells are eligible cohorts for
    `group` with rows of the group within `_DRAWN_MASKED_BALANCE` of each other."""
    if group not in self._boards:
      cells = self.cohorts(2, _DRAWN_MASKED_DIMENSIONS, _DRAWN_MASKED_MAX_SHARE, group)
      ok = {tuple(sorted(cell.items())) for cell in cells}
      in_group = self.mask(*group)
      self._boards[group] = []
      for dim_a, dim_b in itertools.combinations(_DRAWN_MASKED_DIMENSIONS, 2):
        for values_a in itertools.combinations(_drawn_values(dim_a), 2):
          for values_b in itertools.combinations(_drawn_values(dim_b), 2):
            board = [{dim_a: a, dim_b: b} for a in values_a for b in values_b]
            if all(tuple(sorted(cell.items())) in ok for cell in board):
              sizes = [int((self.rows(cell) & in_group).sum()) for cell in board]
              if max(sizes) <= _DRAWN_MASKED_BALANCE * min(sizes):
                self._boards[group].append((dim_a, values_a, dim_b, values_b))
    return self._boards[group]

  def leak_z(self, cells: list[tuple[dict[str, str], float]]) -> float:
    """Largest nominal |z| that planted `cells` (cohort, signed nominal z) make in an unrelated cohort.

    Unrelated: up to 3 filters on the drawn dimensions, neither an ancestor nor a descendant of any cell,
    under `_DRAWN_LEAK_SHARE` of its rows in any one cell (where the scorer would call a finding there
    false), and no filter keeping `_DRAWN_ALIAS_SHARE` of the rows of the cohort without it (a near-alias
    of its parent, which is looked at itself: its finding would not be new). A cell of n_c rows at nominal
    z_c adds z_c * n(c and C) / sqrt(n_c n(C)) to cohort C (the group is a constant share of every cohort).
    """
    table = self._tables[None]
    parts = []
    for cohort, z in cells:
      index = [slice(None)] * len(DRAWN_DIMENSIONS)
      for column, value in cohort.items():
        index[DRAWN_DIMENSIONS.index(column)] = _VALUES[column].index(value)
      part = np.zeros_like(table)
      part[tuple(index)] = table[tuple(index)]
      axes = {DRAWN_DIMENSIONS.index(column) for column in cohort}
      parts.append((part, float(part.sum()), z, axes))
    worst = 0.0
    for depth in (1, 2, 3):
      for axes in itertools.combinations(range(len(DRAWN_DIMENSIONS)), depth):
        total = _marginal(table, axes)[tuple(slice(0, -1) for _ in axes)].astype(float)
        z, related = np.zeros(total.shape), np.zeros(total.shape, bool)
        for k, axis in enumerate(axes):  # a near-alias of its parent (whose own z is looked at) is not new there
          parent = _marginal(table, tuple(a for a in axes if a != axis))[tuple(slice(0, -1) for _ in range(depth - 1))]
          related |= total >= _DRAWN_ALIAS_SHARE * np.expand_dims(parent, k)
        for part, size, z_cell, cell_axes in parts:
          if set(axes) <= cell_axes or set(axes) >= cell_axes:  # overlapping cohorts here nest with the cell
            continue
          inside = _marginal(part, axes)[tuple(slice(0, -1) for _ in axes)]
          with np.errstate(divide="ignore", invalid="ignore"):
            z += np.where(total > 0, z_cell * inside / np.sqrt(size * total), 0.0)
            related |= inside >= _DRAWN_LEAK_SHARE * total
        worst = max(worst, float(np.abs(np.where(related, 0.0, z)).max()))
    return worst

  def size(self, rows: np.ndarray, group: np.ndarray, measure: str, sign: int) -> float | None:
    """|effect| that `DRAWN_Z` needs at 20000 rows for group versus rest in `rows` (base measures), or None.

    Log scale: DRAWN_Z * sd * sqrt(1 / n_group + 1 / n_rest). Binary: the risk difference
    DRAWN_Z * sqrt(p (1 - p) / n_group + p_rest (1 - p_rest) / n_rest) of the base rates (as the fixed root
    effect is sized; its raised rate makes it seen at |z| ~ 7-8). Counts are scaled to 20000 rows. None
    when the group has fewer than `min_group` rows with the measure, or the size is over its cap (log:
    `_DRAWN_MAX_LOG`; binary: a raised rate at most `_DRAWN_MAX_RISK_RATIO` times the group's base rate),
    or (binary) the rate has no room for it.
    """
    rows = rows & self.base["present"][measure]
    in_group, rest = rows & group, rows & ~group
    n_group, n_rest = int(in_group.sum()), int(rest.sum())
    if n_group < self.min_group or n_rest < 2:
      return None
    k = self.n / 20000
    if measure not in BINARY_MEASURES:
      d = DRAWN_Z * float(self.base["log"][measure][rows].std(ddof=1)) * np.sqrt(k / n_group + k / n_rest)
      return d if d <= _DRAWN_MAX_LOG else None
    prob = self.base["prob"][measure]
    p, p_rest = float(prob[in_group].mean()), float(prob[rest].mean())
    d = DRAWN_Z * np.sqrt(k * p * (1 - p) / n_group + k * p_rest * (1 - p_rest) / n_rest)
    # Room: the 5% quantile, over the group's rows, of 1 - p (to raise the rate) or p (to lower it).
    room = np.quantile(1 - prob[in_group] if sign > 0 else prob[in_group], 0.05)
    ok = _DRAWN_HEADROOM * d <= room and (sign < 0 or d <= (_DRAWN_MAX_RISK_RATIO - 1) * p)
    return float(d) if ok else None

  def effect(self, depth: int, measures: list[str]) -> PlantedEffect | None:
    """One candidate: a group, a cohort of `depth` filters, a measure among `measures`, a sign, its size."""
    protected, group = self.pick(DRAWN_GROUPS)
    cohorts = self.cohorts(depth, DRAWN_DIMENSIONS, _DRAWN_MAX_SHARE, (protected, group))
    if self.avoid:
      cohorts = [c for c in cohorts if _cohort_key(c) not in self.avoid]
    if not cohorts:
      return None
    cohort = self.pick(cohorts)
    measure = self.pick(measures)
    sign = self.pick((1, -1))
    size = self.size(self.rows(cohort), self.mask(protected, group), measure, sign)
    if size is None or self.leak_z([(cohort, DRAWN_Z)]) > _DRAWN_LEAK_Z:
      return None
    return PlantedEffect(cohort=cohort, protected=protected, group=group, measure=measure, effect=sign * size)

  def masked(self, measures: list[str]) -> _Masked | None:
    """One checkerboard candidate: a group, a board, its orientation and a log-scale measure among `measures`."""
    protected, group = self.pick(DRAWN_GROUPS)
    boards = self.boards((protected, group))
    if self.avoid:
      boards = [
        (a, va, b, vb)
        for a, va, b, vb in boards
        if not any(_cohort_key({a: x, b: y}) in self.avoid for x in va for y in vb)
      ]
    if not boards:
      return None
    dim_a, values_a, dim_b, values_b = self.pick(boards)
    if self.rng.random() < 0.5:  # which diagonal is raised
      values_a = values_a[::-1]
    measure = self.pick(measures)
    in_group = self.mask(protected, group) & self.base["present"][measure]
    counts, sizes = [], []
    for a in values_a:
      for b in values_b:
        rows = self.rows({dim_a: a, dim_b: b})
        sizes.append(self.size(rows, in_group, measure, 1))
        if sizes[-1] is None:
          return None
        counts.append(int((rows & in_group).sum()))
    # Cell effects are +-x / count; a cell's nominal z is DRAWN_Z * x / (count * size): the weakest reaches DRAWN_Z.
    x = max(size * count for size, count in zip(sizes, counts))
    z_ratio = x / min(size * count for size, count in zip(sizes, counts))
    if max(counts) > _DRAWN_MASKED_BALANCE * min(counts) or z_ratio > _DRAWN_MASKED_MAX_Z:
      return None
    if x / min(counts) > _DRAWN_MAX_LOG:
      return None
    signs = [1, -1, -1, 1]  # (a1, b1), (a1, b2), (a2, b1), (a2, b2)
    cells = [{dim_a: a, dim_b: b} for a in values_a for b in values_b]
    z = [sign * DRAWN_Z * x / (size * count) for sign, size, count in zip(signs, sizes, counts)]
    if self.leak_z(list(zip(cells, z))) > _DRAWN_LEAK_Z:
      return None
    return _Masked(dim_a, values_a, dim_b, values_b, protected, group, measure, x / float(np.mean(counts)))


def _depth(spec) -> int:
  return 2 if isinstance(spec, _Masked) else spec.depth


def _cohort_key(cohort: Mapping[str, str]) -> frozenset:
  return frozenset((str(k), str(v)) for k, v in dict(cohort).items())


def _draw_specs(rng, specs, c, base, *, avoid: frozenset = frozenset()) -> tuple | None:
  """The scenario's specs with drawn positions and sizes (same order and depths); None when one cannot be placed.

  Each spec gets its own measure (so planted effects never add up). The hardest to place draw first:
  checkerboards (they need a log-scale measure), then the deepest cohorts (binary measures rarely fit
  there). A spec tries up to `_DRAWN_TRIES` candidates; none sits at a cohort of `avoid` (`_cohort_key`s).
  """
  drawer = _Drawer(rng, c, base, avoid=avoid)
  free = list(DRAWN_MEASURES)
  out: list = [None] * len(specs)
  for k in sorted(range(len(specs)), key=lambda k: (not isinstance(specs[k], _Masked), -_depth(specs[k]))):
    if isinstance(specs[k], _Masked):
      draw = functools.partial(drawer.masked, [m for m in free if m in LOG_MEASURES])
    else:
      draw = functools.partial(drawer.effect, specs[k].depth, free)
    for _ in range(_DRAWN_TRIES):
      out[k] = draw()
      if out[k] is not None:
        break
    else:
      return None
    free.remove(out[k].measure)
  return tuple(out)


def _logistic(x):
  return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
  return np.log(p / (1.0 - p))


def _base_measures(rng, c, present) -> dict:
  """Draws every measure without planted effects (all of the measures' randomness).

  Returns:
    dict: `log` (measure -> log value [n], log-scale measures), `prob` and
    `events` (binary measure -> event probability and event [n]), `flip_u`
    ([3, n] uniforms that realize planted risk differences) and `present`.
  """
  n = len(c["procedure"])
  proc = {
    f.name: np.array([getattr(p, f.name) for p in _PROCEDURES])[c["procedure"]]
    for f in dataclasses.fields(_Procedure)
    if f.name not in ("name", "service_line", "urgency", "anesthesia")
  }
  asa = c["asa"] - 2.0
  urg = c["urgency"]
  site = c["site"]
  surgeon_minutes, surgeon_logit = c["surgeon_effect"][:, 0], c["surgeon_effect"][:, 1]
  line = np.array([p.service_line for p in _PROCEDURES])[c["procedure"]]
  log = {
    "case_minutes": (
      np.log(proc["minutes"])
      + np.array(_SITE_MINUTES)[site]
      + surgeon_minutes
      + 0.04 * asa
      + np.array([0.0, 0.05, 0.12])[urg]
      + 0.05 * (c["anesthesia"] == 0)
      + proc["minutes_sigma"] * rng.standard_normal(n)
    ),
    "turnover_minutes": (
      np.log(np.array(_SITE_TURNOVER)[site])
      + np.array([_SERVICE_TURNOVER.get(s, 0.0) for s in line])
      + 0.45 * rng.standard_normal(n)
    ),
    "pacu_minutes": (
      np.log(np.array(_ANESTHESIA_PACU)[c["anesthesia"]])
      + 0.12 * asa
      - 0.15 * (site == _SITES.index("ambulatory_surgery_center"))
      + 0.45 * rng.standard_normal(n)
    ),
    "opioid_mme": (np.log(proc["mme"]) + np.array(_ANESTHESIA_MME)[c["anesthesia"]] + 0.55 * rng.standard_normal(n)),
    "first_case_delay_minutes": (
      np.log(7.0) + np.array(_SITE_DELAY)[site] + 0.2 * (c["weekday"] == 0) + 0.8 * rng.standard_normal(n)
    ),
  }
  p_complication = _logistic(_logit(proc["complication"]) + 0.75 * asa + np.array(_URGENCY_LOGIT)[urg] + surgeon_logit)
  complication = rng.random(n) < p_complication
  log["length_of_stay"] = (
    np.log(proc["los_days"])
    + 0.25 * asa
    + np.array(_URGENCY_LOS)[urg]
    + 0.6 * complication
    + 0.45 * rng.standard_normal(n)
  )
  prob = {
    "complication": p_complication,
    "readmit_30d": _logistic(_logit(proc["readmit"]) + 0.25 * asa + 0.2 * (urg > 0) + 1.2 * complication),
    "ponv_prophylaxis": _logistic(np.array(_ANESTHESIA_PONV)[c["anesthesia"]] + np.array(_SITE_PONV)[site]),
  }
  events = {"complication": complication}
  events["readmit_30d"] = rng.random(n) < prob["readmit_30d"]
  events["ponv_prophylaxis"] = rng.random(n) < prob["ponv_prophylaxis"]
  flip_u = rng.random((len(BINARY_MEASURES), n))
  return {"log": log, "prob": prob, "events": events, "flip_u": flip_u, "present": present}


def _measures(c, base, truth: Sequence[PlantedEffect]) -> dict[str, np.ndarray]:
  """The recorded measures: `base` with the planted effects applied; NaN where absent."""
  # Planted effects: a log shift, or a risk difference realized by flipping recorded events.
  shift = {m: _planted_shift(c["labels"], truth, m) for m in MEASURES}
  out = {}
  for k, m in enumerate(BINARY_MEASURES):
    p, d, ev = base["prob"][m], shift[m], base["events"][m].copy()
    up = (d > 0) & ~ev & (base["flip_u"][k] < d / np.maximum(1.0 - p, 1e-12))
    down = (d < 0) & ev & (base["flip_u"][k] < -d / np.maximum(p, 1e-12))
    ev[up] = True
    ev[down] = False
    out[m] = ev.astype(float)
  for m, value in base["log"].items():
    out[m] = np.exp(value + shift[m])
  out["case_minutes"] = np.maximum(np.rint(out["case_minutes"]), 5.0)
  out["turnover_minutes"] = np.maximum(np.rint(out["turnover_minutes"]), 5.0)
  out["pacu_minutes"] = np.maximum(np.rint(out["pacu_minutes"]), 5.0)
  out["length_of_stay"] = np.maximum(np.rint(24.0 * out["length_of_stay"]), 1.0) / 24.0
  out["opioid_mme"] = np.maximum(np.round(out["opioid_mme"], 1), 0.5)
  out["first_case_delay_minutes"] = np.maximum(np.rint(out["first_case_delay_minutes"]), 1.0)
  for m in MEASURES:
    out[m] = np.where(base["present"][m], out[m], np.nan)
  return out


def _frame(c, measures) -> pd.DataFrame:
  data = {name: c["labels"][name] for name in DIMENSIONS + PROTECTED}
  data.update({m: measures[m].astype(np.float64) for m in MEASURES})
  return pd.DataFrame(data)


def planted_difference(
  frame: pd.DataFrame,
  truth: Sequence[PlantedEffect],
  cohort: Mapping[str, str],
  protected: str,
  group: str,
  measure: str,
) -> float:
  """Group-minus-rest difference that the planted effects alone make in a cohort.

  The mean planted shift (test scale: log for log-scale measures, probability
  for binary ones) of the group's rows in the cohort minus that of the other
  rows, over rows where the measure is present; 0 when a side is empty. At a
  planted cohort it is the planted effect; in a masked checkerboard's
  marginals it is 0. Dimensions that are nested or correlated carry planted
  effects into cohorts that are neither ancestors nor descendants of the
  planted one (service_line = orthopedics holds the total-knee cases;
  anesthesia_type = neuraxial is mostly joint replacements; a surgeon works at
  one site): this says how much of a finding there the truth explains.

  Args:
    frame: the table from `make_cases` (or any subset of its rows).
    truth: its planted effects.
    cohort: filters, {} for all rows.
    protected, group, measure: the comparison.
  """
  rows = _in_cohort(frame, cohort) & frame[measure].notna().to_numpy()
  shift = _planted_shift(frame, truth, measure)[rows]
  in_group = np.asarray(frame[protected] == group, dtype=bool)[rows]
  if in_group.all() or not in_group.any():
    return 0.0
  return float(shift[in_group].mean() - shift[~in_group].mean())


def _group_z(values: np.ndarray, group: np.ndarray, *, binary: bool) -> float:
  """Group versus rest z (normal approximation; NaN values left out).

  Welch's statistic on `values` (pass logs for log-scale measures), or the
  unpooled two-proportion z for binary ones. Returns 0 when a side has fewer
  than 2 values or no spread.
  """
  ok = ~np.isnan(values)
  a, b = values[ok & group], values[ok & ~group]
  if len(a) < 2 or len(b) < 2:
    return 0.0
  if binary:
    se2 = a.mean() * (1 - a.mean()) / len(a) + b.mean() * (1 - b.mean()) / len(b)
  else:
    se2 = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
  return float((a.mean() - b.mean()) / np.sqrt(se2)) if se2 > 0 else 0.0


def _test_values(frame: pd.DataFrame, measure: str) -> np.ndarray:
  values = frame[measure].to_numpy(dtype=np.float64)
  return np.log(values) if measure in LOG_MEASURES else values


def _masked_quiet(frame: pd.DataFrame, spec: _Masked) -> bool:
  """True when the root and all four one-filter marginals show |z| < MASKED_MARGINAL_Z."""
  values = _test_values(frame, spec.measure)
  group = (frame[spec.protected] == spec.group).to_numpy()
  cohorts = [np.ones(len(frame), bool)]
  cohorts += [(frame[spec.dim_a] == v).to_numpy() for v in spec.values_a]
  cohorts += [(frame[spec.dim_b] == v).to_numpy() for v in spec.values_b]
  binary = spec.measure in BINARY_MEASURES
  return all(abs(_group_z(values[rows], group[rows], binary=binary)) < MASKED_MARGINAL_Z for rows in cohorts)
