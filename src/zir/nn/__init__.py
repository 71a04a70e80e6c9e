"""Building blocks of the towers: attention, MLP, patch and position embeddings, drop path, layer scale."""

from zir.nn.activation import QuickGELU, activation
from zir.nn.attention import ATTENTION_IMPLS, Attention, attend, check_attention_impl, choose_attention_impl
from zir.nn.block import Block
from zir.nn.drop import DropPath, drop_path
from zir.nn.layer_scale import LayerScale
from zir.nn.mlp import Mlp
from zir.nn.patch_embed import PatchEmbed, to_2tuple
from zir.nn.pos_embed import resample_pos_embed, sincos_1d, sincos_2d

__all__ = [
    "ATTENTION_IMPLS", "Attention", "Block", "QuickGELU", "activation", "DropPath", "LayerScale", "Mlp", "PatchEmbed",
    "attend", "check_attention_impl", "choose_attention_impl", "drop_path", "resample_pos_embed", "sincos_1d", "sincos_2d", "to_2tuple",
]
