"""SPT (He et al., ICCV 2023): sensitivity, budget allocation, plans and sparse tuning.

sens = compute_sensitivity(model, sensitivity_batches(train_set), num_classes)   # stage 1
plan = build_plan(model, sens, "0.4M", structured="lora")                         # stage 2
plan.save("plan.safetensors"); print(plan.table()); plot_heatmap(plan, "plan.png")
pm = vpeft.apply(model, "spt-lora", num_classes=…, plan="plan.safetensors")
"""

from .allocation import Allocation, Rules, allocate, parse_budget
from .candidates import Candidates, Unit, find_candidates
from .heatmap import plot_heatmap
from .plan import PlanEntry, SptPlan, build_plan
from .sensitivity import (
    Sensitivity,
    compute_sensitivity,
    random_sensitivity,
    sensitivity_batches,
)
from .sparse import SparseDelta, SparseLinearDelta, SparseMatmul, fold_sparse, sparse_matmul

__all__ = [
    "Allocation",
    "Candidates",
    "PlanEntry",
    "Rules",
    "Sensitivity",
    "SparseDelta",
    "SparseLinearDelta",
    "SparseMatmul",
    "SptPlan",
    "Unit",
    "allocate",
    "build_plan",
    "compute_sensitivity",
    "find_candidates",
    "fold_sparse",
    "parse_budget",
    "plot_heatmap",
    "random_sensitivity",
    "sensitivity_batches",
    "sparse_matmul",
]
