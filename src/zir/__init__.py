"""zir: Vision Transformers trained with self-supervised and cross-modal objectives in one architecture."""

from zir.errors import ZirError
from zir.models import count_parameters, create_model, list_models, load_weights, save_weights

__version__ = "0.1.0"

__all__ = ["ZirError", "__version__", "count_parameters", "create_model", "list_models", "load_weights",
           "save_weights"]
