"""The audio tower: a ViT over (n_mels, frames) log-mel patches, one channel, that states its front end; it drops
tokens like the image ViT (Audio-MAE, FLIP-style audio-text) and is listed by `zir models`."""

from __future__ import annotations

import pytest
import torch

from zir.cli import main
from zir.data.spectrogram import Spectrogram
from zir.errors import ConfigError, ShapeError
from zir.models import create_model
from zir.models.audio import AudioTransformer
from zir.models.tower import AudioInput, Tower, check_tower, require
from zir.models.vit import VisionTransformer


def test_the_cpu_scale_tower_reads_its_own_front_end():
    torch.manual_seed(0)
    tower = create_model("ast_nano")
    assert isinstance(tower, Tower) and isinstance(tower, AudioInput) and tower.modality == "audio"
    assert tower.in_chans == 1 and tower.img_size == (64, 64) and tower.patch_size == (8, 8) and tower.token_grid == (8, 8)
    spec = Spectrogram.from_dict(tower.spectrogram)
    assert (spec.sample_rate, spec.n_mels, spec.frames, spec.seconds) == (8000, 64, 64, pytest.approx(0.63))
    assert tower.pos_embed.shape == (1, 64, 64)  # one learned embedding per (frequency, time) cell
    x = torch.randn(3, 1, 64, 64)
    assert tower.forward_tokens(x).shape == (3, 65, 64) and tower.pool(tower.forward_tokens(x)).shape == (3, 64)


def test_dropping_tokens_encodes_only_the_kept_patches_at_their_positions():
    torch.manual_seed(0)
    tower = create_model("ast_nano").eval()
    x = torch.randn(2, 1, 64, 64)
    keep = torch.tensor([[0, 9, 63], [5, 6, 7]])
    patches = tower.patch_embed(x) + tower.pos_embed
    chosen = torch.gather(patches, 1, keep[..., None].expand(-1, -1, 64))
    manual = tower.norm(tower.forward_blocks(torch.cat([tower.prefix_tokens(2), chosen], dim=1)))
    assert torch.allclose(tower.forward_tokens(x, keep), manual, atol=1e-6)
    assert tower.can_drop_tokens and tower.forward_tokens(x, keep).shape == (2, 4, 64)


def test_published_size_and_overrides():
    with torch.device("meta"):
        base = create_model("ast_base_patch16_1024")
        longer = create_model("ast_nano", frames=128)
    assert base.token_grid == (8, 64) and base.embed_dim == 768 and base.spectrogram["hop_length"] == 160
    assert longer.token_grid == (8, 16) and longer.spectrogram["frames"] == 128
    with pytest.raises(ShapeError, match="not divisible by the patch size 8x8"):
        create_model("ast_nano").check_size(64, 60)


def test_an_audio_tower_without_its_front_end_and_image_only_objectives_are_refused_in_one_line():
    class Bare(VisionTransformer):
        modality = "audio"

    with pytest.raises(ConfigError, match=r"^towers.audio: Bare is an audio tower without `spectrogram`"):
        check_tower(Bare(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2), "towers.audio")
    tower = create_model("ast_nano")
    with pytest.raises(ConfigError, match=r"^ibot: the AudioTransformer tower 'audio' is an audio tower; ibot needs an image"):
        require("ibot", "audio", tower, "image")
    require("mae", "audio", tower, "patches")
    assert isinstance(tower, AudioTransformer)


def test_zir_models_lists_the_audio_towers_with_their_spectrogram_size(capsys):
    assert main(["models", "ast_*", "--no-flops"]) == 0
    out = capsys.readouterr().out
    assert "ast_nano" in out and "ast_base_patch16_1024" in out and "128x1024" in out and "64x64" in out
