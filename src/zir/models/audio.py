"""The audio tower: a ViT on log-mel spectrogram patches (AST, Gong et al. 2021; Audio-MAE, Huang et al. 2022).

The input is one channel, (B, 1, n_mels, frames): frequency is the patch grid's rows, time its columns,
and each patch token gets a position embedding for its (frequency, time) cell. Everything else is the
image ViT's, so dropping tokens (`forward_tokens(x, keep)`: Audio-MAE, FLIP-style audio-text) and filling
them with a mask token work unchanged. The tower states the front end it was built for in `spectrogram`
(sample rate, STFT, mel bins, frames), and the data side computes exactly that log-mel for it
(`zir.data.spectrogram`).

Patches do not overlap: published AST cuts 16x16 patches every 10 bins and frames (1212 patches for
128 x 1024), which no token dropping can use; Audio-MAE's non-overlapping 16x16 patches (512 for
128 x 1024) are what this tower cuts.
"""

from __future__ import annotations

from zir.models.vit import VisionTransformer


class AudioTransformer(VisionTransformer):
    """A ViT over (n_mels, frames) log-mel spectrograms, one input channel; see the module docstring."""

    modality = "audio"

    def __init__(
        self,
        n_mels: int = 128,
        frames: int = 1024,
        patch_size: int | tuple[int, int] = 16,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        win_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "htk",
        num_classes: int = 0,
        global_pool: str = "token",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        init_values: float | None = None,
        class_token: bool = True,
        reg_tokens: int = 0,
        pos_embed: str = "learn",
        fc_norm: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        mask_token: bool = False,
    ) -> None:
        """A tower for `n_mels` x `frames` spectrograms of the front end named by the audio arguments
        (see `zir.data.spectrogram.Spectrogram`); the rest are the ViT's."""
        super().__init__(
            img_size=(n_mels, frames), patch_size=patch_size, in_chans=1, num_classes=num_classes,
            global_pool=global_pool, embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, qk_norm=qk_norm, init_values=init_values, class_token=class_token,
            reg_tokens=reg_tokens, embed_prefix=reg_tokens == 0, pos_embed=pos_embed, fc_norm=fc_norm,
            drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, mask_token=mask_token,
        )
        self.spectrogram = {"sample_rate": sample_rate, "n_fft": n_fft, "hop_length": hop_length,
                            "win_length": win_length, "n_mels": n_mels, "frames": frames, "f_min": f_min,
                            "f_max": f_max, "mel_scale": mel_scale}

    def adapt_state_dict(self, state: dict) -> tuple[dict, list[str]]:
        """zir's own layout (foreign AST checkpoints cut overlapping patches, which this tower does not)."""
        return dict(state), []
