"""The lowest layer: what every other part of mmfuse shares.

* :mod:`mmfuse.core.config`   — config loading / saving, merging, validation against factory signatures;
* :mod:`mmfuse.core.registry` — the pluggy registry of every kind (components, models, presets, data sets,
  tasks), the lookup-and-suggest helper and :func:`~mmfuse.core.registry.build_component`;
* :mod:`mmfuse.core.features` — ``Features``, ``FeatureDims`` and the ``SupportsFusion`` protocol;
* :mod:`mmfuse.core.outputs`  — model outputs (``ModelOutput``, ``ClassificationOutput``);
* :mod:`mmfuse.core.batch`    — checks of model batches.

Nothing here imports from another mmfuse package except :mod:`mmfuse.utils`
(the layers are checked by ``lint-imports``, see ``pyproject.toml``).
"""
