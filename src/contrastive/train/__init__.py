"""The training system: data loaders, augmentations, encoders, optimisers, checkpoints,
evaluation, plots and recipes (SimCLR), driven by ``contrastive train RECIPE``.

Modules: :mod:`.loop` (the one training loop every recipe runs on), :mod:`.data`,
:mod:`.augment`, :mod:`.models`, :mod:`.optim`, :mod:`.config` (validated against the name
tables of :mod:`.registry`), :mod:`.checkpoint`,
:mod:`.evaluate`, :mod:`.plots`, :mod:`.rundir` (the run folder), :mod:`.runlog` (the metrics files and
progress), :mod:`.dist` (device, threads, seeds, torchrun),
:mod:`.recipes` (one module per recipe, each a :class:`~.loop.Task`) and :mod:`.cli`. Heavy optional dependencies
(kornia, scikit-learn, matplotlib, tqdm) are imported only where they are used.
"""
