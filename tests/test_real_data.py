"""Real tables (docs/real_data.md): ACTG 175 and ACTG 320 through ingest, discovery, confirmation and the report.

ACTG 320 comes from scikit-survival (the `real` extra); ACTG 175 is the CSV
that lifelines 0.30.3 ships, installed without its dependencies (it pins
pandas < 3). A table whose package is missing is skipped. One exhaustive
run to depth 2 per table (one compiled search each) serves every test.
"""

import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import scipy.stats

import cube_env
from cube_env.data import real
from experiments import report

COUNTS = ("cohort_rows", "n_group", "n_rest", "explore_cohort_rows", "explore_n_group", "explore_n_rest")
DEPTH = 2
BUDGET = 2000  # more than the visitable cohorts to depth 2 of either table: the search is complete
# Today's defaults, named so that the assertions below keep their meaning if a default changes.
SETTINGS = dict(
  method="exhaustive", budget=BUDGET, max_depth=DEPTH, z_screen="bonferroni", explore_fraction=0.5, seed=0
)


def _load(name):
  if name == "actg320":
    pytest.importorskip("sksurv.datasets", reason="scikit-survival is not installed: pip install -e '.[real]'")
  try:
    return real.LOADERS[name]()
  except FileNotFoundError as err:  # ACTG175.csv ships only in lifelines 0.30.3
    pytest.skip(str(err))


@pytest.fixture(scope="module", params=["actg175", "actg320"])
def table(request):  # a test may narrow the tables with parametrize("table", [...], indirect=True)
  df, schema = _load(request.param)
  return request.param, df, schema


@pytest.fixture(scope="module")
def run(table):
  _, df, schema = table
  return cube_env.run_discovery(df, schema, **SETTINGS)


def test_tables_load_with_readable_labels(table):
  name, df, schema = table
  cube = cube_env.build_cube(df, schema)
  meta = cube.meta
  assert float(cube.rows.sum()) == meta.n_rows == len(df)
  cats = dict(zip(meta.filter_names, meta.categories))
  assert cats["karnofsky"] == (("100", "90", "80", "70") if name == "actg175" else ("90", "100", "80", "70"))
  assert cats["age_band"][0] == "30-39" and set(cats["age_band"]) == {"<30", "30-39", "40-49", "50+"}
  if name == "actg175":
    assert df.shape == (2139, 18)
    assert df.gender.value_counts().to_dict() == {"male": 1771, "female": 368}
    assert df.race.value_counts().to_dict() == {"white": 1522, "non-white": 617}
    assert (df.iv_drug_use == "yes").sum() == 281 and df.event.sum() == 521
    assert cats["arm"] == ("ddI", "ZDV", "ZDV+ddC", "ZDV+ddI")  # most frequent first, ties by label
    assert not any(meta.is_log) and meta.is_binary == (False, False, False, True, False, False)
  else:
    assert df.shape == (1151, 14)
    assert df.sex.value_counts().to_dict() == {"male": 951, "female": 200}
    assert df.race_ethnicity.value_counts().to_list() == [596, 327, 203, 14, 11]
    assert df.iv_drug_use.value_counts().to_dict() == {"never": 968, "previously": 179, "currently": 4}
    assert df.aids_or_death.sum() == 96 and df.death.sum() == 26
    assert meta.is_binary == (False, True, True, False)
    assert any("binned 'prior_zdv_months' (4 quantile bins)" in line for line in meta.summary)
  # The CLI reads a CSV: the round trip keeps every dtype, so the seeded row split (a hash of the values) is the same.
  back = pd.read_csv(io.StringIO(df.to_csv(index=False)))
  assert back.dtypes.to_dict() == df.dtypes.to_dict()
  np.testing.assert_array_equal(cube_env.split_rows(back, seed=0), cube_env.split_rows(df, seed=0))


def test_exhaustive_discovery_runs_end_to_end(table, run):
  name, df, _ = table
  assert run.search.note.startswith("all ") and run.search.note.endswith(f"visitable cohorts to depth {DEPTH}")
  assert run.search.queries == len(run.search.visits) <= BUDGET
  assert run.halves.explore_rows + run.halves.confirm_rows == len(df)
  f = run.findings
  assert len(f) == len(run.search.candidates)
  ok = f[f.confirmed.astype(bool)]
  assert (ok.reason == "confirmed").all() and (ok.p_adjusted <= 0.05).all() and (ok.relative_diff.abs() >= 0.1).all()
  assert (np.sign(ok.z) == np.sign(ok.explore_z)).all()
  if name == "actg175":
    # The one effect both halves agree on at depth 2: women weigh ~12% less than men (a positive control).
    assert ok[["cohort", "protected", "group", "measure"]].values.tolist() == [
      ["(all cases)", "gender", "female", "weight_kg"]
    ]
    assert ok.relative_diff.item() == pytest.approx(-0.12, abs=0.02)
  else:
    assert len(ok) == 0  # nothing survives confirmation on ACTG 320 with the default thresholds


@pytest.mark.parametrize("table", ["actg175"], indirect=True)  # ACTG 320 confirms nothing
def test_confirmed_statistics_match_scipy_on_the_confirmation_half(table, run):
  _, df, _ = table
  row = run.confirmed.iloc[0]
  rows = df[~cube_env.split_rows(df, seed=0)]  # the confirmation half
  g, r = rows.weight_kg[rows.gender == "female"], rows.weight_kg[rows.gender != "female"]
  t, p = scipy.stats.ttest_ind(g, r, equal_var=False)
  assert (row.cohort_rows, row.n_group, row.n_rest) == (len(rows), len(g), len(r))
  assert row.mean_group == pytest.approx(g.mean(), rel=1e-4) and row.mean_rest == pytest.approx(r.mean(), rel=1e-4)
  assert row.p_value == pytest.approx(p, rel=1e-3, abs=1e-12)
  assert row.z == pytest.approx(np.sign(t) * scipy.stats.norm.isf(p / 2), abs=1e-2)
  assert row.relative_diff == pytest.approx(g.mean() / r.mean() - 1, rel=1e-3)


def test_root_statistics_match_scipy_and_small_groups_are_hidden(table, run):
  name, df, schema = table
  cube = run.halves.explore
  root = cube_env.cohort_table(cube, [[-1] * len(schema.filter_columns)], z_screen=run.search.z_screen)
  rows = df[cube_env.split_rows(df, seed=0)]  # the exploration half
  p_col = "race" if name == "actg175" else "race_ethnicity"
  group = "non-white" if name == "actg175" else "Black non-Hispanic"
  measure, event = ("cd4_week20", "event") if name == "actg175" else ("cd4_baseline", "aids_or_death")
  hit = root[(root.protected == p_col) & (root.group == group)].set_index("measure")
  in_group = rows[p_col] == group
  # Continuous: Welch's t in float64.
  t, p = scipy.stats.ttest_ind(rows[measure][in_group], rows[measure][~in_group], equal_var=False)
  assert hit.loc[measure, "n_group"] == in_group.sum() and hit.loc[measure, "n_rest"] == (~in_group).sum()
  assert hit.loc[measure, "mean_group"] == pytest.approx(rows[measure][in_group].mean(), rel=1e-4)
  assert hit.loc[measure, "p_value"] == pytest.approx(p, rel=1e-3, abs=1e-12)
  assert hit.loc[measure, "z"] == pytest.approx(np.sign(t) * scipy.stats.norm.isf(p / 2), abs=1e-2)
  # Binary: the pooled two-proportion z.
  x_g, x_r, n_g, n_r = rows[event][in_group].sum(), rows[event][~in_group].sum(), in_group.sum(), (~in_group).sum()
  pooled = (x_g + x_r) / (n_g + n_r)
  z = (x_g / n_g - x_r / n_r) / np.sqrt(pooled * (1 - pooled) * (1 / n_g + 1 / n_r))
  assert hit.loc[event, "mean_group"] == pytest.approx(x_g / n_g, rel=1e-4)
  assert hit.loc[event, "z"] == pytest.approx(z, abs=1e-3)
  # The small-cell rule on real groups: fewer than 11 rows in this half, so every number that reveals them is blank.
  small = [(c, g) for c in schema.protected for g, n in rows[c].value_counts().items() if 0 < n < cube_env.SMALL_CELL]
  if name == "actg320":  # 7, 5 and 1 rows of this half (14, 11 and 4 in the table)
    assert set(small) == {
      ("race_ethnicity", "Asian/Pacific Islander"),
      ("race_ethnicity", "American Indian/Alaskan Native"),
      ("iv_drug_use", "currently"),
    }
  for c, g in small:
    blank = root[(root.protected == c) & (root.group == g)]
    assert len(blank) == len(schema.measures) and not blank.tested.any()
    assert blank[["n_group", "n_rest", "cohort_rows", "mean_group", "mean_rest", "z", "p_value"]].isna().all().all()
  for col in ("cohort_rows", "n_group", "n_rest"):
    values = root[col].dropna().to_numpy()
    assert not ((values >= 1) & (values < cube_env.SMALL_CELL)).any(), col


def _html_count_cells(html: str) -> tuple[set[str], list[tuple[str, str]]]:
  """The count columns of the report's tables, and (column, text) of every cell in them."""
  tree = ET.fromstring(html.encode("utf-8"))  # well-formed: parses as XML
  ns = {"h": "http://www.w3.org/1999/xhtml"}
  heads, cells = set(), []
  for tab in tree.iter(f"{{{ns['h']}}}table"):
    head = ["".join(th.itertext()) for th in tab.findall("h:thead/h:tr/h:th", ns)]  # a <wbr/> splits text
    heads |= set(head) & set(COUNTS)
    for tr in tab.findall("h:tbody/h:tr", ns):
      cells += [(col, td.text) for col, td in zip(head, tr.findall("h:td", ns)) if col in COUNTS]
  return heads, cells


def _assert_no_small_events(shown: pd.DataFrame) -> None:
  """No binary test shows a side's rate whose events or non-events (rate x rows) are 1 to 10, in either half."""
  if "scale" not in shown.columns:  # no findings
    assert shown.empty
    return
  binary = shown[shown["scale"] == "binary"]
  for prefix in ("", "explore_"):
    for side in ("group", "rest"):
      n = pd.to_numeric(binary[f"{prefix}n_{side}"], errors="coerce").to_numpy(float)
      rate = pd.to_numeric(binary[f"{prefix}mean_{side}"], errors="coerce").to_numpy(float)
      for count in (np.round(n * rate), np.round(n * (1 - rate))):
        assert not ((count >= 1) & (count < cube_env.SMALL_CELL)).any(), (prefix, side)


def _check_outputs(run, out_dir, source) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
  """No count from 1 to 10 in the findings, findings.csv, findings.json or report.html; returns the CSV and HTML cells."""
  f = run.findings
  for col in COUNTS:
    values = f[col].dropna().to_numpy(float)
    assert not ((values >= 1) & (values < cube_env.SMALL_CELL)).any(), col
  paths = report.write_report(run, str(out_dir), source=source)
  found = pd.read_csv(paths["findings.csv"])
  with open(paths["findings.json"], encoding="utf-8") as fh:
    records = json.load(fh)
  assert records["summary"]["candidates"] == len(f) and records["summary"]["confirmed"] == len(run.confirmed)
  for col in COUNTS:
    assert (found[col].dropna() >= cube_env.SMALL_CELL).all(), col
    assert all(r[col] is None or r[col] >= cube_env.SMALL_CELL for r in records["findings"]), col
  for shown in (found, pd.DataFrame(records["findings"])):  # a shown rate x its rows: no small event count either
    _assert_no_small_events(shown)
  with open(paths["report.html"], encoding="utf-8") as fh:
    heads, cells = _html_count_cells(fh.read())
  assert heads == {"n_group", "n_rest"}  # the counts the report's tables show
  assert len(cells) == 2 * len(f)
  assert all(text == "-" or float(text) >= cube_env.SMALL_CELL for _, text in cells), cells
  return found, cells


def test_no_count_from_1_to_10_in_findings_or_report(table, run, tmp_path):
  _check_outputs(run, tmp_path, f"{table[0]} (real table)")


def test_small_confirmation_groups_are_blank_in_the_report(tmp_path):
  """A looser screen on ACTG 175 finds candidates whose confirmation group has fewer than 11 rows: all blank."""
  df, schema = _load("actg175")
  loose = cube_env.run_discovery(df, schema, **{**SETTINGS, "z_screen": 2.5})
  found, cells = _check_outputs(loose, tmp_path, "actg175 (real table), z_screen 2.5")
  # Blank counts are of such groups, or of tests whose counts would give a small count back by subtraction
  # (`cube_env.shown_findings`): those keep their reason.
  blank = found[found.n_group.isna() & found.reason.str.startswith("not testable")]
  assert len(blank) >= 1
  assert blank[["cohort_rows", "n_rest", "mean_group", "mean_rest", "z", "p_value"]].isna().all().all()
  assert blank.explore_n_group.min() >= cube_env.SMALL_CELL  # tested on the exploration half, too small in the other
  assert ("n_group", "-") in cells
