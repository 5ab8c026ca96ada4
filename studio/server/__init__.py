"""Studio's server half: render jobs in the background, and the HTTP API over them (``python -m studio serve``).

    from studio.server import JobRunner, create_app
    runner = JobRunner(data_dir)                  # the journal, the queue, the workers
    app = create_app(runner, auth=None)           # FastAPI; the studio app mounts into it

- `requests` - the one request schema (pydantic models: the HTTP API's body and the runner's check), the limits.
- `runner` - `JobRunner`: submit, look up, follow, cancel; `worker` - the workers that run jobs through
  `studio.pipeline.make_video`; `retention` - expiry, clean-up and journal backups.
- `models` - `Job` and `Event` as the journal holds them, and each job's record in its folder.
- `journal` - the SQLite journal and the data folder's lock; `recovery` - ``serve --check`` / ``--recover``.
- `uploads` - uploads checked by their content; `auth` - users from a file.
- `api` - the FastAPI app: routes as routers (jobs, uploads, service), dependencies, error answers.

Importing this package stays light (no FastAPI until `create_app` is used).
"""

from .journal import (Conflict, DiskFull, Gone, NotFound, QueueFull, RequestError, ServiceError, TooLarge,
                      default_data_dir)
from .models import JOBS_DIR, OUTPUT_NAME, STATES, TERMINAL, Event, Job
from .limits import Limits, check_project_limits, check_source_limits, estimate_render_bytes
from .requests import (JobRequest, SceneRequest,
                       parse_request)
from .retention import Retention
from .runner import STEP_MODULES, JobRunner, default_classify, import_steps

__all__ = ["JobRunner", "JobRequest", "SceneRequest", "Job", "Event", "Limits", "Retention", "STATES", "TERMINAL",
           "JOBS_DIR", "OUTPUT_NAME", "ServiceError", "RequestError", "NotFound", "Conflict", "Gone", "QueueFull",
           "TooLarge", "DiskFull", "default_data_dir", "estimate_render_bytes", "parse_request",
           "check_source_limits", "check_project_limits", "default_classify", "import_steps", "STEP_MODULES",
           "create_app"]


def __getattr__(name: str):
    if name == "create_app":  # FastAPI loads only when the HTTP API is made
        from .api import create_app

        return create_app
    raise AttributeError(f"module 'studio.server' has no attribute {name!r}")
