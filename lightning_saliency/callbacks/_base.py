"""What the monitors share: when they run, one prefix each, writing to every logger (rank 0), the progress bar."""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_saliency._checks import int_at_least, non_empty_str
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.monitoring.sinks import Record, Sink, sinks_for

__all__: list[str] = []

_STAGE_SUFFIX = {"validate": "", "test": "_test"}


class EpochEndMonitor(Callback, ABC):
    """Base of the monitors: runs ``_run`` at the end of the validation and test epochs that should log.

    That is every ``every_n_epochs``-th validation epoch of ``fit`` (never the sanity check), and the end of every
    ``validate`` and ``test`` run.

    Args:
        every_n_epochs: Log every n-th validation epoch during ``fit``.
        log_prefix: Tag prefix in TensorBoard; ``_test`` is appended in ``trainer.test()``.
    """

    def __init__(self, every_n_epochs: int, log_prefix: str) -> None:
        super().__init__()
        self.every_n_epochs = int_at_least(every_n_epochs, 1, "every_n_epochs")
        self.log_prefix = non_empty_str(log_prefix, "log_prefix")
        self._said_fast_dev_run = False
        self._sinks: dict[int, Sink] = {}  # one per logger, kept across stages (each writes its layout once)
        self._sink_errors: set[str] = set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Refuse a second monitor writing the same tags; say once that ``fast_dev_run`` logs nothing.

        Raises:
            ValueError: If another monitor of the trainer has the same ``log_prefix``.
        """
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning's callback connector
        same = [cb for cb in callbacks if isinstance(cb, EpochEndMonitor) and cb.log_prefix == self.log_prefix]
        if len(same) > 1:
            first, second = same[:2]  # in the Trainer's order
            raise ValueError(
                f"Two monitors write the same TensorBoard tags: {first!r} and {second!r} both have "
                f"log_prefix={self.log_prefix!r}. Give one of them another prefix, e.g. "
                f"{type(second).__name__}(..., log_prefix={self.log_prefix + '_2'!r})."
            )
        if trainer.fast_dev_run and not self._said_fast_dev_run:  # type: ignore[attr-defined]  # Lightning's
            self._said_fast_dev_run = True
            rank_zero_info(
                f"{type(self).__name__}: fast_dev_run is on, and Lightning replaces the Trainer's loggers with a "
                "dummy in that mode, so this run computes the saliency work (a check that it runs) but logs "
                "nothing. Run without fast_dev_run (e.g. limit_train_batches=2, max_epochs=1) to see the images."
            )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run every ``every_n_epochs`` during fit (always in ``validate``); skipped in the sanity check."""
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        self._run(trainer, pl_module, "validate")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Run at the end of testing."""
        self._run(trainer, pl_module, "test")

    @abstractmethod
    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Compute and log for ``stage`` (``"validate"`` or ``"test"``)."""

    def _prefix(self, stage: str) -> str:
        return self.log_prefix + _STAGE_SUFFIX[stage]

    def _write(self, trainer: pl.Trainer, record: Record) -> None:
        """Write ``record`` to every sink of the trainer (one per logger); rank 0 only, no collectives.

        A logger whose call fails gives one warning naming the logger and the error (once per distinct error);
        the other loggers still receive everything and training continues.
        """
        if not trainer.is_global_zero:
            return
        for sink in sinks_for(trainer, self._sinks):
            try:
                sink.write(record)
            except Exception as exc:
                owner = type(getattr(sink, "logger", None) or sink).__name__
                key = f"{owner}: {type(exc).__name__}: {exc}"
                if key not in self._sink_errors:
                    self._sink_errors.add(key)
                    rank_zero_warn(
                        f"{type(self).__name__} could not write to {owner} at step {record.step}: "
                        f"{type(exc).__name__}: {exc}. The other loggers still receive everything; training "
                        "continues.",
                        category=SaliencyWarning,
                    )


@contextmanager
def progress_bar(trainer: pl.Trainer, total: int, desc: str) -> Iterator[Callable[[str], None]]:
    """A transient bar under Lightning's own (rank 0, when Lightning shows a TQDM or Rich bar): ``advance(what)``."""
    bar_callback = trainer.progress_bar_callback
    shown = isinstance(bar_callback, (RichProgressBar, TQDMProgressBar)) and bar_callback.is_enabled
    unready = isinstance(bar_callback, RichProgressBar) and bar_callback.progress is None
    if not trainer.is_global_zero or not shown or unready:
        yield lambda _: None
        return
    if isinstance(bar_callback, RichProgressBar):
        progress = bar_callback.progress
        assert progress is not None
        task = progress.add_task(desc, total=total)
        try:
            yield lambda what: progress.update(task, advance=1, description=f"{desc}: {what}")
        finally:
            progress.remove_task(task)
        return
    bar = Tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stdout)

    def advance(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update(1)

    try:
        yield advance
    finally:
        bar.close()
