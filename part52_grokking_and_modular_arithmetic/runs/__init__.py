"""A run and where it comes from: the recipe (:mod:`.config`), the data and split (:mod:`.data`), the model
(:mod:`.architecture`, :mod:`.model`, :mod:`.layout`), the run file and its one validating parse
(:mod:`.run_data`, :mod:`.checkpoints`), and provisioning: local file, hub, or training (:mod:`.provision`,
:mod:`.hub`); :mod:`.commands` holds the ``fetch``, ``download`` and ``info`` commands."""
