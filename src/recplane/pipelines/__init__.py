"""Pipelines: DAGs of steps that run as scheduler jobs, cached by content, scheduled, triggered and resumable.

Users write ``@step`` functions and a :class:`Pipeline` (or the YAML form, :class:`PipelineSpec`), pass
:class:`DatasetRef` / :class:`ModelVersionRef` / :class:`RunRef` between steps, and get :class:`PipelineRun`
records back through the Client. :class:`PipelineService` is the service behind it; the loop that advances
runs is :class:`~recplane.pipelines.runner.PipelineRunner`.
"""

from recplane.pipelines.execution import StepContext
from recplane.pipelines.records import PipelineInfo, PipelineRun, StepRun
from recplane.pipelines.refs import DatasetRef, ModelVersionRef, RunRef
from recplane.pipelines.service import PipelineService
from recplane.pipelines.spec import Pipeline, PipelineSpec, StepSpec, TriggerSpec, load_pipeline, step

__all__ = [
    "DatasetRef",
    "ModelVersionRef",
    "Pipeline",
    "PipelineInfo",
    "PipelineRun",
    "PipelineService",
    "PipelineSpec",
    "RunRef",
    "StepContext",
    "StepRun",
    "StepSpec",
    "TriggerSpec",
    "load_pipeline",
    "step",
]
