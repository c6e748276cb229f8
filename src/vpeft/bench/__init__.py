"""Benchmarks and the `vpeft demo` job: run methods on tasks, tabulate, plot."""

from .demo import (
    DEFAULT_METHODS,
    DEFAULT_TASKS,
    RECIPES,
    DemoRow,
    MethodRecipe,
    run_demo,
)
from .probe import ProbeRow, linear_probe, transfer_probe
from .report import method_means, write_outputs

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_TASKS",
    "RECIPES",
    "DemoRow",
    "MethodRecipe",
    "ProbeRow",
    "linear_probe",
    "method_means",
    "run_demo",
    "transfer_probe",
    "write_outputs",
]
