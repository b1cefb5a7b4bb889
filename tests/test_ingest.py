"""Ingest: coding, cells and sufficient statistics against pandas; clear errors."""

import numpy as np
import pandas as pd
import pytest

import cube_env
from cube_env.data import disclosure
from tests.conftest import make_small_df


def test_cells_match_pandas(small_df, small_cube):
  meta = small_cube.meta
  assert meta.filter_names == ("proc", "site", "urgency", "bmi", "race", "sex")
  assert int(np.asarray(small_cube.rows).sum()) == len(small_df)
  # Sufficient statistics give back each measure's count, mean and variance.
  stats = np.asarray(small_cube.stats, np.float64)
  for m, name in enumerate(meta.measure_names):
    values = small_df[name].astype(float)
    if meta.is_log[m]:
      values = np.log(values)
    n, s1, s2 = stats[:, m].sum(axis=0)
    assert n == values.notna().sum()
    assert np.isclose(meta.shift[m] + s1 / n, values.mean(), rtol=1e-5)
    assert np.isclose((s2 - s1 * s1 / n) / (n - 1), values.var(), rtol=1e-3)


def test_coding_rules(small_cube):
  meta = small_cube.meta
  assert meta.categories[meta.column_index("site")][-1] == cube_env.MISSING
  assert len(meta.categories[meta.column_index("bmi")]) == 3  # numeric dimension, 3 quantile bins
  assert meta.is_log == (True, True, False)  # minutes, los skewed and positive; complication binary
  assert meta.is_binary == (False, False, True)
  text = small_cube.summary_text()
  assert "binned 'bmi'" in text and "'site': " in text and "measure 'los'" in text


def test_folding_high_cardinality():
  df = make_small_df(n=2000)
  df["surgeon"] = [f"dr{i % 40}" for i in range(len(df))]
  schema = cube_env.Schema(dimensions=["proc", "surgeon"], protected=["race"], measures=["minutes"])
  cube = cube_env.build_cube(df, schema, max_categories=8)
  cats = cube.meta.categories[1]
  assert len(cats) == 8 and cats[-1] == cube_env.OTHER
  assert any("folded 33 rare values of 'surgeon'" in s for s in cube.meta.summary)


def test_given_bin_edges():
  df = make_small_df(n=500)
  schema = cube_env.Schema(
    dimensions=["proc", "bmi"], protected=["race"], measures=["minutes"], bins={"bmi": [0, 25, 30, 100]}
  )
  cube = cube_env.build_cube(df, schema)
  assert set(cube.meta.categories[1]) == {"[0, 25)", "[25, 30)", "[30, 100]"}
  coded = np.asarray(cube.codes)[:, 1] == cube.meta.code("bmi", "[0, 25)")
  assert int(np.asarray(cube.rows)[coded].sum()) == int((df.bmi < 25).sum())


def test_read_table_csv_and_parquet(tmp_path, small_df):
  csv, pq = tmp_path / "cases.csv", tmp_path / "cases.parquet"
  small_df.to_csv(csv, index=False)
  small_df.to_parquet(pq)
  for path in (csv, pq):
    got = cube_env.read_table(path)
    assert got.shape == small_df.shape
  with pytest.raises(ValueError, match="does not exist"):
    cube_env.read_table(tmp_path / "nope.csv")
  with pytest.raises(ValueError, match="unknown format"):
    (tmp_path / "x.xlsx").write_text("")
    cube_env.read_table(tmp_path / "x.xlsx")


def _schema(**kw):
  base = dict(dimensions=["proc", "site"], protected=["race"], measures=["minutes"])
  base.update(kw)
  return cube_env.Schema(**base)


@pytest.mark.parametrize(
  "schema,df_edit,match",
  [
    (_schema(dimensions=["proc", "nope"]), None, "'nope'"),
    (_schema(dimensions=["proc", "proc"]), None, "'proc' is listed twice"),
    (_schema(protected=[]), None, "no protected column"),
    (_schema(protected=["proc"]), None, "'proc' is in two roles"),
    (_schema(measures=["site"]), None, "'site' is in two roles"),
    (_schema(measures=["race2"]), lambda d: d.assign(race2=d.race), "'race2' is not numeric"),
    (_schema(dimensions=["proc", "const"]), lambda d: d.assign(const="x"), "'const' is constant"),
    (_schema(), lambda d: d.iloc[:0], "empty"),
    (
      _schema(measures=["bad"]),
      lambda d: d.assign(bad=np.where(np.arange(len(d)) == 3, np.inf, 1.0)),
      "'bad' holds infinite",
    ),
    (_schema(adjusters=["minutes"]), None, "'minutes' is a measure"),
  ],
)
def test_bad_input_names_the_column(small_df, schema, df_edit, match):
  df = small_df if df_edit is None else df_edit(small_df.copy())
  with pytest.raises(ValueError, match=match):
    cube_env.build_cube(df, schema)


def test_a_text_value_in_a_measure_is_named_without_a_small_count(small_df):
  schema = _schema(measures=["los"])
  few = small_df.astype({"los": object})
  few.loc[few.index[:3], "los"] = "unk"
  with pytest.raises(ValueError, match=r"value 'unk' in fewer than 11 rows\)"):
    cube_env.build_cube(few, schema)
  many = small_df.astype({"los": object})
  many.loc[many.index[:40], "los"] = "unk"
  with pytest.raises(ValueError, match=r"value 'unk' in 40 rows\)"):
    cube_env.build_cube(many, schema)


def test_duplicated_table_column(small_df):
  df = pd.concat([small_df[["proc", "site", "race", "minutes"]], small_df[["proc"]]], axis=1)
  with pytest.raises(ValueError, match="duplicated column"):
    cube_env.build_cube(df, _schema())


def test_missing_measure_only_leaves_its_statistics(small_df, small_cube):
  meta = small_cube.meta
  m_los = meta.measure_names.index("los")
  m_min = meta.measure_names.index("minutes")
  stats = np.asarray(small_cube.stats)
  assert stats[:, m_los, 0].sum() == small_df["los"].notna().sum() < len(small_df)
  assert stats[:, m_min, 0].sum() == len(small_df)


def test_label_helpers_name_cohorts(small_cube):
  meta = small_cube.meta
  assert meta.protected_names == ("race", "sex")
  codes = cube_env.filters_to_codes(meta, {"site": "s2", "proc": "A"})
  assert codes.dtype == np.int32 and codes.tolist() == [0, 1, -1, -1, -1, -1]
  assert cube_env.filters_to_codes(meta, {"sex": "F", "bmi": "[8.403, 25.78)"}).tolist() == [-1, -1, -1, 2, -1, 1]
  assert cube_env.codes_to_filters(meta, [0, 1, -1, -1, -1, -1]) == {"proc": "A", "site": "s2"}
  assert cube_env.codes_to_filters(meta, [-1] * 6) == {}
  assert cube_env.cohort_label({"proc": "A", "site": "s2"}) == "proc=A & site=s2"
  assert cube_env.cohort_label({}) == "(all cases)"
  with pytest.raises(ValueError, match="column 'proc' has no category 'Z'"):
    cube_env.filters_to_codes(meta, {"proc": "Z"})
  with pytest.raises(ValueError, match="unknown filter column 'nope'"):
    cube_env.filters_to_codes(meta, {"nope": "A"})


def test_small_cell_rule_hides_counts_1_to_limit():
  assert cube_env.SMALL_CELL == 11
  assert [disclosure.disclosure_limit(g) for g in (2, 11, 11.5, 20)] == [11, 11, 12, 20]
  assert [disclosure.is_small_cell(n, 11) for n in (None, 0, 1, 10, 11, 500)] == [
    False,
    False,
    True,
    True,
    False,
    False,
  ]
  assert disclosure.is_small_cell(15, 20) and not disclosure.is_small_cell(20, 20)
  note = "'site': 3 missing values coded as 'MISSING'; measure 'los': 12 rows missing; 0 rows dropped"
  assert cube_env.redact_counts(note, 11) == (
    "'site': fewer than 11 missing values coded as 'MISSING'; measure 'los': 12 rows missing; 0 rows dropped"
  )
  assert cube_env.redact_counts("measure 'los': 12 rows missing", 20) == "measure 'los': fewer than 20 rows missing"


def test_small_event_counts_hide_a_binary_tests_rates():
  """A rate times its side's rows is a count: where a side's events or non-events are 1-10, no statistic of that
  half's test is shown; counts, other scales and the other half stay; the input is not changed."""
  table = pd.DataFrame(
    {
      "scale": ["binary", "binary", "binary", "linear", "binary"],
      "n_group": [50.0, 50.0, 400.0, 50.0, None],
      "n_rest": [1587.0, 1000.0, 1000.0, 1000.0, None],
      # 8 events of 50 | 1000 - 995 = 5 non-events in the rest | 400 x 0.5 and 1000 x 0.3: all large | linear | blank
      "mean_group": [0.16, 0.4, 0.5, 0.16, None],
      "mean_rest": [0.1, 0.995, 0.3, 0.1, None],
      "z": [2.5, -3.1, 6.0, 2.5, None],
      "p_adjusted": [0.01, 0.002, 1e-9, 0.01, None],
      "explore_n_group": [60.0, 60.0, 60.0, 60.0, 60.0],
      "explore_n_rest": [900.0, 900.0, 900.0, 900.0, 900.0],
      "explore_mean_group": [0.5, 0.5, 0.5, 0.5, 0.05],  # 60 x 0.05 = 3 events (row 4)
      "explore_mean_rest": [0.4, 0.4, 0.4, 0.4, 0.4],
      "explore_z": [1.0, 1.0, 1.0, 1.0, 4.0],
    }
  )
  before = table.copy()
  shown = cube_env.hide_small_rates(table, 11)
  pd.testing.assert_frame_equal(table, before)
  confirm = ["mean_group", "mean_rest", "z", "p_adjusted"]
  explore = ["explore_mean_group", "explore_mean_rest", "explore_z"]
  assert shown.loc[[0, 1], confirm].isna().all().all()
  assert shown.loc[[0, 1], explore].notna().all().all()  # the exploration half's events are large
  assert shown.loc[[2, 3], confirm + explore].notna().all().all()
  assert shown.loc[4, explore].isna().all()
  np.testing.assert_array_equal(shown[["n_group", "n_rest"]].to_numpy(float), table[["n_group", "n_rest"]].to_numpy())
  assert cube_env.hide_small_rates(table, 250).loc[2, "z"] is None  # a larger min_group raises the limit: 200 < 250
  assert cube_env.hide_small_rates(table.iloc[:0], 11).empty


def test_a_hidden_rate_hides_its_whole_test_block_and_the_numbers_in_its_reason():
  """Race A's 5 events in a cohort would come back as W's rest events minus B's: every group's row of that cohort,
  protected column and measure is hidden; another measure's rows stay; an adjusted run's raw flag hides too."""
  rows = pd.DataFrame(
    {
      "cohort": ["c", "c", "c", "c", "d"],
      "protected": ["race"] * 5,
      "group": ["A", "W", "B", "W", "W"],
      "measure": ["death", "death", "death", "los", "death"],
      "scale": ["binary", "binary", "binary", "linear", "binary"],
      "n_group": [50.0, 1000.0, 600.0, 1000.0, 1000.0],
      "n_rest": [1600.0, 650.0, 1050.0, 650.0, 650.0],
      "mean_group": [0.1, 0.1, 0.2, 3.0, 0.1],
      "mean_rest": [0.14, 0.19, 0.1, 2.0, 0.19],
      "z": [-1.0, -2.0, 3.0, 4.0, -2.0],
      "relative_diff": [-0.3, -0.5, 1.0, 0.5, -0.5],
      "reason": [
        "not significant after weighted Holm (adjusted p 0.4 > 0.05)",
        "relative difference 4.0% below 10%",
        "confirmed",
        "confirmed",
        "relative difference 4.0% below 10%",
      ],
    }
  )
  shown = cube_env.hide_small_rates(rows, 11)
  assert shown.loc[:2, ["mean_group", "mean_rest", "z", "relative_diff"]].isna().all().all()
  assert shown.loc[3:, ["mean_group", "mean_rest", "z", "relative_diff"]].notna().all().all()
  assert shown["reason"].tolist() == [
    "not significant after weighted Holm",
    "relative difference below 10%",
    "confirmed",
    "confirmed",
    "relative difference 4.0% below 10%",
  ]
  flagged = rows.assign(mean_group=[0.5, 0.1, 0.2, 3.0, 0.1], raw_small_events=[False, False, False, False, True])
  shown = cube_env.hide_small_rates(flagged, 11)  # group A now has 25 events; row 4's raw (unadjusted) events are few
  assert shown.loc[:3, "z"].notna().all() and shown.loc[4, "z"] is None


def test_a_skewed_measure_with_values_at_or_below_zero_is_noted_as_linear(small_df):
  """Right-skewed minutes go to the log scale; with 4 zero values they stay linear, and the note says why without
  the count (fewer than 11); 400 such rows are shown as a count."""
  schema = cube_env.Schema(dimensions=["proc"], protected=["race"], measures=["minutes"])
  assert any("tested on the log scale" in s for s in cube_env.build_cube(small_df, schema).meta.summary)
  for zeros, count in ((4, "fewer than 11 rows"), (400, "400 rows")):
    df = small_df.copy()
    df.loc[df.index[:zeros], "minutes"] = 0.0
    meta = cube_env.build_cube(df, schema).meta
    (note,) = [s for s in meta.summary if "right-skewed" in s]
    assert f"but {count} hold values <= 0, so it is tested on the linear scale" in note and not meta.is_log[0]
