"""Optional offline experiment logging: TensorBoard event files, or a local MLflow store.

``--log tensorboard[:DIR]`` writes one scalar per metric and epoch with TensorBoard's own
``SummaryWriter`` (default DIR: ``<run output>/tensorboard``); ``--log mlflow[:URI]`` logs params
and metrics to MLflow (default URI: ``sqlite:///<run output>/mlflow.db``, a local database,
no server; MLflow 3 refuses new plain-file stores). Both are extras
(``pip install 'vpeft[bench]'`` for TensorBoard, ``'vpeft[mlflow]'``), imported only when asked.
A tracker is fed through `vpeft.train.train`'s ``on_epoch_end`` hook.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError

BACKENDS = ("tensorboard", "mlflow")


class Tracker(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...
    def on_epoch_end(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in record.items()
        if k != "epoch"
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    }


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


class TensorBoardTracker:
    """Scalars per epoch (``train_loss``, ``val_top1``, …) and the run's params as text."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # tensorboard itself is missing
            raise ConfigError(
                "--log tensorboard needs the tensorboard package: pip install 'vpeft[bench]'"
            ) from err
        self.log_dir = log_dir
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_params(self, params: dict[str, Any]) -> None:
        text = "\n".join(f"    {k} = {v}" for k, v in sorted(_flat(params).items()))
        self.writer.add_text("params", text)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        step = int(record.get("epoch", 0))
        for name, value in _scalars(record).items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """One MLflow run in a local file store (no tracking server)."""

    def __init__(self, uri: str, run_name: str) -> None:
        try:
            import mlflow
        except ImportError as err:
            raise ConfigError(
                "--log mlflow needs MLflow: pip install 'vpeft[mlflow]' (or use --log tensorboard)"
            ) from err
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        try:
            self.run = mlflow.start_run(run_name=run_name)
        except mlflow.exceptions.MlflowException as err:
            first = str(err).split(". ")[0]
            raise ConfigError(
                f"--log mlflow:{uri}: MLflow cannot use this tracking URI ({first}); "
                "give a local database such as mlflow:sqlite:///runs/mlflow.db"
            ) from err

    def log_params(self, params: dict[str, Any]) -> None:
        self.mlflow.log_params(_flat(params))

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.mlflow.log_metrics(_scalars(record), step=int(record.get("epoch", 0)))

    def close(self) -> None:
        self.mlflow.end_run()


def parse_log(value: str | None) -> tuple[str, str | None] | None:
    """``"tensorboard:runs/tb"`` -> ("tensorboard", "runs/tb"); None / "" / "none" -> None."""
    if not value or value.lower() == "none":
        return None
    backend, _, target = value.partition(":")
    if backend not in BACKENDS:
        raise ConfigError(f"--log {value!r}: choose tensorboard[:DIR] or mlflow[:URI]")
    return backend, target or None


#: The package each backend imports, and the extra that installs it.
_PACKAGES = {"tensorboard": ("tensorboard", "vpeft[bench]"), "mlflow": ("mlflow", "vpeft[mlflow]")}


def check_log(value: str | None) -> None:
    """Fail before any training when ``--log`` names a backend that is not installed."""
    import importlib.util

    parsed = parse_log(value)
    if parsed is None:
        return
    package, extra = _PACKAGES[parsed[0]]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"--log {value} needs the {package} package, which is not installed: "
            f"pip install '{extra}' (or use --log "
            f"{'tensorboard' if package == 'mlflow' else 'mlflow'})"
        )


def make_tracker(value: str | None, run_dir: Path, run_name: str) -> Tracker | None:
    """The tracker `value` asks for (see `parse_log`), writing beside `run_dir` by default."""
    parsed = parse_log(value)
    if parsed is None:
        return None
    backend, target = parsed
    if backend == "tensorboard":
        return TensorBoardTracker(Path(target) / run_name if target else run_dir / "tensorboard")
    return MLflowTracker(target or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}", run_name)


@contextmanager
def epoch_callback(
    value: str | None, run_dir: Path, run_name: str, params: dict[str, Any]
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """The per-epoch callback of the tracker `value` asks for (None without one), `params`
    logged first; the tracker is closed when the run ends or fails."""
    tracker = make_tracker(value, run_dir, run_name)
    if tracker is None:
        yield None
        return
    tracker.log_params(params)
    try:
        yield tracker.on_epoch_end
    finally:
        tracker.close()
