"""Tasks: heads/decoders, losses, streaming metrics and the batch fields they read."""

from .base import FeatureInfo, Metric, Task, register_task, task_from_json
from .classification import ClassificationTask, TopKAccuracy

__all__ = [
    "ClassificationTask",
    "FeatureInfo",
    "Metric",
    "Task",
    "TopKAccuracy",
    "register_task",
    "task_from_json",
]
