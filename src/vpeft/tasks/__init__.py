"""Tasks: heads/decoders, losses, streaming metrics and the batch fields they read."""

from .base import FeatureInfo, Metric, Task, register_task, task_from_json
from .classification import ClassificationTask, TopKAccuracy
from .decoders import AllMLPDecoder, SetrPupDecoder, StageNorms
from .dense import (
    PASCAL_MT_TASKS,
    DenseHead,
    NormalsTask,
    SaliencyTask,
    SegmentationTask,
    delta_m,
    pascal_mt_tasks,
)
from .metrics import (
    BinaryMIoU,
    ConfusionMIoU,
    MaxFMeasure,
    NormalsError,
    RetrievalRecall,
    VQAScore,
    recall_at_k,
)
from .vl import (
    ContrastiveRetrievalTask,
    Nlvr2Task,
    RetrievalTask,
    VqaTask,
    ZeroShotClassificationTask,
    base_to_new,
)

__all__ = [
    "PASCAL_MT_TASKS",
    "AllMLPDecoder",
    "BinaryMIoU",
    "ClassificationTask",
    "ConfusionMIoU",
    "ContrastiveRetrievalTask",
    "DenseHead",
    "FeatureInfo",
    "MaxFMeasure",
    "Metric",
    "Nlvr2Task",
    "NormalsError",
    "NormalsTask",
    "RetrievalRecall",
    "RetrievalTask",
    "SaliencyTask",
    "SegmentationTask",
    "SetrPupDecoder",
    "StageNorms",
    "Task",
    "TopKAccuracy",
    "VQAScore",
    "VqaTask",
    "ZeroShotClassificationTask",
    "base_to_new",
    "delta_m",
    "pascal_mt_tasks",
    "recall_at_k",
    "register_task",
    "task_from_json",
]
