"""The phases of :class:`~lightning_saliency.SaliencyMonitor`, each a module with a small typed interface.

In the order the monitor runs them every logged epoch:

1. take the probe: :mod:`lightning_saliency.probe` (:func:`~lightning_saliency.probe.probe_from_trainer`);
2. compute maps: :mod:`~lightning_saliency.monitoring.maps`;
   with a time budget, :mod:`~lightning_saliency.monitoring.budget` decides before the maps whether the epoch is
   logged at all, and after them which scores run, at how many curve steps, on which rows;
3. score: :mod:`~lightning_saliency.monitoring.scoring` (dispatched from :mod:`lightning_saliency.metrics.registry`);
4. agree and gather across ranks: :mod:`lightning_saliency.distributed`;
5. summarise across epochs (history, scores against the previous epoch, alarms):
   :mod:`~lightning_saliency.monitoring.summary`;
6. render: :mod:`~lightning_saliency.monitoring.rendering` (drawing itself: :mod:`lightning_saliency.render`);
7. write to sinks: :mod:`~lightning_saliency.monitoring.sinks`.

What flows between them is an :class:`~lightning_saliency.monitoring.result.EpochResult`.
"""
