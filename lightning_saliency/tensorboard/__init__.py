"""The SALIENCY tab of TensorBoard: what the monitor writes for it (:mod:`.summary`) and the plugin that shows it."""
