"""Stories: confirmed findings of one disparity grouped under the most specific strong one (docs/design.md, Stories)."""

import numpy as np
import pandas as pd
import pytest

import cube_env
from cube_env import synthetic
from cube_env.discovery import stories

# Rows per (procedure, site); 3/4 of each are elective. knee and hip are orthopaedics, cataract and
# glaucoma ophthalmology, so procedure=knee lies inside service=ortho only through the rows.
CELLS = {
  ("knee", "s1"): 200,
  ("knee", "s2"): 120,
  ("hip", "s1"): 160,
  ("hip", "s2"): 80,
  ("cataract", "s1"): 100,
  ("cataract", "s2"): 60,
  ("glaucoma", "s1"): 40,
  ("glaucoma", "s2"): 40,
}
SERVICE = {"knee": "ortho", "hip": "ortho", "cataract": "ophth", "glaucoma": "ophth"}
SCHEMA = cube_env.Schema(
  dimensions=["service", "proc", "site", "urgency"], protected=["race", "sex"], measures=["minutes", "los"]
)
ORTHO = {"service": "ortho"}  # 560 rows
ORTHO_S1 = {"service": "ortho", "site": "s1"}  # 360
ORTHO_S1_URGENT = {"service": "ortho", "site": "s1", "urgency": "urgent"}  # 90
S1_ELECTIVE = {"site": "s1", "urgency": "elective"}  # 375; 270 of them in ortho & s1
URGENT = {"urgency": "urgent"}  # 200; 90 in ortho & s1 (under half), 140 in ortho
OPHTH = {"service": "ophth"}  # 240
CATARACT = {"proc": "cataract"}  # 160, all in ophth


@pytest.fixture(scope="module")
def cube():
  rows = []
  for (proc, site), n in CELLS.items():
    for i in range(n):
      rows.append(
        dict(
          service=SERVICE[proc],
          proc=proc,
          site=site,
          urgency="urgent" if i % 4 == 3 else "elective",
          race="WWBA"[i % 4],
          sex="FM"[i % 2],
          minutes=60.0 + i % 7,
          los=1.0 + i % 3,
        )
      )
  return cube_env.build_cube(pd.DataFrame(rows), SCHEMA)


def finding(filters, z, *, protected="race", group="B", measure="minutes", reference="rest", confirmed=True):
  return dict(
    cohort=cube_env.cohort_label(filters),
    depth=len(filters),
    protected=protected,
    group=group,
    reference=reference,
    measure=measure,
    z=z,
    confirmed=confirmed,
    filters=dict(filters),
  )


def by_cohort(out, **match):
  rows = out
  for k, v in match.items():
    rows = rows[rows[k] == v]
  return {r.cohort: r for r in rows.itertuples()}


def test_rows_come_from_the_cube(cube):
  rows = stories.row_counter(cube)
  assert [rows(f) for f in (ORTHO, ORTHO_S1, ORTHO_S1_URGENT, S1_ELECTIVE, URGENT, OPHTH, CATARACT)] == [
    560,
    360,
    90,
    375,
    200,
    240,
    160,
  ]
  assert rows(stories.merge_filters(S1_ELECTIVE, ORTHO_S1)) == 270
  assert rows(stories.merge_filters(CATARACT, OPHTH)) == 160  # other filters, cells inside
  assert stories.merge_filters(OPHTH, ORTHO) is None and rows(None) == 0
  assert stories.overlaps(360, 200, 100) and not stories.overlaps(360, 200, 99) and not stories.overlaps(0, 5, 0)
  with pytest.raises(ValueError, match="nope"):
    stories.cohort_rows(cube, {"nope": "x"})


def test_nested_and_overlapping_cohorts_form_one_story_with_the_specific_strong_lead(cube):
  table = pd.DataFrame(
    [
      finding(ORTHO, 9.0),  # the strongest: the seed
      finding(ORTHO_S1, 8.0),  # nested, depth 2, 8 >= 0.75 * 9: the lead
      finding(S1_ELECTIVE, 6.0),  # overlaps the lead by 270 of 360 rows, not nested
      finding(ORTHO_S1_URGENT, 5.0),  # deepest but weak (5 < 6.75): a member
      finding(URGENT, 4.5),  # overlaps ortho (140 of 200) but the lead only by 90 of 200: its own story
      finding(OPHTH, 7.0),  # disjoint from ortho: its own story
      finding(ORTHO_S1, -7.5),  # the other sign
      finding(ORTHO_S1, 7.2, measure="los"),  # another measure
      finding(ORTHO_S1, 6.9, group="A"),  # another group
    ]
  )
  out = stories.group_stories(table, cube)
  assert out["cohort"].tolist()[:4] == [
    "service=ortho & site=s1",
    "service=ortho",
    "site=s1 & urgency=elective",
    "service=ortho & site=s1 & urgency=urgent",
  ]
  assert out["story"].tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5]
  assert out["story_lead"].tolist() == [True, False, False, False, True, True, True, True, True]
  assert out["story_size"].tolist() == [4, 4, 4, 4, 1, 1, 1, 1, 1]
  # Stories after the first, by strength: -7.5, 7.2 (los), 7.0 (ophth), 6.9 (group A), 4.5 (urgent).
  assert out["z"].tolist()[4:] == [-7.5, 7.2, 7.0, 6.9, 4.5]
  assert out["z"].tolist()[:4] == [8.0, 9.0, 6.0, 5.0]
  # A lower bar lets the deepest cohort lead: 5 >= 0.5 * 9.
  loose = stories.group_stories(table, cube, lead_fraction=0.5)
  assert loose["cohort"].iloc[0] == "service=ortho & site=s1 & urgency=urgent" and loose["story_size"].iloc[0] == 4
  # Without the nested strong one the broad cohort leads and still gathers its members.
  broad = stories.group_stories(table[table["z"] != 8.0], cube)
  assert broad["cohort"].iloc[0] == "service=ortho" and broad["story_size"].iloc[0] == 4  # urgent now joins


def test_cells_inside_another_cohort_count_as_nested(cube):
  table = pd.DataFrame(
    [finding(OPHTH, 6.0, group="A", measure="los"), finding(CATARACT, 5.5, group="A", measure="los")]
  )
  out = stories.group_stories(table, cube)
  # Same depth, both eligible (5.5 >= 4.5): the one with fewer rows leads.
  assert out["cohort"].tolist() == ["proc=cataract", "service=ophth"]
  assert out["story"].tolist() == [0, 0] and out["story_lead"].tolist() == [True, False]
  weak = stories.group_stories(table.assign(z=[6.0, 4.0]), cube)
  assert weak["cohort"].tolist() == ["service=ophth", "proc=cataract"] and weak["story"].tolist() == [0, 0]


def test_two_group_mirror_is_the_same_hypothesis(cube):
  table = pd.DataFrame(
    [
      finding(ORTHO, 6.0, protected="sex", group="F", reference="M"),
      finding(ORTHO_S1, -6.5, protected="sex", group="M", reference="F"),  # M shorter = F longer
      finding(ORTHO, 5.0, protected="sex", group="M", reference="F"),  # M longer: the other direction
    ]
  )
  assert stories.story_key(table.iloc[1]) == ("sex", "F", "minutes", 1) == stories.story_key(table.iloc[0])
  assert stories.story_key(table.iloc[2]) == ("sex", "F", "minutes", -1)
  out = stories.group_stories(table, cube)
  assert out["z"].tolist() == [-6.5, 6.0, 5.0]
  assert out["story"].tolist() == [0, 0, 1] and out["story_lead"].tolist() == [True, False, True]


def test_unconfirmed_rows_are_outside_every_story(cube):
  table = pd.DataFrame(
    [
      finding(ORTHO, 3.0, confirmed=False),
      finding(ORTHO, 9.0),
      finding(ORTHO_S1, 2.0, confirmed=False),
      finding(OPHTH, 7.0),
    ]
  )
  table.attrs["note"] = "kept"
  out = stories.group_stories(table, cube)
  assert out["z"].tolist() == [9.0, 7.0, 3.0, 2.0]
  assert out["story"].tolist() == [0, 1, -1, -1] and out["story_size"].tolist() == [1, 1, 0, 0]
  assert out["story_lead"].tolist() == [True, True, False, False] and out.attrs["note"] == "kept"
  empty = stories.group_stories(cube_env.confirm_candidates(table.iloc[:0], cube), cube)
  assert len(empty) == 0 and set(stories.STORY_COLUMNS) <= set(empty.columns)


def test_discover_groups_every_confirmed_finding():
  df, schema, _ = synthetic.make_cases("marginal", 2, n_rows=12000, effect_scale=2.0)
  found = cube_env.discover(df, schema, method="uct", budget=300, max_depth=2, z_screen=4.0)
  cube = cube_env.split_cubes(df, schema, seed=0).confirm_raw  # the cube discover measured overlap in
  confirmed = found[found["confirmed"].astype(bool)]
  assert len(confirmed) >= 3 and (confirmed["story"] >= 0).all()
  assert (confirmed["story_size"] >= 2).any()  # e.g. a procedure leads its service line
  assert (found.loc[~found["confirmed"].astype(bool), "story"] == -1).all()
  assert found["confirmed"].iloc[: len(confirmed)].all()  # confirmed rows still come first
  stories_seen = confirmed["story"].tolist()
  assert stories_seen == sorted(stories_seen) and set(stories_seen) == set(range(max(stories_seen) + 1))
  rows = stories.row_counter(cube)
  best = np.inf
  for _, story in confirmed.groupby("story", sort=True):
    assert story["story_lead"].tolist() == [True] + [False] * (len(story) - 1)
    assert (story["story_size"] == len(story)).all()
    lead = story.iloc[0]
    # A finding's z may be hidden by the small-cell rule in what `discover` shows (then its sign is not there).
    assert len({stories.story_key(r) for _, r in story.iterrows() if r["z"] is not None and r["z"] == r["z"]}) <= 1
    for _, member in story.iloc[1:].iterrows():
      both = rows(stories.merge_filters(lead["filters"], member["filters"]))
      assert stories.overlaps(rows(lead["filters"]), rows(member["filters"]), both)
    strongest = float(pd.to_numeric(story["z"]).abs().max())
    if lead["z"] is not None and np.isfinite(strongest):
      assert abs(lead["z"]) >= stories.LEAD_FRACTION * strongest and strongest <= best
      best = strongest
