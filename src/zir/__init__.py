"""zir: Vision Transformers trained with self-supervised and cross-modal objectives in one architecture."""

from zir.errors import ZirError

__version__ = "0.1.0"

__all__ = ["ZirError", "__version__"]
