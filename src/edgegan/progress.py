"""The command line's progress bars: one per pyramid scale (SETGAN, locally or following a remote job), and one
over a whole multi-epoch run (every other recipe)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ScaleBars:
    """``with ScaleBars(console) as bars: bars.update(scale, step, total)``; ``bars.console``
    prints above the bars."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[int, Any] = {}

    @property
    def console(self) -> Console:
        return self.progress.console

    def update(self, scale: int, step: int, total: int) -> None:
        if scale not in self.tasks:
            self.tasks[scale] = self.progress.add_task(f"scale {scale}", total=total)
        self.progress.update(self.tasks[scale], completed=step, total=total)

    def __enter__(self) -> ScaleBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]


class RunBar:
    """One bar over a whole multi-epoch run, fed ``(epoch, batches_done, batches_per_epoch)`` (pass ``bar.update``
    as a recipe's ``progress``); a resumed run starts part-way along it. ``bar.epoch_done`` prints an epoch's
    figures above the bar (a recipe's ``on_epoch``)."""

    def __init__(self, label: str, total_epochs: int, console: Console | None = None) -> None:
        self.label = label
        self.total_epochs = total_epochs
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(label, total=None)

    @property
    def console(self) -> Console:
        return self.progress.console

    def update(self, epoch: int, done: int, per_epoch: int) -> None:
        self.progress.update(
            self.task,
            description=f"{self.label} epoch {epoch}/{self.total_epochs}",
            completed=(epoch - 1) * per_epoch + done,
            total=self.total_epochs * per_epoch,
        )

    def epoch_done(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Print ``epoch N/T  name=value ...`` (3 significant digits) above the bar."""
        shown = "  ".join(f"{k}={v:.3g}" for k, v in metrics.items())
        self.console.print(f"epoch {epoch}/{self.total_epochs}  {shown}")

    def __enter__(self) -> RunBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]
