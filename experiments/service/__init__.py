"""Discovery as a service: an HTTP API (FastAPI) that queues resumable discovery jobs on Redis (RQ) and caches results.

Why here, in `experiments` and not in `cube_env`: a job runs `cube_env.run_discovery` with every registered method
(the `muzero` plug-in lives in `experiments.agent`) and writes the report with `experiments.report`, and the web and
queue libraries are an optional extra (`.[service]`) that the pure-JAX `cube_env` must not need. One idea per module:

* `spec`: the service's settings (`ServiceConfig`) and a job's settings (`JobSpec`, checked field by field).
* `tables`: uploads and server paths: size limit, CSV/Parquet parsing, column checks, content hash.
* `jobs`: the queue, the cache key, the job function, leases, the requeue of abandoned jobs, the worker.
* `app`: the FastAPI application (`make_app`).

`python -m experiments.serve` starts the API (or, with `--worker`, a worker); see README, *Discovery as a service*.
"""

from experiments.service.app import make_app
from experiments.service.jobs import DiscoveryWorker, cache_key, job_status, requeue_abandoned, run_job, submit
from experiments.service.spec import JobSpec, ServiceConfig, SpecError
from experiments.service.tables import TableError, read_upload

__all__ = (
  "DiscoveryWorker",
  "JobSpec",
  "ServiceConfig",
  "SpecError",
  "TableError",
  "cache_key",
  "job_status",
  "make_app",
  "read_upload",
  "requeue_abandoned",
  "run_job",
  "submit",
)
