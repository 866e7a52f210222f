"""The one-command pipeline: simulate homes, sync, engineer features, forecast and
plan each site's next 24 h, once or on the production schedules."""

from cloud.pipeline.runner import PipelineFailed, PipelineResult, run_continuous, run_once
from cloud.pipeline.settings import PipelineSettings, pipeline_settings

__all__ = ["PipelineFailed", "PipelineResult", "PipelineSettings", "pipeline_settings", "run_continuous", "run_once"]
