"""Real case tables that ship inside PyPI packages, coded for discovery (docs/real_data.md).

Each loader returns `(DataFrame, Schema)`: one row per patient, the 0/1 and
numeric codes of the source mapped to readable labels, and column roles
(protected groups, cohort dimensions, measures) that suit a disparity search.

* `load_actg320()`: AIDS Clinical Trials Group study 320 (1,151 patients;
  Hammer et al. 1997, NEJM 337:725), the ARFF file that scikit-survival ships
  (`sksurv/datasets/data/actg320.arff`), read by its own
  `sksurv.datasets.load_aids`. Install with `pip install -e '.[real]'`.
* `load_actg175()`: ACTG study 175 (2,139 patients; Hammer et al. 1996, NEJM
  335:1081), the CSV that lifelines 0.30.3 ships
  (`lifelines/datasets/ACTG175.csv`; lifelines has no loader function for
  it). lifelines 0.30.1 and later require pandas < 3, so it is installed
  without its dependencies (`pip install --no-deps lifelines==0.30.3`, as
  `.ci/run` does) and never imported: the file is found through the
  package's import spec.

Nothing is downloaded: both files are read from the installed package's
directory. The optional packages are looked up when a loader is called, so
this module imports without them.
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib

import numpy as np
import pandas as pd

from cube_env.data.schema import Schema

ACTG175_RELPATH = ("datasets", "ACTG175.csv")
INSTALL_ACTG175 = "pip install --no-deps lifelines==0.30.3"
INSTALL_ACTG320 = "pip install -e '.[real]' (scikit-survival)"
AGE_EDGES = (30, 40, 50)  # age bands: <30, 30-39, 40-49, 50+


def age_band(age: pd.Series) -> pd.Series:
  """Years to the bands `<30`, `30-39`, `40-49`, `50+` (strings; missing stays missing)."""
  labels = np.array(["<30", "30-39", "40-49", "50+"], dtype=object)
  out = pd.Series(labels[np.searchsorted(AGE_EDGES, age.to_numpy(float), side="right")], index=age.index)
  return out.where(age.notna())


def _labels(series: pd.Series, mapping: dict, column: str) -> pd.Series:
  """Codes to labels; a code missing from `mapping` is an error (the source changed)."""
  keys = series.astype(str)
  mapping = {str(k): v for k, v in mapping.items()}
  unknown = sorted(set(keys) - set(mapping))
  if unknown:
    raise ValueError(f"column {column!r}: codes {unknown} are not in the codebook {sorted(mapping)}")
  return keys.map(mapping)


def actg175_csv() -> pathlib.Path:
  """Path of ACTG175.csv inside the installed lifelines package (found without importing lifelines).

  Raises:
    FileNotFoundError: lifelines is not installed, or its version does not ship the file (only 0.30.3 does).
  """
  spec = importlib.util.find_spec("lifelines")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"lifelines is not installed; ACTG175 ships in lifelines 0.30.3: {INSTALL_ACTG175}")
  for root in spec.submodule_search_locations:
    path = pathlib.Path(root).joinpath(*ACTG175_RELPATH)
    if path.is_file():
      return path
  raise FileNotFoundError(f"this lifelines has no {'/'.join(ACTG175_RELPATH)} (0.30.3 ships it): {INSTALL_ACTG175}")


def load_actg175() -> tuple[pd.DataFrame, Schema]:
  """ACTG 175: 2,139 HIV-infected adults randomized to four antiretroviral arms (codebook: R package speff2trial).

  Columns (source name in brackets):
    protected: race [race: white / non-white], gender [gender], iv_drug_use
      [drugs: history of intravenous drug use], age_band [age].
    dimensions: arm [arms: ZDV, ZDV+ddI, ZDV+ddC, ddI], symptomatic
      [symptom], antiretroviral_history [strat: naive, 1-52 weeks, >52
      weeks], hemophilia [hemo], homosexual_activity [homo], karnofsky
      [karnof: 70, 80, 90, 100].
    measures: cd4_baseline [cd40], cd4_week20 [cd420: CD4 count at 20 +- 5
      weeks], cd4_change (cd4_week20 - cd4_baseline), event [cens: 1 = CD4
      decline of at least 50%, AIDS or death], days [days to the event or
      censoring], weight_kg [wtkg].
  Also kept (no role): pidnum, age, the other source columns.
  """
  raw = pd.read_csv(actg175_csv(), index_col=0)
  yes_no = {0: "no", 1: "yes"}
  df = pd.DataFrame(
    {
      "pidnum": raw["pidnum"],
      "age": raw["age"],
      "race": _labels(raw["race"], {0: "white", 1: "non-white"}, "race"),
      "gender": _labels(raw["gender"], {0: "female", 1: "male"}, "gender"),
      "iv_drug_use": _labels(raw["drugs"], yes_no, "drugs"),
      "age_band": age_band(raw["age"]),
      "arm": _labels(raw["arms"], {0: "ZDV", 1: "ZDV+ddI", 2: "ZDV+ddC", 3: "ddI"}, "arms"),
      "symptomatic": _labels(raw["symptom"], yes_no, "symptom"),
      "antiretroviral_history": _labels(raw["strat"], {1: "naive", 2: "1-52 weeks", 3: ">52 weeks"}, "strat"),
      "hemophilia": _labels(raw["hemo"], yes_no, "hemo"),
      "homosexual_activity": _labels(raw["homo"], yes_no, "homo"),
      "karnofsky": raw["karnof"].astype(int),  # 4 values: categories "70".."100" at ingest
      "cd4_baseline": raw["cd40"].astype(float),
      "cd4_week20": raw["cd420"].astype(float),
      "cd4_change": (raw["cd420"] - raw["cd40"]).astype(float),
      "event": raw["cens"].astype(float),
      "days": raw["days"].astype(float),
      "weight_kg": raw["wtkg"].astype(float),
    }
  )
  schema = Schema(
    protected=["race", "gender", "iv_drug_use", "age_band"],
    dimensions=["arm", "symptomatic", "antiretroviral_history", "hemophilia", "homosexual_activity", "karnofsky"],
    measures=["cd4_baseline", "cd4_week20", "cd4_change", "event", "days", "weight_kg"],
  )
  return df.reset_index(drop=True), schema


def load_actg320() -> tuple[pd.DataFrame, Schema]:
  """ACTG 320: 1,151 HIV-infected adults, two or three drugs (codebook: Hosmer, Lemeshow & May 2008, via scikit-survival).

  Columns (source name in brackets):
    protected: race_ethnicity [raceth: White non-Hispanic, Black
      non-Hispanic, Hispanic, Asian/Pacific Islander, American
      Indian/Alaskan Native], sex [sex], iv_drug_use [ivdrug: never,
      currently, previously], age_band [age].
    dimensions: treatment [tx: ZDV+3TC, or with indinavir (IDV)],
      cd4_stratum [strat2: screening CD4 <= 50 or > 50], hemophilia
      [hemophil], karnofsky [karnof: 70, 80, 90, 100], prior_zdv_months
      [priorzdv, cut into quantile bins at ingest].
    measures: cd4_baseline [cd4], aids_or_death [censor: 1 = AIDS-defining
      event or death], death [censor_d], days [time: days to the AIDS event,
      death or censoring].
  Also kept (no role): age.

  Raises:
    ModuleNotFoundError: scikit-survival is not installed.
  """
  datasets = importlib.import_module("sksurv.datasets")  # optional: the `real` extra
  x, y = datasets.load_aids(endpoint="aids")
  _, y_death = datasets.load_aids(endpoint="death")
  yes_no = {0: "no", 1: "yes"}
  races = {
    1: "White non-Hispanic",
    2: "Black non-Hispanic",
    3: "Hispanic",
    4: "Asian/Pacific Islander",
    5: "American Indian/Alaskan Native",
    6: "other",
  }
  df = pd.DataFrame(
    {
      "age": x["age"].astype(float),
      "race_ethnicity": _labels(x["raceth"], races, "raceth"),
      "sex": _labels(x["sex"], {1: "male", 2: "female"}, "sex"),
      "iv_drug_use": _labels(x["ivdrug"], {1: "never", 2: "currently", 3: "previously"}, "ivdrug"),
      "age_band": age_band(x["age"]),
      "treatment": _labels(x["tx"], {0: "ZDV+3TC", 1: "with IDV"}, "tx"),
      "cd4_stratum": _labels(x["strat2"], {0: "CD4<=50", 1: "CD4>50"}, "strat2"),
      "hemophilia": _labels(x["hemophil"], yes_no, "hemophil"),
      "karnofsky": x["karnof"].astype(int),
      "prior_zdv_months": x["priorzdv"].astype(float),
      "cd4_baseline": x["cd4"].astype(float),
      "aids_or_death": y["censor"].astype(float),
      "death": y_death["censor_d"].astype(float),
      "days": y["time"].astype(float),
    }
  )
  schema = Schema(
    protected=["race_ethnicity", "sex", "iv_drug_use", "age_band"],
    dimensions=["treatment", "cd4_stratum", "hemophilia", "karnofsky", "prior_zdv_months"],
    measures=["cd4_baseline", "aids_or_death", "death", "days"],
  )
  return df.reset_index(drop=True), schema


LOADERS = {"actg175": load_actg175, "actg320": load_actg320}
