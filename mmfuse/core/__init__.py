"""The lowest layer: what every other part of mmfuse shares.

* :mod:`mmfuse.core.config`   — config loading / saving, merging, validation against factory signatures;
* :mod:`mmfuse.core.registry` — the pluggy registry of every kind (components, models, presets, data sets,
  tasks) and the lookup-and-suggest helper;
* :mod:`mmfuse.core.features` — ``Features``, ``FeatureDims`` and the ``SupportsFusion`` protocol;
* :mod:`mmfuse.core.outputs`  — model outputs (``ModelOutput``, ``ClassificationOutput``);
* :mod:`mmfuse.core.batch`    — checks of model batches.

It also holds :mod:`~mmfuse.core.build` (``build_component``), :mod:`~mmfuse.core.provenance`
and :mod:`~mmfuse.core.portable` (what a saved model needs), :mod:`~mmfuse.core.paths` and
:mod:`~mmfuse.core.names` (close-match suggestions). Nothing here imports from another mmfuse
package except :mod:`mmfuse.utils` (the layers are checked by ``lint-imports``, see
``pyproject.toml``).
"""

#: the package version (``mmfuse.__version__``), here so that the lowest layer can record it
__version__ = "0.1.0"
