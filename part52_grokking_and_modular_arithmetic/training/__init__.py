"""Training with the paper's recipe: the loss (:mod:`.losses`), the last-position model (:mod:`.last_position`),
the one training loop for one run or many (:mod:`.train`, :mod:`.batched_train`), resource estimates
(:mod:`.resources`), sweeps (:mod:`.sweep`); :mod:`..runs.commands` holds ``train``, ``sweep`` and ``sweep-summary``."""
