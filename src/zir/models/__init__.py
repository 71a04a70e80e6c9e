"""Towers (image and, later, text encoders), the model zoo and weight loading."""

from zir.models.efficient import EfficientAttentionViT
from zir.models.efficientvit import EfficientViT
from zir.models.factories import list_model_factories, register_model_factory
from zir.models.minilm import MiniLM
from zir.models.mobilevit import MobileViTv2
from zir.models.swin import SwinTransformer
from zir.models.text import TextTransformer
from zir.models.tower import Tower
from zir.models.vit import VisionTransformer
from zir.models.weights import load_weights, read_state_dict, save_weights
from zir.models.zoo import (
    count_flops, count_parameters, create_model, get_model_spec, list_models, native_size, register_model,
)

__all__ = [
    "EfficientAttentionViT", "EfficientViT", "MiniLM", "MobileViTv2", "SwinTransformer", "TextTransformer",
    "Tower", "VisionTransformer", "count_flops", "count_parameters", "create_model", "get_model_spec", "list_model_factories",
    "list_models", "load_weights", "native_size", "read_state_dict", "register_model", "register_model_factory",
    "save_weights",
]
