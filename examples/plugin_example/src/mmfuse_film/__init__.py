"""mmfuse-film: an mmfuse plugin contributing FiLM fusion and the ``radm-tiny-film`` preset.

Installed, it is found by mmfuse through its ``mmfuse`` entry point (see ``plugin.py``);
nothing needs importing by hand.
"""

from mmfuse_film.film import FiLMFusion, FiLMGenerator

__version__ = "0.1.0"
__all__ = ["FiLMFusion", "FiLMGenerator", "__version__"]
