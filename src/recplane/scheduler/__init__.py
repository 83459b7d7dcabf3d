"""The scheduler: every piece of compute as a job — queues with quotas, fair admission, backends, usage ledger.

Users write :class:`JobSpec` and :class:`QueueSpec` (YAML or Python) and get :class:`Job` records back through
the Client; :class:`Scheduler` is the service behind it. The planning policy is the pure
:mod:`recplane.scheduler.admission`; backends (``local`` today) implement
:class:`~recplane.scheduler.backends.JobBackend`.
"""

from recplane.scheduler.records import Job, JobEvent, JobExplanation, QueueInfo, UsageReport, UsageRow
from recplane.scheduler.service import Scheduler
from recplane.scheduler.spec import BudgetSpec, JobSpec, QueueSpec, ResourceSpec, load_job_spec, load_queue_specs

__all__ = [
    "BudgetSpec",
    "Job",
    "JobEvent",
    "JobExplanation",
    "JobSpec",
    "QueueInfo",
    "QueueSpec",
    "ResourceSpec",
    "Scheduler",
    "UsageReport",
    "UsageRow",
    "load_job_spec",
    "load_queue_specs",
]
