"""zir.load on released checkpoints: transformers folders, open_clip state dicts and DINOv2's own checkpoints equal
their library's outputs.

The fixtures (tests/fixtures/interop/*/) were written by the original libraries, run once in a throwaway
environment: transformers (make_fixtures.py), open_clip and facebookresearch/dinov2 (make_original_fixtures.py);
none of them is needed here.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from safetensors.torch import load_file

import zir
from helpers import FIXTURES
from zir.errors import WeightsError
from zir.interop import PretrainedModel

INTEROP = FIXTURES / "interop"
VISION = ["vit", "vit_mae", "dinov2", "dinov2_registers", "dinov2_original", "dinov2_original_noreg"]
PAIRS = ["clip", "open_clip", "open_clip_gelu"]
SIGLIP = ["siglip"]


def reference(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(INTEROP / name / "reference.safetensors"))


@pytest.mark.parametrize("name", VISION + PAIRS + SIGLIP)
def test_encode_image_equals_the_original_library(name):
    torch.set_num_threads(1)
    model, ref = zir.load(INTEROP / name), reference(name)
    assert isinstance(model, PretrainedModel) and not model.training
    with torch.no_grad():
        out = model.encode_image(ref["images"])
    assert out.shape == ref["image_embeds"].shape
    assert torch.allclose(out, ref["image_embeds"], atol=1e-5, rtol=0)
    assert ref["image_embeds"].abs().mean() > 0.1  # a real signal, not zeros on both sides


@pytest.mark.parametrize("name", VISION + SIGLIP)
def test_every_token_equals_transformers_last_hidden_state(name):
    """CLS, registers (DINOv2) and patches in the original library's order, after the final norm."""
    model, ref = zir.load(INTEROP / name), reference(name)
    with torch.no_grad():
        tokens = model.towers["image"].forward_tokens(ref["images"])
    assert torch.allclose(tokens, ref["tokens"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", PAIRS)
def test_encode_text_from_ids_and_from_strings(name):
    """The ids are those of the library's own tokenizer (CLIPTokenizer; open_clip's SimpleTokenizer)."""
    model, ref = zir.load(INTEROP / name), reference(name)
    texts = json.loads((INTEROP / name / "tokens.json").read_text(encoding="utf-8"))["texts"]
    with torch.no_grad():
        from_ids, from_strings = model.encode_text(ref["input_ids"]), model.encode_text(texts)
    assert torch.allclose(from_ids, ref["text_embeds"], atol=1e-5, rtol=0)
    assert torch.allclose(from_strings, ref["text_embeds"], atol=1e-5, rtol=0)


def test_siglip_text_from_ids_pools_at_the_last_position_and_keeps_the_logit_bias():
    """SigLIP's text tower is bidirectional and pools at the last position, padding or not (row 0 is padded)."""
    model, ref = zir.load(INTEROP / "siglip"), reference("siglip")
    with torch.no_grad():
        out = model.encode_text(ref["input_ids"])
    assert torch.allclose(out, ref["text_embeds"], atol=1e-5, rtol=0)
    hf = load_file(str(INTEROP / "siglip" / "model.safetensors"))
    assert float(model.logit_bias.detach()) == pytest.approx(float(hf["logit_bias"]))
    assert model.image_proj is None and model.towers["image"].global_pool == "map"


def test_tokenizer_ids_equal_transformers_on_tricky_strings():
    """Accents, emoji, CJK, whitespace runs, an empty string and a caption longer than the context."""
    saved = json.loads((INTEROP / "clip" / "tokens.json").read_text(encoding="utf-8"))
    model = zir.load(INTEROP / "clip")
    ids = model.tokenize(saved["texts"])
    assert ids.tolist() == saved["ids"]
    assert "" in saved["texts"] and any(len(t) > 100 for t in saved["texts"])


def test_loading_never_imports_transformers_or_open_clip():
    for name in VISION + PAIRS + SIGLIP:
        zir.load(INTEROP / name)
    assert "transformers" not in sys.modules and "open_clip" not in sys.modules


def test_clip_logit_scale_and_projection_are_kept():
    model = zir.load(INTEROP / "clip")
    hf = load_file(str(INTEROP / "clip" / "model.safetensors"))
    assert float(model.logit_scale.detach()) == pytest.approx(float(hf["logit_scale"]))
    assert torch.equal(model.image_proj.weight, hf["visual_projection.weight"])


def test_an_image_only_model_has_no_text_encoder():
    with pytest.raises(zir.ZirError, match="image-only"):
        zir.load(INTEROP / "dinov2").encode_text(torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize("edit, message", [
    ({"model_type": "bert"}, "model_type='bert' is not one zir reads"),
    ({"hidden_act": "gelu_new"}, "hidden_act='gelu_new' is not supported"),
    ({"use_swiglu_ffn": True}, "use_swiglu_ffn"),
    ({"hidden_size": 48}, "do not fit"),
])
def test_a_config_zir_cannot_follow_fails_in_one_line(tmp_path, edit, message):
    folder = tmp_path / "dinov2"
    shutil.copytree(INTEROP / "dinov2", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises(WeightsError, match=message) as err:
        zir.load(folder)
    assert "\n" not in str(err.value)


def test_a_config_without_weights_names_the_files_it_looked_for(tmp_path):
    shutil.copy(INTEROP / "vit" / "config.json", tmp_path / "config.json")
    with pytest.raises(WeightsError, match="no model.safetensors or pytorch_model.bin"):
        zir.load(tmp_path)


def test_an_openai_style_pt_file_loads_and_needs_the_head_count_beside_it(tmp_path):
    """OpenAI's state dicts also carry input_resolution, context_length and vocab_size; heads come from the config."""
    state = load_file(str(INTEROP / "open_clip" / "open_clip_model.safetensors"))
    state.update(input_resolution=torch.tensor(16), context_length=torch.tensor(16), vocab_size=torch.tensor(565))
    torch.save(state, tmp_path / "ViT-tiny.pt")
    with pytest.raises(WeightsError, match="open_clip_config.json"):
        zir.load(tmp_path / "ViT-tiny.pt")
    shutil.copy(INTEROP / "open_clip" / "open_clip_config.json", tmp_path)
    ref = reference("open_clip")
    with torch.no_grad():
        out = zir.load(tmp_path / "ViT-tiny.pt").encode_image(ref["images"])
    assert torch.allclose(out, ref["image_embeds"], atol=1e-5, rtol=0)


def test_dinov2s_own_file_loads_by_itself_and_zirs_tower_files_are_not_mistaken_for_it(tmp_path):
    ref = reference("dinov2_original")
    with torch.no_grad():
        out = zir.load(INTEROP / "dinov2_original" / "dinov2_tiny_reg2_pretrain.pth").encode_image(ref["images"])
    assert torch.allclose(out, ref["image_embeds"], atol=1e-5, rtol=0)
    tower = zir.create_model("vit_nano_patch4_32", num_classes=0, init_values=0.1, mask_token=True)
    zir.save_weights(tower, tmp_path / "tower.safetensors")
    with pytest.raises(WeightsError, match="no zir model config"):
        zir.load(tmp_path / "tower.safetensors")


def open_clip_ids(hf_ids: list[list[int]]) -> torch.Tensor:
    """transformers' CLIP ids padded as open_clip pads: zeros after the end token."""
    ids = torch.tensor(hf_ids)
    after_end = (ids == ids.max()).int().cumsum(dim=1) > 1
    return ids.masked_fill(after_end, 0)


def test_clips_merges_file_tokenises_like_transformers_and_pads_like_open_clip():
    from zir.data import load_tokenizer

    saved = json.loads((INTEROP / "clip" / "tokens.json").read_text(encoding="utf-8"))
    tok = load_tokenizer(INTEROP / "bpe_simple_vocab_tiny.txt.gz", context_length=16)
    assert tok.vocab_size == 565 and tok.eot_id == 564 and tok.pad_id == 0
    assert torch.equal(tok(saved["texts"]), open_clip_ids(saved["ids"]))


@pytest.mark.parametrize("name", ["open_clip", "open_clip_gelu"])
def test_clips_merges_file_gives_open_clips_own_ids(name):
    """open_clip's SimpleTokenizer ids on the tricky strings, padding (zeros) included; the folder's tokenizer.json
    gives the same ids up to the end token and pads with it instead (equal features: causal mask, argmax pool)."""
    from zir.data import load_tokenizer

    saved = json.loads((INTEROP / name / "tokens.json").read_text(encoding="utf-8"))
    assert torch.equal(reference(name)["input_ids"], torch.tensor(saved["ids"]))
    tok = load_tokenizer(INTEROP / "bpe_simple_vocab_tiny.txt.gz", context_length=16)
    assert tok(saved["texts"]).tolist() == saved["ids"]
    assert torch.equal(open_clip_ids(zir.load(INTEROP / name).tokenize(saved["texts"]).tolist()), torch.tensor(saved["ids"]))


def test_dinov2_training_checkpoints_with_block_chunks_load_like_the_flat_released_files():
    """DINOv2 trains with block_chunks (keys blocks.C.N.); the released files are flat (blocks.N.)."""
    from zir.models.weights import read_state_dict

    state = read_state_dict(INTEROP / "dinov2_original_noreg" / "dinov2_tiny_chunked.pth")
    assert "blocks.1.1.norm1.weight" in state and "blocks.1.norm1.weight" not in state
    model = zir.load(INTEROP / "dinov2_original_noreg")
    assert model.towers["image"].num_reg_tokens == 0 and len(model.towers["image"].blocks) == 2


def test_an_open_clip_folder_with_only_the_merges_file_encodes_strings(tmp_path):
    for name in ("open_clip_model.safetensors", "open_clip_config.json"):
        shutil.copy(INTEROP / "open_clip" / name, tmp_path / name)
    shutil.copy(INTEROP / "bpe_simple_vocab_tiny.txt.gz", tmp_path / "bpe_simple_vocab_16e6.txt.gz")
    texts = json.loads((INTEROP / "open_clip" / "tokens.json").read_text(encoding="utf-8"))["texts"]
    with torch.no_grad():
        out = zir.load(tmp_path).encode_text(texts)
    assert torch.allclose(out, reference("open_clip")["text_embeds"], atol=1e-5, rtol=0)
