"""learned, muzero, greedy and frontier against enumeration on the bundled real tables (issue 18, point 6): `python benchmarks/real_tables.py`."""

import json
import time

import cube_env
import experiments.agent  # noqa: F401 (registers the muzero method: the packaged agent)
from cube_env.data import real

for name, load in (("actg175", real.load_actg175), ("actg320", real.load_actg320)):
  df, schema = load()
  for method, budget in (
    ("exhaustive", 100_000),
    ("learned", 50),
    ("learned", 150),
    ("muzero", 50),
    ("muzero", 150),
    ("greedy", 50),
    ("greedy", 150),
    ("frontier", 150),
  ):
    t = time.perf_counter()
    run = cube_env.run_discovery(df, schema, method=method, budget=budget, max_depth=3, seed=0)
    conf = run.confirmed
    what = [f"{r.cohort} | {r.protected}={r.group} | {r.measure}" for r in conf.itertuples()] if len(conf) else []
    print(
      json.dumps(
        dict(
          table=name,
          method=method,
          budget=budget,
          queries=int(run.search.queries),
          candidates=int(len(run.search.candidates)),
          confirmed=int(len(conf)),
          findings=what,
          seconds=round(time.perf_counter() - t, 2),
        )
      ),
      flush=True,
    )
