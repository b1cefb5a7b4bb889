"""Ingest: coding, cells and sufficient statistics against pandas; clear errors."""

import dataclasses
import decimal
import gzip
import io
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats as scipy_stats

import cube_env
from cube_env.data import adjust, disclosure, ingest
from tests.conftest import SMALL_SCHEMA, make_small_df


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
  assert not any("mixes those values" in s for s in cube.meta.summary)
  # A protected column's OTHER is one tested group: the note says it mixes values (a large-table audit).
  protected = cube_env.Schema(dimensions=["proc"], protected=["surgeon"], measures=["minutes"])
  notes = [s for s in cube_env.build_cube(df, protected, max_categories=8).meta.summary if "'surgeon'" in s]
  assert notes == [
    "folded 33 rare values of 'surgeon' (1650 rows) into 'OTHER'; more than half of its rows are in 'OTHER': raise "
    "max_categories (--max-categories) or drop the column; as a protected column, its 'OTHER' mixes those "
    "values and is tested as if it were one group"
  ]


def test_given_bin_edges():
  df = make_small_df(n=500)
  schema = cube_env.Schema(
    dimensions=["proc", "bmi"], protected=["race"], measures=["minutes"], bins={"bmi": [0, 25, 30, 100]}
  )
  cube = cube_env.build_cube(df, schema)
  assert set(cube.meta.categories[1]) == {"[0, 25)", "[25, 30)", "[30, 100]"}
  coded = np.asarray(cube.codes)[:, 1] == cube.meta.code("bmi", "[0, 25)")
  assert int(np.asarray(cube.rows)[coded].sum()) == int((df.bmi < 25).sum())


def test_a_header_whose_quote_never_closes_is_refused_at_once(tmp_path):
  """A security audit: one unclosed quote in the header made the reader count the quotes of the whole record again
  at each line (800 KB: two minutes of CPU); the record is refused after MAX_HEADER_LINES lines."""
  path = tmp_path / "open.csv"
  path.write_text('"procedure,site,race,minutes\n' + "1\n" * 200_000)
  with pytest.raises(
    ingest.TableFileError,
    match="""the header \\(line 1\\) holds an odd number of '"': a quoted name never closes within 1000 lines""",
  ):
    cube_env.read_table(path)
  path.write_text('"proc\nedure",race,minutes\nA,B,3\nA,W,4\n')  # a quoted name with a line break reads as before
  assert list(cube_env.read_table(path).columns) == ["proc\nedure", "race", "minutes"]


def test_bin_labels_of_large_numbers_stay_apart_and_exact():
  """A library audit: dates stored as 20220315 were cut into 4 quantile bins labelled with 4 digits, two of them
  '[2.022e+07, 2.022e+07)', which became one category of both bins' rows. Whole-number edges are written in full
  where 4 digits do not tell them apart; small numbers keep 4 digits (bmi 25.78)."""
  rng = np.random.default_rng(0)
  days = pd.to_datetime("2022-01-01") + pd.to_timedelta(rng.integers(0, 365, 4000), "D")
  df = pd.DataFrame({"proc": rng.choice(["A", "B"], 4000), "race": rng.choice(["W", "B"], 4000)})
  df["when"], df["bmi"], df["y"] = days.strftime("%Y%m%d").astype(int), rng.normal(27, 4, 4000), rng.normal(size=4000)
  schema = cube_env.Schema(dimensions=["proc", "when", "bmi"], protected=["race"], measures=["y"])
  codes, _, meta = cube_env.encode_table(df, schema)
  edges = np.quantile(df["when"], [0.25, 0.5, 0.75])
  assert sorted(meta.categories[1]) == sorted(
    [
      f"< {edges[0]:.0f}",
      f"[{edges[0]:.0f}, {edges[1]:.0f})",
      f"[{edges[1]:.0f}, {edges[2]:.0f})",
      f">= {edges[2]:.0f}",
    ]
  )
  assert len(np.unique(codes[:, 1])) == 4 and np.bincount(codes[:, 1]).min() > 900  # four bins, none merged
  q = np.quantile(df["bmi"], [0.25, 0.5, 0.75])
  assert set(meta.categories[2]) == {
    f"< {q[0]:.4g}",
    f"[{q[0]:.4g}, {q[1]:.4g})",
    f"[{q[1]:.4g}, {q[2]:.4g})",
    f">= {q[2]:.4g}",
  }
  # Edges between whole numbers (linear quantiles) are written in fixed point, never with an exponent (a review).
  label = ingest._edge_labeller(np.array([20220101.0, 20220308.25, 20231231.5, 20260324.0]))
  assert [label(v) for v in (20220101.0, 20220308.25, 20231231.5)] == ["20220101", "20220308.2", "20231231.5"]
  given = cube_env.Schema(
    dimensions=["proc", "when"],
    protected=["race"],
    measures=["y"],
    bins={"when": [20220101, 20220401, 20220701, 20221001, 20221231]},
  )
  _, _, meta = cube_env.encode_table(df, given)
  assert set(meta.categories[1]) == {
    "[20220101, 20220401)",
    "[20220401, 20220701)",
    "[20220701, 20221001)",
    "[20221001, 20221231]",
  }


def test_read_table_csv_and_parquet(tmp_path, small_df):
  csv, pq = tmp_path / "cases.csv", tmp_path / "cases.parquet"
  small_df.to_csv(csv, index=False)
  small_df.to_parquet(pq)
  tsv = tmp_path / "cases.tsv"  # tab-separated, and compressed (an audit: .tsv was an unknown format)
  small_df.to_csv(tsv, index=False, sep="\t")
  small_df.to_csv(tmp_path / "cases.tab.gz", index=False, sep="\t")
  for path in (csv, pq, tsv, tmp_path / "cases.tab.gz"):
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
  with pytest.raises(ValueError, match=r"\('unk' in fewer than 11 rows\)"):
    cube_env.build_cube(few, schema)
  many = small_df.astype({"los": object})
  many.loc[many.index[:40], "los"] = "unk"
  with pytest.raises(ValueError, match=r"\('unk' in 40 rows\)"):
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
  assert cube_env.filters_to_codes(meta, {"sex": "F", "bmi": "< 25.78"}).tolist() == [-1, -1, -1, 1, -1, 1]
  # Quantile bins' outer edges are the column's smallest and largest values, one person's each: not shown.
  bmi = meta.categories[meta.column_index("bmi")]
  assert "< 25.78" in bmi and any(b.startswith(">= ") for b in bmi) and not any("8.403" in b for b in bmi)
  assert cube_env.codes_to_filters(meta, [0, 1, -1, -1, -1, -1]) == {"proc": "A", "site": "s2"}
  assert cube_env.codes_to_filters(meta, [-1] * 6) == {}
  assert cube_env.cohort_label({"proc": "A", "site": "s2"}) == "proc=A & site=s2"
  assert cube_env.cohort_label({}) == "(all cases)"
  # A category holding " & " made two cohorts one label (an audit): it is quoted, as a column name holding "=" is.
  assert cube_env.cohort_label({"site": "North & South"}) == 'site="North & South"'
  assert cube_env.cohort_label({"site": "North", "South": "x"}) == "site=North & South=x"
  assert cube_env.cohort_label({"a=b": '"q"', "c": "d=e"}) == '"a=b"="\\"q\\"" & c=d=e'
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
  # Reports round a note's whole-table counts to tens (a shown half's count less an exact one gives the other
  # half's): small ones as before, 11-14 "fewer than 20", others "about N0"; "1,005" is not cut in two.
  assert cube_env.note_text("'race': 25 missing values; 7 rows; 12 rows; 1,005 rows; 3.5 rows; 0 rows", 11) == (
    "'race': about 30 missing values; fewer than 11 rows; fewer than 20 rows; 1,005 rows; 3.5 rows; 0 rows"
  )
  assert (
    cube_env.note_text("folded 3 rare values of 'x' (444 rows)", 11) == "folded 3 rare values of 'x' (about 440 rows)"
  )
  # A limit already written (an ingest note redacted at 11) is left as it is, not "fewer than fewer than 20".
  assert cube_env.redact_counts("fewer than 11 rows hold values <= 0", 20) == "fewer than 11 rows hold values <= 0"


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


def test_a_column_named_twice_in_a_csv_header_is_refused_naming_it_and_the_file(tmp_path):
  """pandas would read the second 'site' as 'site.1' and a run would leave it out; a real 'site.1' is kept."""
  path = tmp_path / "x.csv"
  path.write_text("visit_id,site,unit,site\nv1,a,u1,b\nv2,a,u2,c\n")
  with pytest.raises(ValueError) as err:
    cube_env.read_table(path)
  assert str(err.value) == f"data file {str(path)!r}: column 'site' appears 2 times in the header"
  path.write_text("a;b;a;b;a\n1;2;3;4;5\n")
  with pytest.raises(ValueError) as err:
    cube_env.read_table(path)
  assert str(err.value).endswith(": column 'a' appears 3 times in the header; column 'b' appears 2 times in the header")
  path.write_text("site,site.1\na,b\n")
  got = cube_env.read_table(path)
  assert list(got.columns) == ["site", "site.1"] and got.loc[0].tolist() == ["a", "b"]


@pytest.mark.parametrize("sep,word", [(";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")])
def test_a_semicolon_tab_or_bar_separated_csv_reads_as_the_comma_one_with_a_note(tmp_path, small_df, sep, word):
  comma, other = tmp_path / "comma.csv", tmp_path / "other.csv"
  small_df.to_csv(comma, index=False)
  small_df.to_csv(other, index=False, sep=sep)
  expected, got = cube_env.read_table(comma), cube_env.read_table(other)
  pd.testing.assert_frame_equal(got, expected)
  note = f"the table's columns are separated by {word} ({sep!r}), not commas"
  assert got.attrs["coding_notes"] == (note,) and "coding_notes" not in expected.attrs
  schema = _schema(measures=["minutes", "complication"])
  assert cube_env.build_cube(got, schema).meta.summary == (note, *cube_env.build_cube(expected, schema).meta.summary)


def test_a_csv_separator_is_the_one_its_header_uses_most_outside_quotes(tmp_path):
  path = tmp_path / "x.csv"
  path.write_text('"cost, a, b";x;y|z\n1;2;3|4\n')  # outside the quotes: 2 semicolons, 1 bar, no comma
  assert cube_env.read_table(path).to_dict("list") == {"cost, a, b": [1], "x": [2], "y|z": ["3|4"]}
  path.write_text('"cost; total","x"\n1,2\n')
  got = cube_env.read_table(path)
  assert list(got.columns) == ["cost; total", "x"] and "coding_notes" not in got.attrs


def test_an_empty_file_is_named(tmp_path):
  for name, text in (("empty.csv", ""), ("blank.csv", "\n\n  \n"), ("empty.txt", "")):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError) as err:
      cube_env.read_table(path)
    assert str(err.value) == f"data file {str(path)!r}: is empty (no header line)"
  path = tmp_path / "empty.parquet"
  path.write_bytes(b"")
  with pytest.raises(ValueError) as err:
    cube_env.read_table(path)
  assert str(err.value) == f"data file {str(path)!r}: is empty (0 bytes)"


def test_rows_with_another_field_count_than_the_header_are_refused_naming_the_line(tmp_path):
  """A row with a field more (pandas would take each row's first field as its index and shift every column, or
  stop with a parser error at a later row) or fewer (a file cut short: pandas would leave the row's last columns
  missing without a word) than the header is refused naming its line; so is text that is not UTF-8 (naming the
  line, not a byte position); blank lines, quoted line breaks, CRLF and old Mac line ends read as pandas reads
  them."""
  path = tmp_path / "x.csv"
  body = "".join(f"{i},{i % 3}\n" for i in range(200))
  for text, message in (
    ("a,b\n1,2,\n3,4,\n", r"x\.csv': rows have more fields than the header has names \(line 2 has 3 fields where"),
    ("a,b\n" + body + "7,8,9\n", r"\(line 202 has 3 fields where the header has 2 names\), so columns would shift"),
    ("a,b\n" + body + "7\n", r"line 202 has 1 fields where the header has 2 names: is the file cut short"),
  ):
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
      cube_env.read_table(path)
  path.write_bytes("a,b\nH\u00f4pital,1\n".encode("latin-1"))
  with pytest.raises(ValueError, match=r"x\.csv': is not UTF-8 text \(line 2 holds the byte 'f4'.*save it as UTF-8"):
    cube_env.read_table(path)
  reference = pd.DataFrame({"a": range(200), "b": [i % 3 for i in range(200)]})
  for text in ("a,b\n\n" + body, "a,b\r\n" + body.replace("\n", "\r\n"), "a,b\r" + body.replace("\n", "\r")):
    path.write_text(text, newline="")
    pd.testing.assert_frame_equal(cube_env.read_table(path), reference)
  path.write_text('a,b\n"x\ny",1\n')
  assert cube_env.read_table(path)["a"].tolist() == ["x\ny"]
  # A line of spaces is skipped, as pandas skips it; a field past Python csv's default limit reads; the line named
  # for a bad row counts a header's quoted line break.
  path.write_text("a,b\n1,2\n   \n3,4\n")
  assert cube_env.read_table(path)["a"].tolist() == [1, 3]
  path.write_text('a,b\n"' + "x" * 200_000 + '",2\n')
  assert len(cube_env.read_table(path)["a"][0]) == 200_000
  path.write_text('"x\ny",b\n1,2\n3,4\n5\n')
  with pytest.raises(ValueError, match="line 5 has 1 fields"):
    cube_env.read_table(path)
  # A quote opened by mistake (a large-table audit): never closed, the row is named by where it starts, not by its
  # field count alone (a field too many beside a meant line break is asked about too); closed lines later with the
  # fields adding up, the rows join silently in pandas: a note, a warning where a column the run reads holds it.
  rows = "".join(f"x{i},y{i % 2},{i}\n" for i in range(30))
  for text, message in (
    (rows.replace("x5,y1,5", 'x5,"y1,5'), "runs on to line 31 inside a quoted value and has 2 fields where the header"),
    (
      rows.replace("x5,y1,5", 'x5,y1,"5'),
      "a quoted value on line 7 is never closed: it runs on to the end of the file",
    ),
    (
      'x,"a\nb",1,2\n' + rows,
      "line 2 runs on to line 3 inside a quoted value and has 4 fields where the header has 3 "
      "names: a field too many, or a '\"' on line 2 opened by mistake?",
    ),
  ):
    path.write_text("a,b,c\n" + text)
    with pytest.raises(ValueError, match=re.escape(message)):
      cube_env.read_table(path)
  path.write_text("a,b,c\n" + rows.replace("x5,y1,5", 'x5,"y1,5').replace("x7,y1,7", 'x7,y1",7'))
  joined = cube_env.read_table(path)
  note = (
    "fewer than 11 rows hold a line break inside a quoted value of 'b' (the first on line 7), kept in the cells' text"
  )
  warning = (
    "warning: fewer than 11 rows hold a line break inside a quoted value of 'b', which this run reads (the first on "
    "line 7): where a '\"' was opened by mistake, lines are joined into one row (check the file there)"
  )
  assert len(joined) == 28 and joined.attrs["coding_notes"][0] == note
  assert joined.attrs["coding_notes"][1].startswith("warning: the quoted value on lines 7 to 9 holds fewer than 11")
  uses_b = cube_env.Schema(dimensions=["b"], protected=["a"], measures=["c"])
  summary = cube_env.build_cube(joined, uses_b).meta.summary
  assert warning in summary and note not in summary
  joined["d"] = ["x", "y"] * 14
  elsewhere = cube_env.Schema(dimensions=["d"], protected=["a"], measures=["c"])  # 'b' (a comments column) not read
  summary = cube_env.build_cube(joined, elsewhere).meta.summary
  assert note in summary and warning not in summary


def test_every_row_with_another_field_count_is_named_in_one_error(tmp_path):
  """An export with several bad rows (a field more, a quote that runs on, a field fewer) is refused naming each
  one by line and field count in the one error (an audit: only the first was named, one run per fix); the first
  one's question is asked as before."""
  path = tmp_path / "x.csv"
  lines = [f"x{i},y{i % 2},{i}\n" for i in range(12)]
  lines[1] = "x1,y1,1,extra\n"  # line 3
  lines[4] = 'x4,"y\n0",4,4\n'  # lines 6 to 7: a quoted line break and a field more
  lines[8] = "x8,8\n"  # line 11 (the quoted line break counts as one)
  path.write_text("a,b,c\n" + "".join(lines))
  with pytest.raises(ingest.TableFileError) as err:
    cube_env.read_table(path)
  assert err.value.detail == (
    "rows have more fields than the header has names (line 3 has 4 fields where the header has 3 names), so columns "
    "would shift: is a name missing from the header, does each row end with a separator, or does a value hold an "
    "unquoted separator? Every line with another number of fields than the header's 3 names: line 3 (4 fields), "
    "lines 6 to 7 (4 fields), line 11 (2 fields)."
  )


def test_bad_rows_past_the_cap_are_counted_not_named(tmp_path):
  """Past `MAX_ODD_LINES` (20) bad rows the error says how many more there are, without naming them."""
  path = tmp_path / "x.csv"
  rows = [f"{i},{i % 3}" + ",9" * (i % 4 == 1) + "\n" for i in range(100)]  # 25 rows with a field too many
  path.write_text("a,b\n" + "".join(rows))
  with pytest.raises(ValueError) as err:
    cube_env.read_table(path)
  bad = [i + 2 for i in range(100) if i % 4 == 1]  # file lines: the header is line 1
  assert len(bad) == 25
  named = ", ".join(f"line {n} (3 fields)" for n in bad[:20])
  assert str(err.value).endswith(
    f"Every line with another number of fields than the header's 2 names: {named}, and 5 more such lines (only the first "
    "20 are named)."
  )
  assert f"line {bad[20]} " not in str(err.value) and ingest.MAX_ODD_LINES == 20


def test_the_service_reads_csv_bytes_with_the_same_reader(tmp_path, small_df):
  """Upload bytes and a file give the same table and note; the service's errors name its field, not a path."""
  tables = pytest.importorskip("experiments.service.tables")
  path = tmp_path / "x.csv"
  small_df.to_csv(path, index=False, sep=";")
  got = tables.parse_table(path.read_bytes())
  pd.testing.assert_frame_equal(got, cube_env.read_table(path))
  note = "the table's columns are separated by semicolons (';'), not commas"
  assert got.attrs == cube_env.read_table(path).attrs == {"coding_notes": (note,), "separator": ";"}
  for data, message in (
    (b"site,unit,site\na,b,c\n", "path: column 'site' appears 2 times in the header"),
    (b"\n\n", "path: is empty (no header line)"),
    (b"site,unit\n", "path: has a header line but no rows"),
    (gzip.compress(b"a,b\n1,2\n"), "path: is gzip-compressed: send the CSV itself (or Parquet, which compresses"),
    ("a,b\n\u00e9,2\n".encode("latin-1"), "path: is not UTF-8 text (line 2 holds the byte 'e9', as files saved in"),
  ):
    with pytest.raises(tables.TableError) as err:
      tables.parse_table(data, field="path")
    assert (err.value.field, err.value.status) == ("path", 400) and str(err.value).startswith(message)
  with pytest.raises(tables.TableError) as err:
    tables.read_limited(io.BytesIO(b"x" * 600_000), 2**19, field="path")
  assert (err.value.status, str(err.value)) == (
    413,
    "path: larger than this server's upload limit of 0.5 MiB (serve --max-upload-mb)",
  )
  # A Parquet file compresses: 200,000 rows of three constant columns in a few kB. Its footer's cells are counted
  # against what a CSV under the limit could hold, before it is read.
  buffer = io.BytesIO()
  pd.DataFrame({"a": np.zeros(200_000), "b": np.ones(200_000), "c": np.zeros(200_000)}).to_parquet(buffer)
  data = buffer.getvalue()
  assert len(data) < 20_000
  with pytest.raises(tables.TableError) as err:
    tables.parse_table(data, field="file", max_cells=2**19 // tables.BYTES_PER_CELL)
  assert (err.value.status, str(err.value)) == (
    413,
    "file: a Parquet table of 200,000 rows x 3 columns (600,000 cells): more than the 262,144 a CSV within this "
    "server's upload limit could hold (serve --max-upload-mb)",
  )
  assert len(tables.parse_table(data, field="file", max_cells=600_000)) == 200_000
  # ... and its bytes uncompressed: two cells of 600 kB text each, in a few kB (a review).
  buffer = io.BytesIO()
  pd.DataFrame({"a": ["x" * 600_000, "y" * 600_000]}).to_parquet(buffer)
  with pytest.raises(tables.TableError) as err:
    tables.parse_table(buffer.getvalue(), field="file", max_cells=2**19 // tables.BYTES_PER_CELL)
  assert err.value.status == 413 and "uncompressed: more than 2x this server's upload limit" in str(err.value)
  # ... and its text decoded: one 100-character value on 100,000 rows is a dictionary of one value and run-length
  # indices, a few kB that the footer counts as such and that decode to 10 MB (a security audit's bomb: 211 kB -> 4 GB).
  pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
  one = pa.DictionaryArray.from_arrays(pa.array(np.zeros(100_000, np.int32)), pa.array(["x" * 100]))
  buffer = io.BytesIO()
  pq.write_table(pa.table({"a": one, "b": np.zeros(100_000)}), buffer, store_schema=False)  # read back as text
  assert len(buffer.getvalue()) < 20_000 and tables.decoded_text_bytes(buffer.getvalue()) == 10_000_000
  with pytest.raises(tables.TableError) as err:
    tables.parse_table(buffer.getvalue(), field="file", max_cells=2**19 // tables.BYTES_PER_CELL)
  assert (err.value.status, str(err.value)) == (
    413,
    "file: a Parquet table whose text decodes to 10,000,000 bytes: more than 2x this server's upload limit "
    "(serve --max-upload-mb)",
  )
  assert tables.parse_table(buffer.getvalue(), field="file", max_cells=2**22)["a"].str.len().sum() == 10_000_000
  for kind in (pa.string_view(), pa.binary(100)):  # the types a review found uncounted
    column = one.cast(pa.string()).cast(kind) if kind == pa.string_view() else pa.array([b"x" * 100] * 100_000, kind)
    buffer = io.BytesIO()
    pq.write_table(pa.table({"a": column, "b": np.zeros(100_000)}), buffer)
    assert len(buffer.getvalue()) < 20_000 and tables.decoded_text_bytes(buffer.getvalue()) == 10_000_000, kind
  buffer = io.BytesIO()  # a nested column (or any type not counted) is named before it is decoded
  pq.write_table(pa.table({"a": [["x"], ["y"]], "b": [1.0, 2.0]}), buffer)
  with pytest.raises(tables.TableError) as err:
    tables.parse_table(buffer.getvalue(), field="file", max_cells=100)
  assert str(err.value) == (
    "a: column 'a' is a Parquet column of type list<element: string>: each cell must be one value"
  )
  spec = pytest.importorskip("experiments.service.spec")
  assert spec.redacted_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
  assert spec.redacted_url("redis://:Hosp1tal@Secret99@h:1/0") == "redis://:***@h:1/0"  # an '@' in it (an audit)
  assert spec.redacted_url("redis://:pw@h:6379?db=0&password=x@y") == "redis://:***@h:6379?db=0&password=***"
  assert spec.redacted_url("unix:///tmp/r.sock?db=0&password=s3cret") == "unix:///tmp/r.sock?db=0&password=***"


def test_a_server_path_is_checked_as_opened(tmp_path, monkeypatch):
  """A folder under the data root swapped for a link to outside it between the check and the open (a security
  audit's race) is refused as outside; a FIFO is no file (and does not hang the API)."""
  tables = pytest.importorskip("experiments.service.tables")
  spec = pytest.importorskip("experiments.service.spec")
  root, away = tmp_path / "root", tmp_path / "away"
  (root / "d").mkdir(parents=True)
  away.mkdir()
  (root / "d" / "cases.csv").write_text("a,b\n1,2\n")
  (away / "cases.csv").write_text("secret,b\n3,4\n")
  config = spec.ServiceConfig(data_root=str(root), data_dir=str(tmp_path / "data"))
  assert tables.read_server_path("d/cases.csv", config) == b"a,b\n1,2\n"
  if hasattr(os, "mkfifo"):
    os.mkfifo(root / "pipe")
    with pytest.raises(tables.TableError) as err:
      tables.read_server_path("pipe", config)
    assert err.value.status == 404 and "no such file" in str(err.value)
  plain_open = os.open

  def racing_open(path, flags, *args):  # the swap, after the path was resolved and checked
    if str(path).endswith("cases.csv") and not os.path.islink(root / "d"):
      os.rename(root / "d", root / "d_old")
      os.symlink(away, root / "d")
    return plain_open(path, flags, *args)

  monkeypatch.setattr(os, "open", racing_open)
  for proc in (tables.PROC_FD, str(tmp_path / "no_proc")):  # Linux's /proc, and the check without it (a review)
    monkeypatch.setattr(tables, "PROC_FD", proc)
    with pytest.raises(tables.TableError) as err:
      tables.read_server_path("d/cases.csv", config)
    assert (err.value.status, str(err.value)) == (403, "path: is outside the server's data root")
    os.remove(root / "d")
    os.rename(root / "d_old", root / "d")
  monkeypatch.undo()
  os.chmod(root / "d" / "cases.csv", 0)
  if os.geteuid() != 0:  # (root reads it regardless)
    with pytest.raises(tables.TableError) as err:
      tables.read_server_path("d/cases.csv", config)
    assert (err.value.status, str(err.value)) == (403, "path: the server cannot open it (Permission denied)")


def test_the_service_reads_measures_as_a_run_does(small_df):
  """Y/N and thousands separators pass the upload check; other text is refused naming the column."""
  tables = pytest.importorskip("experiments.service.tables")
  spec = tables.JobSpec(dimensions=("proc",), protected=("race",), measures=("admitted", "wait"))
  df = small_df.assign(
    admitted=np.where(small_df["complication"] == 1, "Y", "N"), wait=small_df["minutes"].map(lambda v: f"{v:,.0f}")
  )
  df.loc[df.index[:20], "wait"] = "1,250"
  assert tables.check_columns(df, spec) is None
  df.loc[df.index[:30], "admitted"] = "unknown"  # then Y and N are text that is not a number too
  with pytest.raises(tables.TableError) as err:
    tables.check_columns(df, spec)
  assert err.value.field == "admitted" and str(err.value) == (
    "admitted: measure column 'admitted' reads as y/n but for value 'unknown' in 30 rows: recode those as missing, "
    "'y' or 'n'"
  )


def _measure_schema(name):
  return cube_env.Schema(dimensions=["proc"], protected=["race"], measures=[name])


@pytest.mark.parametrize(
  "yes,no,pair",
  [("Y", "N", "Y/N"), (" yes", "No ", "Yes/No"), ("TRUE", "false", "True/False"), ("t", "F", "T/F")],
)
def test_a_yes_no_measure_is_a_binary_one_with_a_note(small_df, yes, no, pair):
  df = small_df.assign(admitted=np.where(small_df["complication"] == 1, yes, no).astype(object))
  df.loc[df.index[:5], "admitted"] = None
  cube = cube_env.build_cube(df, _measure_schema("admitted"))
  assert cube.meta.is_binary == (True,) and not cube.meta.is_log[0]
  n, s1, _ = np.asarray(cube.stats, np.float64)[:, 0].sum(axis=0)
  expected = small_df["complication"].iloc[5:]
  assert n == len(expected) and np.isclose(cube.meta.shift[0] + s1 / n, expected.mean())
  assert f"measure 'admitted': {pair} read as 1/0" in cube.meta.summary


def test_a_true_false_csv_column_and_a_bool_one_are_noted_as_1_0(tmp_path, small_df):
  path = tmp_path / "x.csv"
  small_df.assign(admitted=small_df["complication"] == 1).to_csv(path, index=False)
  df = cube_env.read_table(path)
  assert df["admitted"].dtype == bool
  meta = cube_env.build_cube(df, _measure_schema("admitted")).meta
  assert meta.is_binary == (True,) and "measure 'admitted': True/False read as 1/0" in meta.summary


@pytest.mark.parametrize("values", [["Y", "No"], ["Y", "N", "maybe"], ["yes", "no", "1"]])
def test_other_text_in_a_measure_stays_an_error(small_df, values):
  df = small_df.assign(admitted=[values[i % len(values)] for i in range(len(small_df))])
  with pytest.raises(ValueError, match=r"measure column 'admitted' is not numeric: it holds text that is not a "):
    cube_env.build_cube(df, _measure_schema("admitted"))


@pytest.mark.parametrize("n_grouped,count", [(27, "27 rows"), (3, "fewer than 11 rows")])
def test_thousands_separators_in_a_measure_are_read_with_a_note(small_df, n_grouped, count):
  wait = small_df["minutes"].round(1)
  assert wait.max() < 1000
  big = wait.index[:n_grouped]
  wait.loc[big] = 1000 * (np.arange(n_grouped) + 1) + 0.5
  text = wait.map(lambda v: f"{v:,.1f}").astype(object)  # '1,000.5', ..., and '57.3' without a separator
  assert text.str.contains(",").sum() == n_grouped
  cube = cube_env.build_cube(small_df.assign(wait_minutes=text), _measure_schema("wait_minutes"))
  n, s1, _ = np.asarray(cube.stats, np.float64)[:, 0].sum(axis=0)
  on_scale = np.log(wait) if cube.meta.is_log[0] else wait
  assert n == len(wait) and np.isclose(cube.meta.shift[0] + s1 / n, on_scale.mean())
  note = f"measure 'wait_minutes': {count} written with thousands separators (e.g. '1,000.5') read as numbers "
  assert note + "without the commas" in cube.meta.summary


def test_numbers_with_other_separators_are_an_error_with_a_hint(small_df):
  df = small_df.assign(wait=small_df["minutes"].astype(str).astype(object))
  df.loc[df.index[:20], "wait"] = "1,250"
  df.loc[df.index[20:40], "wait"] = "12,5"
  with pytest.raises(ValueError) as err:
    cube_env.build_cube(df, _measure_schema("wait"))
  assert str(err.value) == (
    "measure column 'wait' is not numeric: it holds text that is not a number ('12,5' in 20 rows); recode it as "
    "missing (an empty cell) or as numbers; values like '12,5' look like numbers written with separators: write "
    "them with '.' as the decimal point and no other separator (commas between groups of 3 digits, as in '99,999', "
    "are read)"
  )
  df.loc[df.index[20:40], "wait"] = "n/a"
  with pytest.raises(ValueError) as err:
    cube_env.build_cube(df, _measure_schema("wait"))
  assert str(err.value) == (
    "measure column 'wait' is not numeric: it holds text that is not a number ('n/a' in 20 rows); recode it as "
    "missing (an empty cell) or as numbers"
  )
  # Each text by its own count, most common first (an audit: "'?' in 40 rows" counted 25 rows of '-' too); cells
  # blank but for spaces are missing, with a note.
  df.loc[df.index[20:35], "wait"] = "?"
  df.loc[df.index[35:60], "wait"] = "-"
  df.loc[df.index[60:63], "wait"] = "x"
  df.loc[df.index[63:64], "wait"] = "y"
  with pytest.raises(ValueError) as err:
    cube_env.build_cube(df, _measure_schema("wait"))
  assert str(err.value) == (
    "measure column 'wait' is not numeric: it holds text that is not a number ('-' in 25 rows, '?' in 15 rows, "
    "'x' in fewer than 11 rows, ...); recode it as missing (an empty cell) or as numbers"
  )
  df.loc[df.index[20:64], "wait"] = "   "
  cube = cube_env.build_cube(df, _measure_schema("wait"))
  assert "measure 'wait': 44 rows blank but for spaces read as missing" in cube.meta.summary
  assert "measure 'wait': 44 rows missing, left out of its statistics only" in cube.meta.summary
  yes_no = np.where(np.arange(len(df)) % 2 == 0, "Y", "N").astype(object)
  yes_no[:3] = "  "  # a yes/no measure with cells of spaces: Y/N with those missing (a review: refused Y and N)
  meta = cube_env.build_cube(df.assign(wait=yes_no), _measure_schema("wait")).meta
  assert meta.is_binary == (True,) and "measure 'wait': Y/N read as 1/0" in meta.summary
  assert "measure 'wait': fewer than 11 rows blank but for spaces read as missing" in meta.summary


def test_a_yes_no_measure_with_a_stray_value_names_the_stray_one(small_df):
  """A Yes/No column with a few "unknown" named "No" as its example of a non-number (a cold audit, 2026-12-05)."""
  df = small_df.assign(ok=np.where(np.arange(len(small_df)) % 2, "Yes", "No"))
  df.loc[df.index[:3], "ok"] = "unknown"
  with pytest.raises(ValueError) as err:
    cube_env.build_cube(df, _measure_schema("ok"))
  assert str(err.value) == (
    "measure column 'ok' reads as yes/no but for value 'unknown' in fewer than 11 rows: recode those as missing, "
    "'yes' or 'no'"
  )


def test_infinite_values_in_a_numeric_dimension_are_refused_naming_the_column(small_df):
  """Quantile bins through inf have NaN edges, which put every row in one bin: the column was then called constant
  (a cold audit, 2026-12-05). Now the error names the column and the infinities."""
  df = small_df.copy()
  df.loc[df.index[:3], "bmi"] = np.inf
  with pytest.raises(ValueError) as err:
    cube_env.build_cube(df, SMALL_SCHEMA, n_bins=3)
  assert str(err.value) == (
    "column 'bmi': infinite values in a numeric dimension; recode them as missing or as a finite value"
  )


def test_a_relative_difference_floor_that_no_difference_passes_is_refused():
  """`--min-relative-diff nan` was taken, and no finding could be confirmed (a cold audit, 2026-12-05)."""
  for bad in (float("nan"), float("inf"), -0.1):
    with pytest.raises(ValueError, match="min_relative_diff must be a number >= 0"):
      cube_env.DiscoveryConfig(method="greedy", budget=10, min_relative_diff=bad)
  assert cube_env.DiscoveryConfig(method="greedy", budget=10, min_relative_diff=0.0).min_relative_diff == 0.0


def test_an_identifier_column_is_warned_of_and_a_mostly_folded_one_too(small_df):
  ids = [f"v{i}" for i in range(len(small_df))]
  df = small_df.assign(visit_id=ids)
  schema = cube_env.Schema(dimensions=["proc", "visit_id"], protected=["race"], measures=["minutes"])
  summary = cube_env.build_cube(df, schema).meta.summary
  assert summary[:2] == (
    "warning: dimension 'visit_id' looks like an identifier (more distinct values than half its rows); as a "
    "dimension it adds nothing: drop it",
    "folded 3989 rare values of 'visit_id' into 'OTHER' (rows not shown: small-cell rule); more than half of its rows "
    "are in 'OTHER': raise max_categories (--max-categories) or drop the column",
  )
  schema = cube_env.Schema(dimensions=["proc"], protected=["visit_id"], measures=["minutes"])
  assert summary[0].replace("dimension", "protected column") in cube_env.build_cube(df, schema).meta.summary
  # Pairs of rows: 2000 values in 4000 rows, half as many as rows, is no identifier; 1989 folded with 3978 rows (99%).
  df = small_df.assign(pair=[f"v{i // 2}" for i in range(len(small_df))])
  schema = cube_env.Schema(dimensions=["proc"], protected=["pair"], measures=["minutes"])
  assert cube_env.build_cube(df, schema).meta.summary[0] == (
    "folded 1989 rare values of 'pair' (3978 rows) into 'OTHER'; more than half of its rows are in 'OTHER': raise "
    "max_categories (--max-categories) or drop the column; as a protected column, its 'OTHER' mixes those "
    "values and is tested as if it were one group"
  )
  # A folded minority gets neither warning.
  df = small_df.assign(unit=[f"u{i}" if i < 1999 else "big" for i in range(len(small_df))])
  schema = cube_env.Schema(dimensions=["proc", "unit"], protected=["race"], measures=["minutes"])
  summary = cube_env.build_cube(df, schema).meta.summary
  assert "folded 1989 rare values of 'unit' into 'OTHER' (rows not shown: small-cell rule)" in summary
  assert not any("identifier" in s or "more than half" in s for s in summary)


@pytest.mark.parametrize(
  "n_folded,rows,shown",
  [(12, 12, False), (12, 23, False), (12, 24, True), (3, 10, False), (3, 11, True), (40, 500, True)],
)
def test_a_fold_note_shows_its_rows_only_when_no_folded_value_provably_has_one_row(n_folded, rows, shown):
  """With R rows in K folded values and R < 2K, some value has exactly one row; R from 1 to 10 is a small cell."""
  note = cube_env.data.ingest._fold_note("unit", n_folded, rows, 100000)
  if shown:
    assert note == f"folded {n_folded} rare values of 'unit' ({rows} rows) into 'OTHER'"
  else:
    assert note == f"folded {n_folded} rare values of 'unit' into 'OTHER' (rows not shown: small-cell rule)"


def test_few_rows_folded_or_missing_are_not_counted_in_the_notes(small_df):
  df = small_df.copy()
  df["unit"] = ["big" if i % 2 else "small" for i in range(len(df))]
  df.loc[df.index[:12], "unit"] = [f"rare{i}" for i in range(12)]  # 12 values of 1 row each
  df.loc[df.index[12:15], "proc"] = None  # 3 missing
  df.loc[df.index[:4], "minutes"] = np.nan
  schema = cube_env.Schema(dimensions=["proc", "unit"], protected=["race"], measures=["minutes"])
  summary = cube_env.build_cube(df, schema, max_categories=3).meta.summary
  assert "folded 12 rare values of 'unit' into 'OTHER' (rows not shown: small-cell rule)" in summary
  assert "'proc': fewer than 11 missing values coded as 'MISSING'" in summary
  assert "measure 'minutes': fewer than 11 rows missing, left out of its statistics only" in summary


def test_values_that_look_like_codes_are_warned_about_and_kept():
  """99999 among minutes (at least 100x the median) and a few negative waits are noted, counts under the small-cell
  rule; the values are not changed (only the analyst knows whether they are codes)."""
  rng = np.random.default_rng(0)
  df = pd.DataFrame(
    {
      "site": rng.choice(["a", "b"], 400),
      "race": rng.choice(["W", "B"], 400),
      "wait": rng.lognormal(4.0, 0.4, 400),
      "los": rng.gamma(2.0, 2.0, 400),
    }
  )
  df.loc[:26, "wait"] = 99999.0
  df.loc[27:29, "wait"] = -5.0
  schema = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["wait", "los"])
  cube = cube_env.build_cube(df, schema)
  notes = [n for n in cube.meta.summary if n.startswith("warning: measure")]
  assert len(notes) == 2 and all("'wait'" in n for n in notes)
  assert notes[0].startswith("warning: measure 'wait': 27 rows hold values of at least 100 times its median")
  assert "e.g. 99999: if they are codes for unknown, recode them as missing" in notes[0]
  assert notes[1].startswith("warning: measure 'wait': fewer than 11 rows hold negative values")
  values, *_ = ingest._measure_values(df, "wait", schema, [])
  assert np.sum(values == 99999.0) == 27  # kept
  # A long tail of real, distinct measurements is not a code: no warning.
  tail = df.assign(wait=np.r_[rng.uniform(1e4, 5e4, 27), rng.lognormal(4.0, 0.4, 373)])
  assert not [n for n in cube_env.build_cube(tail, schema).meta.summary if n.startswith("warning: measure")]


def test_a_measure_one_site_never_records_is_named_without_counts():
  rng = np.random.default_rng(1)
  df = pd.DataFrame(
    {
      "site": rng.choice(["north", "south", "east"], 600),
      "race": rng.choice(["W", "B"], 600),
      "los": rng.gamma(2.0, 2.0, 600),
    }
  )
  df.loc[df.site == "north", "los"] = np.nan
  df.loc[df.index[:20], "los"] = np.nan  # a few elsewhere too
  schema = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["los"])
  notes = [n for n in cube_env.build_cube(df, schema).meta.summary if "nearly all rows" in n]
  assert notes == [
    "measure 'los': missing in all or nearly all rows of site='north', where the other rows mostly have it: its "
    "findings say nothing there"
  ]
  spread = df.assign(los=np.where(rng.random(600) < 0.3, np.nan, rng.gamma(2.0, 2.0, 600)))
  assert not [n for n in cube_env.build_cube(spread, schema).meta.summary if "nearly all rows" in n]
  # Beside rows missing it here and there, more of them than north's (a large-table audit: the note was gone).
  many = pd.concat([df.assign(site="west", los=np.where(rng.random(600) < 0.4, np.nan, 1.0))] * 3 + [df])
  assert [n for n in cube_env.build_cube(many, schema).meta.summary if "nearly all rows" in n] == notes
  mostly = many.assign(los=np.where(rng.random(len(many)) < 0.6, np.nan, many["los"]))  # missing all over
  assert not [n for n in cube_env.build_cube(mostly, schema).meta.summary if "nearly all rows" in n]


def test_decimal_commas_trailing_separators_and_multiline_names_are_not_misread(tmp_path):
  """A semicolon file's '1,025' is a decimal comma: read as 1.025 (noted), not 1025, in measures and numeric
  dimensions alike, and '1,234.5' (a thousands comma) is refused naming the column; '0,912' is no thousands-grouped
  number; a trailing separator on every row is refused even where the first column counts 0, 1, 2 (pandas would
  make it the index and shift every column); a quoted name with a line break does not hide the separator."""
  semi = tmp_path / "semi.csv"
  rows = [f"{s};{r};{c};{b}\n" for s, r, c, b in zip("ab" * 20, "WB" * 20, ["1,025", "", "2"] * 7, ["27,5", "31"] * 10)]
  semi.write_text("site;race;creat;bmi\n" + "".join(rows))
  df = cube_env.read_table(semi)
  assert df.attrs["coding_notes"][1:] == (
    "column 'creat': decimal commas read as decimal points (e.g. '1,025' as 1.025)",
    "column 'bmi': decimal commas read as decimal points (e.g. '27,5' as 27.5)",
  )
  np.testing.assert_array_equal(df["creat"].to_numpy()[:4], [1.025, np.nan, 2.0, 1.025])
  np.testing.assert_array_equal(df["bmi"].to_numpy()[:2], [27.5, 31.0])
  schema = cube_env.Schema(dimensions=["site", "bmi"], protected=["race"], measures=["creat"])
  assert cube_env.build_cube(df, schema).meta.n_rows == 20
  (tmp_path / "codes.csv").write_text("sec;m\n1,1;1\n1,10;0\n2,5;1\n")  # section codes: 1,1 and 1,10 differ
  assert cube_env.read_table(tmp_path / "codes.csv")["sec"].tolist() == ["1,1", "1,10", "2,5"]
  semi.write_text("site;race;creat\n" + "".join(f"{s};{r};1,234.5\n" for s, r in zip("ab" * 20, "WB" * 20)))
  with pytest.raises(
    ValueError, match=r"not numeric: it holds text .*'1,234\.5' in 40 rows.*semicolons a comma is a decimal"
  ):
    cube_env.build_cube(
      cube_env.read_table(semi), cube_env.Schema(dimensions=["site"], protected=["race"], measures=["creat"])
    )
  with pytest.raises(ValueError, match="not numeric"):
    ingest.measure_numbers(pd.Series(["0,912", "1,234"]), "creat")
  np.testing.assert_array_equal(ingest.measure_numbers(pd.Series(["1,234", "5"]), "x")[0], [1234.0, 5.0])
  trailing = tmp_path / "trailing.csv"
  trailing.write_text("id,site,los\n0,a,3,\n1,b,4,\n2,a,5,\n")
  with pytest.raises(ValueError, match="rows have more fields than the header has names"):
    cube_env.read_table(trailing)
  multiline = tmp_path / "multiline.csv"
  multiline.write_text('"length\nof stay";site;race\n3;a;W\n4;b;B\n')
  read = cube_env.read_table(multiline)
  assert list(read.columns) == ["length\nof stay", "site", "race"] and read["site"].tolist() == ["a", "b"]
  # Tabs and commas as often in the header (names with commas): the first data row settles it.
  tabs = tmp_path / "tabs.csv"
  tabs.write_text("los, days\tsite, code\trace\n3\ta\tW\n4\tb\tB\n")
  assert list(cube_env.read_table(tabs).columns) == ["los, days", "site, code", "race"]


def test_thousands_points_beside_decimal_commas_are_read_with_a_note(tmp_path):
  """A ';' file's '3.835,50' (German Excel: thousands points and a decimal comma) is read as 3835.5 where every
  number of its column is written so or with a decimal comma alone, with a note (an audit: refused)."""
  path = tmp_path / "semi.csv"
  written = ["3.835,50", "12,75", "1.204.000,00", "", "-2.493,5", "908"] * 10
  path.write_text("site;race;cost\n" + "".join(f"s{i % 2};r{i % 3};{v}\n" for i, v in enumerate(written)))
  df = cube_env.read_table(path)
  np.testing.assert_array_equal(df["cost"].to_numpy()[:6], [3835.5, 12.75, 1204000.0, np.nan, -2493.5, 908.0])
  assert df.attrs["coding_notes"] == (
    "the table's columns are separated by semicolons (';'), not commas",
    "column 'cost': points between groups of three digits read as thousands separators and decimal commas as "
    "decimal points (e.g. '3.835,50' as 3835.50)",
  )
  schema = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["cost"])
  assert cube_env.build_cube(df, schema).meta.n_rows == 60


def test_a_column_mixing_thousands_points_and_decimal_points_is_refused_naming_both(tmp_path):
  """A ';' file's column holding '3.835,50' and '3.8' (a point that groups no thousands) is read by neither
  convention: kept as written, and refused as a measure naming the column, a value of each kind."""
  path = tmp_path / "semi.csv"
  schema = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["cost"])
  mixed = ["3.835,50", "3.8"] * 20
  path.write_text("site;race;cost\n" + "".join(f"s{i % 2};r{i % 3};{v}\n" for i, v in enumerate(mixed)))
  df = cube_env.read_table(path)
  assert df["cost"].tolist() == mixed  # as written
  with pytest.raises(ingest.ColumnError) as err:
    cube_env.build_cube(df, schema)
  assert str(err.value) == (
    "measure column 'cost' is not numeric: it holds text that is not a number ('3.835,50' in 20 rows); recode it as "
    "missing (an empty cell) or as numbers; values like '3.835,50' are written with thousands points and a decimal "
    "comma, which a ';' file's column is read with only where each of its numbers is written so (or with a decimal "
    "comma alone), but '3.8' is not: write the column's numbers one way"
  )


def test_thousands_points_read_only_beside_another_values_comma_are_a_warning_and_refusals_say_why(tmp_path):
  """A review: a column of points alone beside one decimal comma ('1.250', '0,75') reads its points as thousands,
  which a neighbouring column of points alone reads as decimals: a warning, not a routine note. A refused column
  names no missing-value word as a number written another way, and one whose every number is written so but two
  collide as one number ('1.234,50', '1.234,5') says so."""
  path = tmp_path / "semi.csv"
  rows = [("1.250", "1.250"), ("0,75", "80"), ("2,5", "90")] * 10
  path.write_text("site;race;dose;cost\n" + "".join(f"s{i % 2};r{i % 3};{a};{b}\n" for i, (a, b) in enumerate(rows)))
  df = cube_env.read_table(path)
  assert df["dose"].tolist()[:3] == [1250.0, 0.75, 2.5] and df["cost"].tolist()[:3] == [1.25, 80.0, 90.0]
  assert df.attrs["coding_notes"][1] == (
    "warning: column 'dose': points between groups of three digits read as thousands separators and decimal commas "
    "as decimal points (e.g. '1.250' as 1250)"
  )
  schema = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["cost"])
  for written, why in (
    (["3.835,50", "unknown", "12,5"], ""),
    (
      ["1.234,50", "1.234,5", "12,0"],
      ", as this one is, but two of its values are one number written two ways (such as '1,5' and '1,50'), so it is "
      "read as codes: write each number one way",
    ),
  ):
    path.write_text("site;race;cost\n" + "".join(f"s{i % 2};r{i % 3};{v}\n" for i, v in enumerate(written * 20)))
    with pytest.raises(ingest.ColumnError) as err:
      cube_env.build_cube(cube_env.read_table(path), schema)
    assert str(err.value).endswith(
      "which a ';' file's column is read with only where each of its numbers is written so (or with a decimal comma "
      "alone)" + why
    ), str(err.value)


def test_a_title_above_the_header_is_asked_about_without_listing_every_row(tmp_path):
  """A review: a report's title above the column names made every data line a bad line, all listed."""
  path = tmp_path / "titled.csv"
  path.write_text("My report\na,b,c\n" + "x,y,1\n" * 40)
  with pytest.raises(ValueError) as err:
    cube_env.read_table(path)
  assert "is that line a title above the column names" in str(err.value)
  assert "Every line" not in str(err.value) and "more rows" not in str(err.value)


def test_spaces_around_a_category_are_read_without_them_and_capitals_are_warned_of(small_df):
  """' B ' is 'B' (noted with its rows), a value of spaces alone is missing (noted), and labels that differ only in
  capitals stay apart with a warning; case-mix strata read the text the same way."""
  df = small_df.copy()
  race = df["race"].to_numpy(object)
  race[:200] = " B "  # spaces around a real group's label
  race[200:230] = "   "
  race[230:260] = "b"
  df["race"] = race
  cube = cube_env.build_cube(df, SMALL_SCHEMA)
  labels = cube.meta.categories[cube.meta.column_index("race")]
  assert " B " not in labels and "   " not in labels and "" not in labels and {"B", "b", "MISSING"} <= set(labels)
  summary = cube.meta.summary
  assert "'race': 30 rows blank but for spaces coded as 'MISSING'" in summary
  assert "'race': 200 rows with spaces around the value read without them (e.g. ' B ' as 'B')" in summary
  assert (
    "warning: protected column 'race' has values that differ only in capitals ('B' and 'b'), kept apart: recode "
    "them if they mean the same" in summary
  )
  # Codes beside words ('F' beside 'Female', an export mixing them): kept apart with a warning (an audit).
  sex = df["sex"].to_numpy(object).copy()
  sex[:40] = "Female"
  sex[40:60] = "fem"
  meta = cube_env.build_cube(df.assign(sex=sex), SMALL_SCHEMA).meta
  assert (
    "warning: protected column 'sex' has values that may abbreviate others ('F' and 'fem'; 'F' and 'Female'; 'fem' "
    "and 'Female'), kept apart: recode them if they mean the same" in meta.summary
  )
  assert not any("abbreviate" in line for line in summary)  # 'B' and 'b' do not abbreviate each other
  stripped = df["race"].str.strip().replace("", None)
  by_label = pd.Series(np.asarray(cube.rows)).groupby(np.asarray(cube.codes)[:, cube.meta.column_index("race")]).sum()
  for code, label in enumerate(labels):
    expected = stripped.isna().sum() if label == "MISSING" else (stripped == label).sum()
    assert by_label.get(code, 0) == expected, label
  levels = adjust.adjuster_levels(df, ["race"])[:, 0]
  assert len(set(levels[:200])) == 1 and levels[0] == levels[np.flatnonzero(stripped == "B")[-1]]
  assert (levels[200:230] == -1).all() and levels[230] != levels[0]
  # Under the small-cell rule: a few such rows are "fewer than 11".
  race[:200] = df["race"].iloc[200:400].to_numpy()
  race[200:230] = race[400:430]
  race[:3] = "A "
  df["race"] = race
  assert "'race': fewer than 11 rows with spaces around the value read without them (e.g. 'A ' as 'A')" in (
    cube_env.build_cube(df, SMALL_SCHEMA).meta.summary
  )
  # Values of spaces alone hold no category of their own, so they push no real one into OTHER (a review).
  col = pd.Series(["A"] * 30 + ["B"] * 20 + ["C"] * 15 + ["  "] * 5)
  codes, labels = ingest._code_column(col, "c", edges=None, n_bins=4, max_categories=3, summary=[])
  assert labels == ("A", "B", "C", "MISSING") and (codes[-5:] == 3).all()


def test_rows_with_every_field_blank_are_left_out_with_a_note(tmp_path, small_df):
  """',,,' lines (a spreadsheet's export leaves them) are no cases: left out, counted in a read note (a small count
  hidden); a file of nothing else is refused naming it."""
  df = small_df.head(500)
  path = tmp_path / "cases.csv"
  blank = ",".join([""] * df.shape[1])
  text = df.to_csv(index=False)
  path.write_text(text + "\n".join([blank] * 40) + "\n")
  read = cube_env.read_table(path)
  pd.testing.assert_frame_equal(read, pd.read_csv(io.StringIO(text)))
  assert read.attrs[ingest.READ_NOTES] == ("40 rows with every field blank left out",)
  path.write_text(text + "\n".join([blank] * 3) + "\n")
  assert cube_env.read_table(path).attrs[ingest.READ_NOTES] == ("fewer than 11 rows with every field blank left out",)
  # Trailing separators on every line ('...,,' from a spreadsheet): columns without a name or a value are left
  # out with a note, so the table (and its split, which hashes every column) is the one without them (an audit).
  path.write_text("\n".join(line + ",," for line in text.splitlines()) + "\n")
  read = cube_env.read_table(path)
  pd.testing.assert_frame_equal(read, pd.read_csv(io.StringIO(text)))
  assert read.attrs[ingest.READ_NOTES] == (
    "2 columns without a name or any value left out (a spreadsheet's trailing separators)",
  )
  assert (
    cube_env.split_rows(read, seed=3).tolist() == cube_env.split_rows(pd.read_csv(io.StringIO(text)), seed=3).tolist()
  )
  path.write_text("site,y,\n1,0,\n2,1,\n3,0,\n,,\n")  # and ',,,' lines: whole numbers stay integers (a review)
  read = cube_env.read_table(path)
  pd.testing.assert_frame_equal(read, pd.read_csv(io.StringIO("site,y\n1,0\n2,1\n3,0\n")))
  # The table is the one without those lines: whole numbers stay integers (a blank line made them floats: '1.0').
  path.write_text("site,race,y\n1,A,0\n2,B,1\n1,B,0\n2,A,1\n,,\n,,\n")
  read = cube_env.read_table(path)
  pd.testing.assert_frame_equal(read, pd.read_csv(io.StringIO("site,race,y\n1,A,0\n2,B,1\n1,B,0\n2,A,1\n")))
  # A blank or ',,' line inside a quoted field is the field's text, kept (a review: it was cut out of the note).
  path.write_text('site,note,y\n1,"a\n\nb",0\n2,"c\n,,\nd",1\n,,\n')
  read = cube_env.read_table(path)
  assert read["note"].tolist() == ["a\n\nb", "c\n,,\nd"] and read["site"].tolist() == [1, 2]
  assert read["site"].dtype.kind == "i"  # the table without the blank line, not the first read's floats
  # A quote inside a field is text, not an opening quote (a review: the rows after 5'10" kept their ',,' lines,
  # and whole numbers read as floats); a doubled quote inside a quoted field is a quote.
  path.write_text('site,height,note\n1,5\'10",x\n,,\n2,6\'1","say ""hi""\n\nthen"\n,,\n3,170,z\n')
  read = cube_env.read_table(path)
  assert read["site"].tolist() == [1, 2, 3] and read["site"].dtype.kind == "i"
  assert read["height"].tolist() == ["5'10\"", "6'1\"", "170"]
  assert read["note"].tolist() == ["x", 'say "hi"\n\nthen', "z"]
  path.write_text(text.splitlines()[0] + "\n" + "\n".join([blank] * 3) + "\n")
  with pytest.raises(ValueError) as err:
    cube_env.read_table(path)
  assert str(err.value) == f"data file {str(path)!r}: has a header line but every row is blank"


def test_a_missing_column_is_named_with_the_near_names_the_table_has(small_df):
  """A header's 'Site ' for --dimensions Site, or a misspelling: the error suggests the table's name."""
  df = small_df.rename(columns={"site": "Site ", "minutes": "case_minutes"})
  for schema, hint in (
    (cube_env.Schema(dimensions=["Site"], protected=["race"], measures=["los"]), "(did you mean 'Site '?)"),
    (
      cube_env.Schema(dimensions=["proc"], protected=["race"], measures=["case_minute"]),
      "(did you mean 'case_minutes'?)",
    ),
  ):
    with pytest.raises(ingest.ColumnError) as err:
      cube_env.build_cube(df, schema)
    assert f"is not in the table {hint}; columns are" in str(err.value)
  with pytest.raises(ingest.ColumnError) as err:
    cube_env.build_cube(df, cube_env.Schema(dimensions=["ward"], protected=["race"], measures=["los"]))
  assert "did you mean" not in str(err.value)


def test_an_error_quotes_huge_cells_and_header_names_cut_short(small_df):
  """A table error quotes a cell's text or a column's name cut to a bounded length, its own length stated, and lists
  at most a bounded number of column names (a service audit: a 15 MB upload whose measure held 5 MB texts got a
  15 MB error back, and a 2 MB header name came back whole); it still names the column at fault."""
  huge = "x" * 100_000
  df = small_df.head(200).copy()
  df["minutes"] = df["minutes"].astype(object)
  df.loc[df.index[:3], "minutes"] = [huge, "y" * 100_000, "z" * 100_000]
  with pytest.raises(ValueError) as err:
    cube_env.build_cube(df, _measure_schema("minutes"))
  message = str(err.value)
  assert len(message) < 2_000
  assert message.startswith("measure column 'minutes' is not numeric: it holds text that is not a number ('xxx")
  assert "x…" + "x" * ingest.SHOWN_TAIL + "' (100,000 characters) in fewer than 11 rows" in message
  # A 100,000-character header beside a missing column: the list of columns quotes it cut.
  wide = df.rename(columns={"bmi": "b" * 100_000})
  with pytest.raises(ingest.ColumnError) as err:
    cube_env.build_cube(wide, _schema(measures=["Minutes"]))
  message = str(err.value)
  assert len(message) < 2_000 and err.value.column == "Minutes"
  assert message.startswith("column 'Minutes' (schema.measures) is not in the table (did you mean 'minutes'?)")
  assert "'bbb" in message and "b…" + "b" * ingest.SHOWN_TAIL + "' (100,000 characters)" in message
  # A 100,000-character name in the schema, missing from the table: quoted cut, once in full in `column`.
  with pytest.raises(ingest.ColumnError) as err:
    cube_env.build_cube(wide, _schema(measures=["b" * 100_001]))
  message = str(err.value)
  assert len(message) < 2_000 and err.value.column == "b" * 100_001
  assert (
    message.startswith("column 'bbb")
    and "b…" + "b" * ingest.SHOWN_TAIL + "' (100,001 characters) (schema.measures) is not in the table" in message
  )
  # A measure named by a 100,000-character header, holding text: named, cut.
  named = df.rename(columns={"minutes": huge})
  with pytest.raises(ValueError) as err:
    cube_env.build_cube(named, _measure_schema(huge))
  assert len(str(err.value)) < 2_000 and str(err.value).startswith("measure column 'xxx")
  # Many columns: the first 20 names, then how many more.
  many = df.assign(**{f"extra_{i}": 0 for i in range(100)})
  with pytest.raises(ingest.ColumnError) as err:
    cube_env.build_cube(many, _schema(measures=["nope"]))
  message = str(err.value)
  assert "'extra_10'" in message and "'extra_11'" not in message and message.endswith(", and 89 more]")
  assert len(message) < 2_000
  # A date dimension with one bad date of 100,000 characters (pandas' own error quotes it whole): named, cut.
  when = pd.Series(pd.date_range("2021-01-01", periods=200).strftime("%Y-%m-%d"), index=small_df.index[:200])
  when.iloc[3] = "2023-01-01 08:30:00." + "1" * 100_000
  with pytest.raises(ValueError) as err:
    cube_env.build_cube(small_df.head(200).assign(date=when), _schema(dimensions=["proc", "date"]))
  message = str(err.value)
  assert len(message) < 2_000 and message.startswith("column 'date': reads as dates (YYYY-MM-DD) but one is not a ")
  assert message.endswith(
    "valid date: '2023-01-01 08:30:00.11111111111111111111…11111111111111111111' (100,020 characters)"
  )


def test_shown_cuts_long_text_and_long_lists():
  """`shown_value` quotes a value whole up to `SHOWN_CHARS` characters, a longer one cut to its start and end and
  its length stated;
  `shown_names` lists `SHOWN_NAMES` names, then how many more."""
  assert ingest.shown_value("site") == "'site'" and ingest.shown_value(3) == "3"
  head = ingest.SHOWN_CHARS - ingest.SHOWN_TAIL
  tail = ingest.SHOWN_TAIL
  assert ingest.shown_value("x" * 15_000_000) == repr("x" * head + "…" + "x" * tail) + " (15,000,000 characters)"
  assert ingest.shown_value("é" * 61, str) == "é" * head + "…" + "é" * tail + " (61 characters)"
  # Long names that share their first 60 characters print apart (they had printed alike).
  names = ["length of stay in days, measured from admission to discharge, " + year for year in ("2023", "2024")]
  shown = [ingest.shown_value(name) for name in names]
  assert shown[0] != shown[1] and shown[0].endswith("discharge, 2023' (66 characters)")
  assert ingest.shown_value(("a",) * 40).endswith(",… 'a', 'a', 'a', 'a') (200 characters)")  # not text: its repr cut
  assert ingest.shown_names(["a", "b"]) == str(["a", "b"])[1:-1]
  assert ingest.shown_names([f"c{i}" for i in range(1025)], " and ").endswith("'c18' and 'c19', and 1,005 more")


def test_a_date_dimension_is_cut_at_quantiles_of_its_dates_and_other_date_layouts_are_warned_of(small_df):
  """A date column (ISO text, datetimes, or datetimes with a zone) is binned like a number, its labels dates of the
  column; text dates in another layout stay categories with a warning; bin edges and an impossible date are errors
  naming the column."""
  rng = np.random.default_rng(3)
  when = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365, len(small_df)), unit="D")
  schema = cube_env.Schema(dimensions=["proc", "date"], protected=["race"], measures=["minutes"])
  iso = small_df.assign(date=when.strftime("%Y-%m-%d"))
  iso.loc[7, "date"] = None
  codes, _, meta = cube_env.encode_table(iso, schema)
  labels = meta.categories[1]
  assert any(note.startswith("binned 'date' (4 quantile bins of its dates)") for note in meta.summary)
  # The edges are the column's own dates at its quartiles (pandas' lower quantiles), so each bin holds exactly the
  # rows its label's dates say.
  day = pd.to_datetime(iso["date"])
  edges = list(day.quantile([0.25, 0.5, 0.75], interpolation="lower").dt.strftime("%Y-%m-%d"))
  order = [f"< {edges[0]}", f"[{edges[0]}, {edges[1]})", f"[{edges[1]}, {edges[2]})", f">= {edges[2]}", "MISSING"]
  assert sorted(labels) == sorted(order)
  expect = np.select([day < edges[0], day < edges[1], day < edges[2], day.notna()], [0, 1, 2, 3], 4)
  np.testing.assert_array_equal(np.asarray(order)[expect], np.asarray(labels)[codes[:, 1]])
  assert np.bincount(expect)[:4].min() >= len(iso) // 4 - 40  # quartiles of the dates
  # Datetimes (Parquet's and pandas' own, of any unit) and the same wall times with a zone give the same coding.
  for dates in (day, day.astype("datetime64[s]"), day.dt.tz_localize("America/Chicago")):
    again, _, meta2 = cube_env.encode_table(iso.assign(date=dates), schema)
    assert meta2.categories[1] == labels and np.array_equal(again, codes)
  # A time of day shows in the labels; a date in another layout stays a category, with a warning.
  timed = cube_env.encode_table(iso.assign(date=day + pd.Timedelta(minutes=90)), schema)[2]
  assert f"< {edges[0]} 01:30" in timed.categories[1]
  us = cube_env.encode_table(iso.assign(date=day.dt.strftime("%m/%d/%Y")), schema)[2]
  assert any("looks like dates not written as YYYY-MM-DD" in note for note in us.summary)
  assert "OTHER" in us.categories[1]
  # Dates with a few stray values: a warning naming one (an audit: folded into OTHER without a word).
  stray = day.dt.strftime("%Y-%m-%d").to_numpy(object).copy()
  stray[:3] = "unknown"
  mixed = cube_env.encode_table(iso.assign(date=stray), schema)[2]
  assert any("looks like dates but for values such as 'unknown': kept as categories" in n for n in mixed.summary)
  # A few dates are categories, as any column with few values.
  few = cube_env.encode_table(iso.assign(date=np.where(rng.random(len(iso)) < 0.5, "2021-01-01", "2022-01-01")), schema)
  assert sorted(few[2].categories[1]) == ["2021-01-01", "2022-01-01"]
  with pytest.raises(ValueError, match="column 'date': bin edges are for numbers"):
    cube_env.encode_table(iso, cube_env.Schema(**{**vars(schema), "bins": {"date": [0, 1]}}))
  # A sentinel far from the others (9999-12-31, "no end date") is its own latest date, not wrapped into the first
  # bin (datetime64[ns] ends in 2262); seconds show where a time has them.
  far = iso.copy()
  far.loc[:29, "date"] = "9999-12-31"
  far_codes, _, far_meta = cube_env.encode_table(far, schema)
  assert len(set(far_codes[:30, 1])) == 1 and far_meta.categories[1][far_codes[0, 1]].startswith(">= ")
  seconds = cube_env.encode_table(iso.assign(date=day + pd.Timedelta(seconds=90)), schema)[2]
  assert f"< {edges[0]} 00:01:30" in seconds.categories[1]
  bad = iso.copy()
  bad.loc[3, "date"] = "2023-02-30"
  with pytest.raises(ValueError, match="column 'date': reads as dates .* not a valid date"):
    cube_env.encode_table(bad, schema)


def test_an_empty_measure_and_cells_holding_lists_are_errors_naming_the_column():
  """An all-missing measure says so without a count from 1 to 10 (it said "fewer than 2"); a column whose cells are
  lists (a Parquet list column) is refused naming it, not a TypeError deep in the coding (a service audit)."""
  df = make_small_df(n=300)
  with pytest.raises(ValueError, match=r"measure column 'los' has no values \(missing in every row\)"):
    cube_env.build_cube(df.assign(los=np.nan), SMALL_SCHEMA)  # a library audit: it said "almost no values"
  one = np.full(len(df), np.nan)
  one[0] = 2.0
  with pytest.raises(ValueError, match=r"measure column 'los' has almost no values \(fewer than 11 non-missing\)"):
    cube_env.build_cube(df.assign(los=one), SMALL_SCHEMA)
  with pytest.raises(TypeError, match=r"schema must be a cube_env.Schema\(dimensions=\.\.\., .*got dict"):
    cube_env.build_cube(df, {"dimensions": ["site"], "protected": ["race"], "measures": ["los"]})
  with pytest.raises(ValueError, match=r"got str \(read a file with cube_env.read_table\(path\) first\)"):
    cube_env.build_cube("cases.csv", SMALL_SCHEMA)
  listed = df.assign(site=[[s] for s in df["site"]])
  with pytest.raises(ingest.ColumnError, match=r"column 'site' holds lists \(the first at row 1\)") as err:
    cube_env.build_cube(listed, SMALL_SCHEMA)
  assert err.value.column == "site"
  # A protected group named "rest" would read as "the rest of the cohort" (a finding's reference against every other
  # group) and be taken for one by the small-cell rules (a review): refused, naming the column; a dimension may.
  with pytest.raises(ingest.ColumnError, match="protected column 'sex' has a group named 'rest'") as err:
    cube_env.build_cube(df.assign(sex=df["sex"].replace({"M": "rest"})), SMALL_SCHEMA)
  assert err.value.column == "sex"
  renamed = df.assign(site=df["site"].replace({"s1": "rest"}))
  assert "rest" in cube_env.build_cube(renamed, SMALL_SCHEMA).meta.categories[1]


def test_a_binned_columns_note_says_how_many_bins_ties_left():
  """60% zeros: three of the four quantile bins' edges are 0, so two bins are made; the note said "4 quantile bins"
  (a statistics audit)."""
  df = make_small_df(n=1000)
  df["bmi"] = np.where(np.arange(1000) % 5 < 3, 0.0, np.arange(1000) % 37 + 1.0)
  note = next(line for line in cube_env.build_cube(df, SMALL_SCHEMA).meta.summary if "binned 'bmi'" in line)
  assert note.startswith("binned 'bmi' (2 bins, not 4: quantile edges coincide where values tie): [")
  assert "binned 'bmi' (4 quantile bins)" in " ".join(
    cube_env.build_cube(make_small_df(n=1000), SMALL_SCHEMA).meta.summary
  )


def test_durations_are_minutes_and_date_times_are_no_measure():
  """A timedelta measure was read as microseconds and a date-time one as a count, both unnoted (an API audit): a
  duration is read in minutes, with a note; a date-time measure is refused naming its column. A list-valued column
  the schema does not use is named too (the row split hashes every column)."""
  df = make_small_df(n=400)
  df["los"] = pd.to_timedelta(df["los"] * 60.0, unit="min")  # hours as durations
  cube = cube_env.build_cube(df, SMALL_SCHEMA)
  assert "measure 'los': durations read in minutes" in cube.meta.summary
  values, _ = ingest.measure_numbers(df["los"], "los")
  np.testing.assert_allclose(values, make_small_df(n=400)["los"] * 60.0, rtol=1e-9)  # NaT stays missing
  arrow = df["los"].astype(pd.ArrowDtype(pa.duration("us")))  # Arrow's durations read all NaN, unnoted (a review)
  np.testing.assert_allclose(ingest.measure_numbers(arrow, "los")[0], values, rtol=1e-6)  # microseconds
  stamps = make_small_df(n=400).assign(los=pd.Timestamp("2024-01-01", tz="UTC"))
  with pytest.raises(ingest.ColumnError, match="measure column 'los' holds dates and times, not numbers"):
    cube_env.build_cube(stamps, SMALL_SCHEMA)
  with pytest.raises(ingest.ColumnError, match=r"column 'notes' holds lists"):
    cube_env.split_rows(make_small_df(n=400).assign(notes=[["x"]] * 400), seed=0)


def test_settings_that_would_be_read_letter_by_letter_are_refused(small_cube):
  """`adjust='procedure'` was read as the columns 'p', 'r', ...; `cohort_stats(cube, 'site=a')` failed inside dict()
  (an API audit): each is now an error naming the argument; max_depth is bounded (an int32 in the environment)."""
  for name in ("adjust", "favorable"):
    with pytest.raises(ValueError, match=f"{name} must be a list of column names, got the string 'los'"):
      cube_env.DiscoveryConfig(**{name: "los"})
  with pytest.raises(ValueError, match="max_depth must be at most 64, got 65"):
    cube_env.DiscoveryConfig(max_depth=65)
  # Settings of the wrong type name their field (they raised TypeError, or ran: max_depth 2.5 searched depth 3).
  for name, value, what in (
    ("min_group", "11", "a number"),
    ("max_depth", 2.5, "a whole number"),
    ("q", None, "a number"),
  ):
    with pytest.raises(ValueError, match=f"{name} must be {what}, got {value!r}"):
      cube_env.DiscoveryConfig(**{name: value})
  with pytest.raises(ValueError, match="min_group must be a finite number, got nan"):
    cube_env.DiscoveryConfig(min_group=float("nan"))
  with pytest.raises(ValueError, match="time_limit must be a positive number of seconds or None, got inf"):
    cube_env.DiscoveryConfig(time_limit=float("inf"))  # was taken as no limit (an audit): None says that
  with pytest.raises(ValueError, match="pooled_check must be True or False, got 'no'"):
    cube_env.DiscoveryConfig(pooled_check="no")
  config = cube_env.DiscoveryConfig(budget=np.int64(20), q=np.float32(0.25))  # NumPy scalars: Python numbers
  assert type(config.budget) is int and config.budget == 20 and type(config.q) is float and config.q == 0.25
  with pytest.raises(ValueError, match=r"filters must be a mapping \{column: category label\}, got str 'proc=A'"):
    cube_env.cohort_stats(small_cube, "proc=A")


def _delta_table(n: int = 4000) -> pd.DataFrame:
  """A change score (values below 0: the linear scale) with a gap for race B in proc Hip (an audit's table)."""
  rng = np.random.default_rng(0)
  df = pd.DataFrame(
    {
      "site": rng.choice(list("ABCD"), n),
      "proc": rng.choice(["Hip", "Knee", "CABG"], n),
      "race": rng.choice(["W", "B", "A"], n, p=[0.6, 0.3, 0.1]),
      "delta": np.round(rng.normal(-1.0, 1.0, n), 2),
    }
  )
  df.loc[(df.race == "B") & (df.proc == "Hip"), "delta"] -= 0.8
  return df


def test_one_extreme_value_leaves_the_cohorts_without_it_as_they_were():
  """One 99999999 in a CABG row moved the shift (the mean) to about 25,000: the float32 sums of every cohort lost
  their spread, and proc=Hip's gap for race B (exact Welch z -8) was no longer found; a 1e20 gave a false finding
  at |z| 40. The sums are taken about the median where extreme values pull the mean away (`measure_shift`), so a
  cohort without the value tests as in the clean table; a value whose square overflows float32 is refused."""
  schema = cube_env.Schema(dimensions=("site", "proc"), protected=("race",), measures=("delta",))
  clean = _delta_table()
  dirty = clean.copy()
  dirty.loc[dirty.index[dirty.proc == "CABG"][0], "delta"] = 99999999.0
  values = dirty[["delta"]].to_numpy(float)
  assert ingest.measure_shift(values)[0] == np.median(values) and np.nanmean(values) > 24000
  plain = clean[["delta"]].to_numpy(float)
  assert ingest.measure_shift(plain).tobytes() == np.nanmean(plain, axis=0).tobytes()  # no extreme value: the mean
  rows = []
  for df in (clean, dirty):
    cube = cube_env.build_cube(df, schema)
    table = cube_env.cohort_table(cube, [cube_env.filters_to_codes(cube.meta, {"proc": "Hip"})], z_screen=4.0)
    rows.append(table[table.group == "B"].iloc[0])
  hip = clean[clean.proc == "Hip"]
  t = scipy_stats.ttest_ind(hip.delta[hip.race == "B"], hip.delta[hip.race != "B"], equal_var=False)
  assert rows[0].z == pytest.approx(scipy_stats.norm.isf(t.pvalue / 2) * np.sign(t.statistic), rel=1e-3)
  assert rows[1].z == pytest.approx(rows[0].z, rel=1e-4) and rows[1].mean_group == pytest.approx(rows[0].mean_group)
  assert rows[0].mean_group < rows[0].mean_rest < 0 and rows[0].ratio is None  # no ratio of means below 0 (1.55 was)
  dirty.loc[dirty.index[dirty.race == "W"][:2], "delta"] = 1e20
  with pytest.raises(ingest.ColumnError) as err:
    cube_env.build_cube(dirty, schema)
  assert err.value.column == "delta" and str(err.value) == (
    "measure column 'delta': fewer than 11 rows hold values such as 1e+20, more than 1e+15 from its median on its "
    "test scale, whose squares overflow the cube's float32 sums: fix them or recode them as missing"
  )


def test_codes_with_leading_zeros_keep_them(tmp_path):
  """ZIP codes '02139' were read as the number 2139, and cohorts said 'zip=2139' (an audit): a column of whole
  numbers written with a leading zero is read as its text, with a note; other whole-number columns stay numbers."""
  path = tmp_path / "zips.csv"
  path.write_text("zip,asa,race,los\n02139,1,A,2.5\n01002,2,B,3.0\n,3,A,4.5\n10001,2,B,1.0\n")
  df = cube_env.read_table(path)
  assert df["zip"].tolist() == ["02139", "01002", None, "10001"] and df["asa"].tolist() == [1, 2, 3, 2]
  assert df.attrs[ingest.READ_NOTES] == ("column 'zip' read as text: values such as '02139' keep their leading zeros",)
  assert ingest.read_csv(path.read_bytes(), name="upload")["zip"].tolist() == df["zip"].tolist()  # the service's
  # With a spreadsheet's ',,,' lines too, or R's 'NA,NA,NA' (reviews: the zeros were lost without a note).
  text = path.read_text()
  for empty in (",,,\n,,,\n", "NA,NA,NA,NA\n"):
    path.write_text(text + empty)
    df = cube_env.read_table(path)
    assert df["zip"].tolist() == ["02139", "01002", None, "10001"] and df["asa"].tolist() == [1, 2, 3, 2], empty
  # A number written once with a zero ('07' among ages 37 and 63) is no code: it stays a number, so bins hold.
  path.write_text("age,race\n07,A\n37,B\n63,A\n82,B\n")
  df = cube_env.read_table(path)
  assert df["age"].tolist() == [7, 37, 63, 82] and ingest.READ_NOTES not in df.attrs


def test_numbers_written_with_leading_zeros_are_numbers_where_the_schema_says_so(tmp_path):
  """Minutes written '045' were noted "read as text ... keep their leading zeros" though the measure read them as
  numbers, and an age column read as text ('007', or 'unknown' among ages) left its given bin edges unused and
  became categories, without a word (an audit): a measure or a column given bin edges reads numbers, noted as such,
  and text among them is refused naming the column."""
  rng = np.random.default_rng(0)
  n = 400
  ages = rng.integers(1, 99, n)
  minutes = rng.integers(20, 400, n)
  frame = pd.DataFrame({"proc": rng.choice(["A", "B"], n), "race": rng.choice(["W", "B"], n)})
  frame["age"] = [f"{a:03d}" for a in ages]
  frame["minutes"] = [f"{m:03d}" for m in minutes]
  path = tmp_path / "zeros.csv"
  frame.to_csv(path, index=False)
  schema = cube_env.Schema(
    dimensions=["proc", "age"], protected=["race"], measures=["minutes"], bins={"age": [0, 18, 65, 99]}
  )
  df = cube_env.read_table(path)
  assert df["age"].iloc[0] == frame["age"].iloc[0] and df["minutes"].iloc[0] == frame["minutes"].iloc[0]
  codes, values, meta = cube_env.encode_table(df, schema)
  np.testing.assert_array_equal(values[:, 0], minutes)
  assert set(meta.categories[1]) == {"[0, 18)", "[18, 65)", "[65, 99]"}
  label = np.asarray(meta.categories[1], dtype=object)[codes[:, 1]]
  np.testing.assert_array_equal(label == "[18, 65)", (ages >= 18) & (ages < 65))
  zero_age = frame["age"][frame["age"].str.startswith("0")].iloc[0]
  zero_minutes = frame["minutes"][frame["minutes"].str.startswith("0")].iloc[0]
  assert [n for n in meta.summary if "leading zeros" in n] == [
    f"column given bin edges 'age': numbers written with leading zeros (such as {zero_age!r}) read as numbers",
    f"measure 'minutes': numbers written with leading zeros (such as {zero_minutes!r}) read as numbers",
  ]
  frame.loc[5, "age"] = "unknown"
  frame.to_csv(path, index=False)
  with pytest.raises(
    ingest.ColumnError, match="dimension 'age' is given bin edges but holds text that is not a number \\('unknown'\\)"
  ) as err:
    cube_env.encode_table(cube_env.read_table(path), schema)
  assert err.value.column == "age"
  # As a measure's text: spaces alone are missing, '1,020' is 1020 (a review: both were refused), each noted.
  frame.loc[5, "age"], frame.loc[6, "age"] = "   ", "1,020"
  codes, _, meta = cube_env.encode_table(frame, dataclasses.replace(schema, bins={"age": [0, 18, 65, 2000]}))
  label = np.asarray([*meta.categories[1]], dtype=object)[codes[:, 1]]
  assert label[5] == cube_env.MISSING and label[6] == "[65, 2000]"
  assert "dimension 'age': fewer than 11 rows blank but for spaces read as missing" in meta.summary
  assert "dimension 'age': numbers with thousands separators read without them (e.g. '1,020')" in meta.summary


def test_a_flag_with_a_stray_value_says_it_is_not_tested_as_a_rate(small_df):
  """A 0/1 flag with one 2 became a count measure (a mean of counts, Welch's test) without a word (an audit)."""
  flag = (np.arange(len(small_df)) % 3 == 0).astype(float)
  flag[3] = 2.0
  meta = cube_env.build_cube(small_df.assign(flag=flag), _measure_schema("flag")).meta
  assert meta.is_binary == (False,) and meta.is_count == (True,)
  assert (
    "warning: measure 'flag' reads as 0/1 but for fewer than 11 rows (e.g. 2), so it is not tested as a rate: if it "
    "is a yes/no flag, recode those values as missing, 0 or 1" in meta.summary
  )


def test_exports_that_read_wrong_without_a_word_are_noted(tmp_path):
  """A CSV audit's exports: a stray quote that swallows whole rows into a comment (a warning naming its line, even
  where the comment is no column the run reads); 'None' and 'NA' read as missing (noted by word and column); SAS's
  '.' in a category (a warning); a report's title above the header (named as such); German thousands points in a
  ';' file (a warning)."""
  path = tmp_path / "x.csv"
  rows = [f"x{i},y{i % 2},{i},ok\n" for i in range(30)]
  rows[5], rows[9] = 'x5,y1,5,"pt said ok\n', 'x9,y1,9,fine"\n'
  path.write_text("a,b,c,notes\n" + "".join(rows))
  df = cube_env.read_table(path)
  assert len(df) == 26 and df.attrs["coding_notes"][-1] == (
    "warning: the quoted value on lines 7 to 11 holds fewer than 11 rows of the file (as many fields as the header, "
    "numbers where it has numbers): a '\"' opened by mistake on line 7 joins them into one row, and their cases are "
    "lost (check the file there)"
  )
  # Meant line breaks: none, or a comment line with as many commas as the header but no number where 'c' has one
  # (a review's false alarm).
  for comment in ('"pt said\nok"', '"BP 150/90, HR 90\nseen by Dr A, ward 3, bed 2"'):
    rows[5], rows[9] = f"x5,y1,5,{comment}\n", "x9,y1,9,fine\n"
    path.write_text("a,b,c,notes\n" + "".join(rows))
    assert not [n for n in cube_env.read_table(path).attrs["coding_notes"] if n.startswith("warning")]
  # R's 'NA' is not noted; ' None' with a space is text to pandas, not noted as missing (a review).
  payers = ["None", "Medicare", "", "NA", " None"] * 20 + ["Private"] * 20
  path.write_text("a,payer,c\n" + "".join(f"x{i},{p},{i}\n" for i, p in enumerate(payers)))
  df = cube_env.read_table(path)
  note = (
    "cells written 'None' in 'payer' (20 rows) are read as empty (the table reader's rule), so coded 'MISSING': where "
    "'None' is a value of its own (a payer 'None': no insurance), replace it by a word such as 'Uninsured'"
  )
  assert df["payer"].isna().sum() == 60 and df.attrs["coding_notes"] == (note,)
  reads_payer = cube_env.Schema(dimensions=["a"], protected=["payer"], measures=["c"])  # then a warning (an audit)
  assert "warning: " + note in cube_env.build_cube(df, reads_payer).meta.summary
  rng = np.random.default_rng(0)
  sas = pd.DataFrame({"p": rng.choice(["a", "b"], 300), "race": ["1", "2", "."] * 100, "m": rng.normal(size=300)})
  notes = cube_env.build_cube(sas, cube_env.Schema(dimensions=["p"], protected=["race"], measures=["m"])).meta.summary
  assert notes == (
    "warning: protected column 'race' has the value '.' in 100 rows, which SAS writes for a missing value: it is a "
    "group of its own; blank those cells to code them 'MISSING'",
  )
  path.write_text("Surgical Case Report\nRun: 2026-12-01 08:00\n\na,b,c\n" + "".join(f"x,y,{i}\n" for i in range(9)))
  with pytest.raises(
    ValueError,
    match=re.escape(
      "the header (line 1) has one name, 'Surgical Case Report', and line 4 "
      "has 3 fields: is that line a title above the column names (remove the lines above the header), or does a value "
      "hold an unquoted separator?"
    ),
  ):
    cube_env.read_table(path)
  costs = [int(v) for v in rng.integers(200, 20_000, 100)]
  german = "".join(f"x{i};y{i % 2};{v:,}\n".replace(",", ".") for i, v in enumerate(costs))
  path.write_text("a;b;cost\n" + german)
  df = cube_env.read_table(path)
  np.testing.assert_allclose(df["cost"], [v / 1000 if v >= 1000 else v for v in costs])  # read as they are
  assert df.attrs["coding_notes"][-1].startswith(
    "warning: column 'cost': every value with a '.' has groups of three digits after it (such as '"
  ) and df.attrs["coding_notes"][-1].endswith("): if so, remove them")
  for decimals in (f"{v / 1000:.2f}" for v in costs), (f"{70 + v / 1000:.3f}" for v in costs):  # '70.137' (a review)
    path.write_text("a;b;lab\n" + "".join(f"x{i};y{i % 2};{d}\n" for i, d in enumerate(decimals)))
    assert not [n for n in cube_env.read_table(path).attrs["coding_notes"] if n.startswith("warning")]
  # R's write.csv and pandas' to_csv number the rows in a column without a name: left out, so the split is the one
  # of the same cases written without it.
  cases = pd.DataFrame({"site": ["a", "b", "c"] * 10, "minutes": np.arange(30.0)})
  for start, text in ((0, cases.to_csv()), (1, '"",' + cases.rename(index=lambda i: i + 1).to_csv()[1:])):
    path.write_text(text)
    numbered = cube_env.read_table(path)
    pd.testing.assert_frame_equal(numbered, cases, check_like=True)
    assert numbered.attrs["coding_notes"] == (
      "a column without a name that numbers the rows left out (the row index R's write.csv and pandas' to_csv write)",
    ), start
  path.write_text(cases.drop(index=[5, 6]).to_csv())  # rows lost on the way: its numbers skip them (an audit)
  assert list(cube_env.read_table(path).columns) == ["site", "minutes"]
  # A stray quote that closes at a meant one shifts every quote after it: the bad row's message names the last row
  # that ran on inside quotes before it (an analyst's audit: the line named was inside a correct comment).
  lines = ["a,b,c,notes\n"] + [f"x{i},y{i % 2},{i},ok\n" for i in range(40)]
  lines[6], lines[20] = 'x5,y1,5,"pt said ok\n', 'x19,y1,19,"real\ncomment"\n'
  path.write_text("".join(lines))
  with pytest.raises(ValueError) as err:
    cube_env.read_table(path)
  assert str(err.value).endswith(
    "The last row before it that runs on inside quotes starts on line 7: if a '\"' there was opened by mistake, every "
    "quote after it is shifted."
  )


def _table(n=600, seed=0, **columns):
  rng = np.random.default_rng(seed)
  df = pd.DataFrame(
    {
      "site": rng.choice(["a", "b", "c"], n),
      "race": rng.choice(["W", "B"], n),
      "minutes": rng.lognormal(4, 0.5, n),
    }
  )
  return df.assign(**columns)


SITE_RACE = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["minutes"])


def test_a_two_valued_measure_is_not_put_on_the_log_scale_and_is_warned_of():
  """An ingest audit: yes/no coded 1/2 (skewed, all > 0) was tested on the log scale, unremarked; it is a mean on its
  own scale now, with a warning that names the recoding; z is then the 0/1 coding's."""
  rng = np.random.default_rng(1)
  event = (rng.random(4000) < 0.1).astype(float)
  coded = _table(4000, outcome=1.0 + event, flag=event)
  schema = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["outcome", "flag"])
  cube = cube_env.build_cube(coded, schema)
  assert cube.meta.is_log == (False, False) and cube.meta.is_binary == (False, True)
  assert (
    "warning: measure 'outcome' takes two values only (1 and 2), so it is tested as a mean on its own scale, not as "
    "a rate: if it is a yes/no outcome, recode it as 0/1 (1 the event) or yes/no"
  ) in cube.meta.summary
  stats = cube_env.cohort_stats(cube, {}, z_screen=0.01).set_index(["group", "measure"])
  assert stats.loc[("B", "outcome"), "z"] == pytest.approx(stats.loc[("B", "flag"), "z"], rel=1e-3)
  assert not any("'flag'" in s and "two values" in s for s in cube.meta.summary)  # 0/1 is a rate, no warning


def test_a_measure_too_narrow_for_float32_is_refused_naming_it():
  """An ingest audit: a null measure in units of 1e-20 had every side's variance underflow float32, 60 findings at
  |z| 40; refused now, naming the column (1e-12 units still fine)."""
  base = _table(2000)
  ok = cube_env.build_cube(base.assign(minutes=base.minutes * 1e-12), SITE_RACE)
  assert ok.meta.is_log == (True,)
  linear = cube_env.Schema(dimensions=["site"], protected=["race"], measures=["minutes"], log_scale={"minutes": False})
  with pytest.raises(ingest.ColumnError, match=r"measure column 'minutes' varies by about .*under 1e-15") as err:
    cube_env.build_cube(base.assign(minutes=base.minutes * 1e-20), linear)
  assert err.value.column == "minutes"


def test_a_parquet_file_arrow_cannot_read_or_without_rows_is_named(tmp_path):
  good = tmp_path / "good.parquet"
  _table(20).to_parquet(good)
  for name, data in (("garbage.parquet", b"not parquet at all" * 10), ("cut.parquet", good.read_bytes()[:200])):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ingest.TableFileError, match=rf"^data file '.*{name}': not a readable Parquet table \("):
      cube_env.read_table(tmp_path / name)
  _table(20).iloc[:0].to_parquet(tmp_path / "empty.parquet")
  with pytest.raises(ingest.TableFileError, match=r"^data file '.*empty.parquet': has columns but no rows$"):
    cube_env.read_table(tmp_path / "empty.parquet")


def test_the_cubes_own_labels_in_a_table_are_kept_or_joined_and_said():
  """An ingest audit: a race column's value 'OTHER' (common in health records) was refused outright; 'Missing' beside
  the cube's 'MISSING' made two groups unremarked."""
  n = 600
  race = np.array(["W", "B", "OTHER"] * (n // 3), object)
  cube = cube_env.build_cube(_table(n, race=race), SITE_RACE)
  assert set(cube.meta.categories[1]) == {"W", "B", "OTHER"}  # no folding, no missing: a category like any other
  # The table's 'MISSING' with empty cells: one group, said.
  race = race.copy()
  race[:30] = "MISSING"
  race[30:45] = None
  cube = cube_env.build_cube(_table(n, race=race), SITE_RACE)
  assert cube.meta.categories[1][-1] == cube_env.MISSING and cube.meta.categories[1].count(cube_env.MISSING) == 1
  assert "'race': 30 rows hold the value 'MISSING', coded with its 15 missing values as 'MISSING'" in cube.meta.summary
  assert "'race': 45 missing values coded as 'MISSING'" in cube.meta.summary
  # The table's 'OTHER' takes the folded values in; 'Other' and 'Missing' are warned of.
  labels = np.array(["W"] * 300 + ["B"] * 150 + ["OTHER"] * 90 + ["x", "y", "z"] * 20, object)
  cube = cube_env.build_cube(_table(n, race=labels), SITE_RACE, max_categories=3)
  assert cube.meta.categories[1] == ("W", "B", "OTHER")
  assert cube.meta.summary[0].startswith(
    "folded 3 rare values of 'race' (150 rows) into 'OTHER' (with the table's own 'OTHER'); as a protected column"
  )
  labels = np.where(labels == "OTHER", "Other", labels)
  labels[:15] = None
  labels[15:40] = "Missing"  # 25 rows: kept with 'Other' (90), the 3 x 20 folded
  summary = cube_env.build_cube(_table(n, race=labels), SITE_RACE, max_categories=5).meta.summary
  assert (
    "warning: protected column 'race' has values that differ only in capitals from the cube's own labels ('Missing' "
    "and 'MISSING'; 'Other' and 'OTHER'), kept apart: recode them if they mean the same"
  ) in summary


def test_a_value_spelled_with_a_combining_accent_is_the_composed_one():
  """An ingest audit: 'José' composed and 'Jose' + U+0301 were two groups printed alike."""
  names = np.array(["Jos\u00e9", "Jose\u0301", "Ana"] * 200, object)
  cube = cube_env.build_cube(_table(600, race=names), SITE_RACE)
  assert cube.meta.categories[1] == ("Jos\u00e9", "Ana")
  assert cube.meta.code("race", "Jose\u0301") == cube.meta.code("race", " Jos\u00e9 ") == 0  # as ingest reads it
  assert (
    "'race': 200 rows with letters written as a letter and a combining mark read in the composed form "
    "(e.g. 'Jose\\u0301' as 'Jos\\xe9')"
  ) in cube.meta.summary


@pytest.mark.parametrize(
  "bins, message",
  [
    ("0,50,100", r"Schema.bins\['x'\] must be a list of numbers \(bin edges\), got '0,50,100'"),
    ([0, "50", 100], r"Schema.bins\['x'\] must hold numbers only, got \[0, '50', 100\]"),
    ([0, float("nan"), 100], r"Schema.bins\['x'\] must hold at least two numbers, none NaN"),
    ([0], r"Schema.bins\['x'\] must hold at least two numbers, none NaN, got \[0\]"),
    ([0, 50, 50, 100], r"Schema.bins\['x'\] must not repeat an edge"),
  ],
)
def test_bin_edges_are_checked_naming_the_column(bins, message):
  with pytest.raises(ValueError, match=message):
    cube_env.Schema(dimensions=["x"], protected=["race"], measures=["minutes"], bins={"x": bins})
  # Open outer edges and edges in any order are taken, as before (a review).
  schema = cube_env.Schema(
    dimensions=["x"], protected=["race"], measures=["minutes"], bins={"x": [65, float("-inf"), 18, float("inf")]}
  )
  assert schema.bins == {"x": (float("-inf"), 18.0, 65.0, float("inf"))}
  assert cube_env.Schema(dimensions=["x"], protected=["race"], measures=["m"], log_scale={"m": np.True_}).log_scale


def test_log_scale_and_n_bins_are_checked():
  with pytest.raises(ValueError, match=r"Schema.log_scale\['minutes'\] must be True or False, got 'false'"):
    cube_env.Schema(dimensions=["site"], protected=["race"], measures=["minutes"], log_scale={"minutes": "false"})
  for bad in (0, 1, -3, 2.5, True):
    with pytest.raises(ValueError, match=rf"n_bins must be a whole number >= 2 .*got {bad!r}"):
      cube_env.build_cube(_table(), SITE_RACE, n_bins=bad)


def test_a_measure_in_fewer_than_11_rows_and_infinite_dimension_values_are_refused_plainly():
  """An ingest audit: a measure with 5 values in 600 rows was taken (no statistic of it could ever be shown) while
  the message for one value said "fewer than 11"."""
  few = _table(600, minutes=[5.0, 6.0, 7.0, 8.0, 9.0] + [np.nan] * 595)
  with pytest.raises(ValueError, match=r"^measure column 'minutes' has almost no values \(fewer than 11 non-missing"):
    cube_env.build_cube(few, SITE_RACE)
  eleven = np.where(np.arange(600) < 11, np.arange(600.0) + 1.0, np.nan)
  assert cube_env.build_cube(_table(600, minutes=eleven), SITE_RACE).meta.measure_names == ("minutes",)  # 11: taken
  # A numeric dimension with few values and an infinite one: refused, not a category 'inf' (an ingest audit).
  asa = _table(60, asa=[1.0, 2.0, np.inf] * 20)
  schema = cube_env.Schema(dimensions=["asa"], protected=["race"], measures=["minutes"])
  with pytest.raises(ValueError, match=r"column 'asa': infinite values in a numeric dimension"):
    cube_env.build_cube(asa, schema)


def test_an_adjuster_not_in_the_table_gets_the_near_names():
  df = _table(200, asa=[1, 2] * 100)
  with pytest.raises(ValueError, match=r"adjuster column 'ASA' is not in the table \(did you mean 'asa'\?\)"):
    cube_env.discover(df, SITE_RACE, method="greedy", budget=5, adjust=("ASA",))
  with pytest.raises(ValueError, match=r"adjuster column 'ASA' is not in the table \(did you mean 'asa'\?\)"):
    adjust.adjuster_levels(df, ["ASA"])


def test_a_mostly_folded_column_gives_no_share_that_the_table_rows_turn_into_a_count():
  """A disclosure audit: '93% of its rows are in OTHER' beside the table's 86 rows gave back OTHER's 80 rows, and so
  the 6 rows of the two surgeons kept."""
  surgeon = ["S_a"] * 3 + ["S_b"] * 3 + [f"s{i}" for i in range(40) for _ in range(2)]
  df = _table(86, surgeon=surgeon)
  schema = cube_env.Schema(dimensions=["site", "surgeon"], protected=["race"], measures=["minutes"])
  notes = [s for s in cube_env.build_cube(df, schema, max_categories=3).meta.summary if "folded" in s]
  assert notes == [
    "folded 40 rare values of 'surgeon' (80 rows) into 'OTHER'; more than half of its rows are in 'OTHER': raise "
    "max_categories (--max-categories) or drop the column"
  ]


def _labels(coded, f: int) -> np.ndarray:
  """[rows] the label of each row's code in filter column `f` of `encode_table`'s (codes, values, meta)."""
  codes, _, meta = coded
  return np.asarray(meta.categories[f], dtype=object)[codes[:, f]]


AGE = cube_env.Schema(dimensions=["site", "age"], protected=["race"], measures=["minutes"])


def test_a_dimension_of_numbers_written_as_text_is_binned_with_its_other_values_kept_apart(tmp_path):
  """An ingest audit: ages with HIPAA's top code '90+' or a few 'unknown', and charges written '12,345', were coded
  one category per value (11 and OTHER, most rows in OTHER), where the same numbers held as numbers are binned. Mostly
  numbers with few other values: binned as the numbers alone would be, each other value a category of its own, named
  in a note; codes (ZIP codes with leading zeros, '1.1' beside '1.10') and too many other values stay categories."""
  rng = np.random.default_rng(5)
  ages = rng.integers(18, 90, 600)
  text = ages.astype(str).astype(object)
  text[:20], text[20:23], text[23:25], text[25:27] = "90+", "unknown", "  ", None
  coded = cube_env.encode_table(_table(600, age=text), AGE)
  # The numbers are cut as the column of numbers without those values is; the other values are categories.
  numbers = cube_env.encode_table(_table(600, age=np.where(np.arange(600) < 27, np.nan, ages)), AGE)
  np.testing.assert_array_equal(_labels(coded, 1)[27:], _labels(numbers, 1)[27:])
  assert list(_labels(coded, 1)[:27]) == ["90+"] * 20 + ["unknown"] * 3 + ["MISSING"] * 4
  assert set(coded[2].categories[1]) == set(numbers[2].categories[1]) | {"90+", "unknown"}
  assert (
    "dimension 'age': numbers written as text, binned; its values that are not numbers ('90+', 'unknown') kept as "
    "categories of their own"
  ) in coded[2].summary
  assert not any("folded" in note for note in coded[2].summary)
  # Numbers with thousands separators from a CSV (pandas reads them as text), or in a Parquet file's text, read as
  # the numbers they are; a Parquet text column of plain numbers was stored as text on purpose (codes): categories.
  charges = rng.integers(500, 90_000, 600)
  _table(600, age=[f"{x:,}" for x in charges]).to_csv(tmp_path / "charges.csv", index=False)
  _table(600, age=[f"{x:,}" for x in charges]).to_parquet(tmp_path / "charges.parquet")
  want = _labels(cube_env.encode_table(_table(600, age=charges), AGE), 1)
  example = f"{charges[charges >= 1000][0]:,}"  # the first written with a separator
  for name in ("charges.csv", "charges.parquet"):
    got = cube_env.encode_table(cube_env.read_table(tmp_path / name), AGE)
    np.testing.assert_array_equal(_labels(got, 1), want)
    assert "dimension 'age': numbers written as text, binned" in got[2].summary
    grouped = [note for note in got[2].summary if "thousands separators" in note]
    assert grouped == [f"dimension 'age': numbers with thousands separators read without them (e.g. {example!r})"]
  _table(600, age=charges.astype(str)).to_parquet(tmp_path / "codes.parquet")
  codes = cube_env.encode_table(cube_env.read_table(tmp_path / "codes.parquet"), AGE)[2]
  assert "OTHER" in codes.categories[1] and not any("binned 'age'" in note for note in codes.summary)
  # Codes stay categories: ZIP codes (one width, leading zeros) among 'unknown', and two texts of one number.
  zips = np.asarray([f"{z:05d}" for z in rng.integers(1_000, 99_999, 600)], dtype=object)
  zips[:5] = "unknown"
  sections = np.asarray(["1.1", "1.10", "2.5"] * 150 + [str(i) for i in range(150)], dtype=object)
  for written in (zips, sections):
    meta = cube_env.encode_table(_table(600, age=written), AGE)[2]
    assert "OTHER" in meta.categories[1] and not any("binned 'age'" in note for note in meta.summary)

  # At most max_categories - n_bins other values (12 - 4): the bins and they fit as categories; one more does not.
  def code(others):
    summary = []
    values = np.concatenate([ages[: 600 - len(others) * 5].astype(str), np.repeat(others, 5)]).astype(object)
    _, labels = ingest._code_column(pd.Series(values), "age", edges=None, n_bins=4, max_categories=12, summary=summary)
    return labels, summary

  labels, _ = code([f"code {i}" for i in range(8)])
  assert len(labels) == 12 and {f"code {i}" for i in range(8)} <= set(labels)
  labels, summary = code([f"code {i}" for i in range(9)])
  assert "OTHER" in labels
  assert summary[0] == (
    "dimension 'age': mostly numbers written as text, but more of its values are not numbers ('code 0', 'code 1', "
    "'code 2', 'code 3', 'code 4', ...) than fit as categories beside its 4 bins: kept as categories; recode those "
    "values as missing (an empty cell) to bin its numbers"
  )
  # Numbers in fewer than half the rows with a value: a column of words with some numbers, as before.
  words = np.where(np.arange(600) < 310, "none", ages.astype(str)).astype(object)
  assert "none" in cube_env.encode_table(_table(600, age=words), AGE)[2].categories[1]


def test_a_duration_or_decimal_dimension_is_binned_as_numbers(tmp_path):
  """An ingest audit: a Parquet duration (timedelta) and a Parquet DECIMAL (read as decimal.Decimal objects) were
  coded one category per value. A duration is read in minutes, as a measure's is (noted); a decimal as a number."""
  rng = np.random.default_rng(6)
  hours, bmi = rng.integers(1, 400, 600), rng.normal(28, 5, 600).round(1)
  schema = cube_env.Schema(dimensions=["site", "los", "bmi"], protected=["race"], measures=["minutes"])
  frame = _table(600, los=pd.to_timedelta(hours, unit="h"), bmi=[decimal.Decimal(f"{x:.1f}") for x in bmi])
  frame.to_parquet(tmp_path / "cases.parquet")
  df = cube_env.read_table(tmp_path / "cases.parquet")
  assert df["los"].dtype.kind == "m" and isinstance(df["bmi"].iloc[0], decimal.Decimal)
  got = cube_env.encode_table(df, schema)
  want = cube_env.encode_table(_table(600, los=hours * 60.0, bmi=bmi), schema)
  for f in (1, 2):
    np.testing.assert_array_equal(_labels(got, f), _labels(want, f))
  assert "dimension 'los': durations read in minutes" in got[2].summary
  assert any(note.startswith("binned 'los' (4 quantile bins)") for note in got[2].summary)
  # A few durations are categories, in whole minutes.
  few = cube_env.encode_table(_table(600, los=pd.to_timedelta([30, 90] * 300, unit="min"), bmi=bmi), schema)[2]
  assert few.categories[1] == ("30", "90")


def test_a_parquet_files_index_columns_are_columns(tmp_path):
  """An ingest audit: a column saved as the pandas index (`df.set_index("site").to_parquet(...)`) was hidden, and
  `--dimensions site` said it was not in the table. Named index levels are columns again; an unnamed index (a
  filtered frame's row numbers) is not; a level named as a column is its copy, or refused where its values differ."""
  df = _table(60)
  path = tmp_path / "cases.parquet"
  for saved in (df.set_index("site"), df.set_index(["site", "race"]), df.set_index("site", drop=False)):
    saved.to_parquet(path)
    pd.testing.assert_frame_equal(cube_env.read_table(path), df, check_dtype=False)
  df[df.race == "W"].to_parquet(path)
  pd.testing.assert_frame_equal(cube_env.read_table(path), df[df.race == "W"].reset_index(drop=True))
  df.set_index(pd.Index(df["site"].to_numpy()[::-1], name="site")).to_parquet(path)
  with pytest.raises(ingest.TableFileError, match=r"column 'site' appears twice, as a column and as the table's"):
    cube_env.read_table(path)
  df.set_index("site").to_parquet(path)
  assert set(cube_env.build_cube(cube_env.read_table(path), SITE_RACE).meta.categories[0]) == {"a", "b", "c"}


def test_parquet_text_stored_as_bytes_reads_as_text(tmp_path):
  """An ingest audit: Parquet text stored as BINARY (no UTF8 annotation) read as bytes, and every label printed
  b'Black'. It is decoded as UTF-8; bytes that are not UTF-8 are refused naming the column, where a run codes it."""
  df = _table(60)
  path = tmp_path / "cases.parquet"
  df.assign(race=df["race"].str.encode("utf-8"), blob=[b"\xff\xfe"] * 60).to_parquet(path)
  got = cube_env.read_table(path)
  pd.testing.assert_series_equal(got["race"], df["race"], check_dtype=False)
  assert set(cube_env.build_cube(got, SITE_RACE).meta.categories[1]) == {"W", "B"}  # the blob column is not read
  given = df.assign(race=df["race"].str.encode("utf-8"))  # a frame built with bytes: the same
  assert set(cube_env.build_cube(given, SITE_RACE).meta.categories[1]) == {"W", "B"}
  blob = cube_env.Schema(dimensions=["blob"], protected=["race"], measures=["minutes"])
  with pytest.raises(ingest.ColumnError, match=r"column 'blob' holds bytes that are not UTF-8 text \(such as b'\\xff"):
    cube_env.build_cube(got, blob)


def test_a_few_dates_are_labelled_and_ordered_as_dates():
  """An ingest audit: a date dimension with few dates (categories, not binned) was labelled '2022-03-01 00:00:00'.
  Labels are written as a binned date's edges are, and ordered by date."""
  month = np.repeat(["2022-03-01", "2022-01-01", "2022-02-01"], [300, 200, 100])
  schema = cube_env.Schema(dimensions=["site", "month"], protected=["race"], measures=["minutes"])
  dates = pd.Series(pd.to_datetime(month))
  dates[5] = pd.NaT
  for when in (dates, dates.dt.tz_localize("America/Chicago")):
    coded = cube_env.encode_table(_table(600, month=when), schema)
    assert coded[2].categories[1] == ("2022-01-01", "2022-02-01", "2022-03-01", "MISSING")
    assert _labels(coded, 1)[0] == "2022-03-01" and _labels(coded, 1)[5] == "MISSING"
  timed = cube_env.encode_table(_table(600, month=dates + pd.Timedelta(minutes=90)), schema)[2]
  assert timed.categories[1][0] == "2022-01-01 01:30"


def test_a_parquet_file_named_csv_is_read_as_parquet(tmp_path):
  """An ingest audit: a Parquet file named .csv was refused as "not UTF-8 text (... Latin-1 ...)". Its bytes say it
  is Parquet (at both ends): read as such, with a note; a CSV whose header starts with 'PAR1' is still a CSV."""
  df = _table(60)
  path = tmp_path / "cases.csv"
  df.to_parquet(path)
  got = cube_env.read_table(path)
  pd.testing.assert_frame_equal(got, df)
  assert got.attrs[ingest.READ_NOTES] == (
    "the file is a Parquet table, not CSV text (it starts and ends with Parquet's 'PAR1'): read as Parquet (name it "
    ".parquet)",
  )
  assert ingest.read_csv(path.read_bytes(), name="upload").shape == df.shape
  path.write_text("PAR1,b\n1,2\n")
  assert list(cube_env.read_table(path).columns) == ["PAR1", "b"]
