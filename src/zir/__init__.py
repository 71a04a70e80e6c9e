"""zir: Vision Transformers trained with self-supervised and cross-modal objectives in one architecture."""

from zir.errors import ZirError
from zir.models import (
    count_parameters, create_model, list_model_factories, list_models, load_weights, register_model_factory, save_weights,
)

__version__ = "0.1.0"

# Heavier entry points, imported on first use so `import zir` stays light.
_LAZY = {
    "load": "zir.train.runs",
    "generate_captions": "zir.objectives.coca",
    "build_model": "zir.model",
}


def __getattr__(name: str):
    """Resolve the lazily imported entry points (`zir.load`, `zir.generate_captions`, `zir.build_model`)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zir' has no attribute {name!r}")


__all__ = ["ZirError", "__version__", "build_model", "count_parameters", "create_model", "generate_captions",
           "list_model_factories", "list_models", "load", "load_weights", "register_model_factory", "save_weights"]
