"""CoCa: causal multimodal decoder, captioning loss over real tokens, greedy and beam decoding."""

import pytest
import torch
import torch.nn.functional as F

from zir.data import ShapesSource, make_loader, train_bpe
from zir.errors import ConfigError
from zir.model import build_model
from zir.objectives.coca import CoCa, generate_captions


@pytest.fixture(scope="module")
def setup():
    train = ShapesSource("train", n=200, size=16, objects=(1, 1))
    tok = train_bpe(train.iter_captions(), vocab_size=300, context_length=16)
    torch.manual_seed(0)
    model = build_model({
        "towers": {"image": {"model": "vit_nano_patch4_32", "img_size": 16},
                   "text": {"model": "text_nano", "vocab_size": tok.vocab_size, "context_length": 16}},
        "objectives": {"coca": {}},
    })
    batch = next(iter(make_loader(train, model.view_plan(), 16, tokenizer=tok)))
    return model, tok, batch


def test_decoder_is_causal_and_caption_loss_skips_padding(setup):
    model, tok, batch = setup
    coca = model.objectives["coca"]
    model.eval()
    image_tokens = model.towers["image"].forward_tokens(batch.views["image"][:2])
    ids = batch.tokens["text_0"][:2]
    logits = coca.decoder(model.towers["text"].forward_positions(ids), image_tokens)
    changed = ids.clone()
    changed[:, 6] = 7
    logits2 = coca.decoder(model.towers["text"].forward_positions(changed), image_tokens)
    assert torch.allclose(logits[:, :6], logits2[:, :6], atol=1e-5) and not torch.allclose(logits[:, 6:], logits2[:, 6:])
    real = [(i, t) for i in range(2) for t in range(ids.shape[1] - 1) if ids[i, t + 1] != tok.pad_id]
    want = torch.stack([F.cross_entropy(logits[i, t], ids[i, t + 1]) for i, t in real]).mean()
    assert coca.caption_loss(logits, ids).item() == pytest.approx(want.item(), rel=1e-5)


def test_loss_terms_and_a_few_steps_lower_the_caption_loss(setup):
    model, tok, batch = setup
    model.train()
    first = model(batch)
    m = first.metrics
    assert m["coca_loss"] == pytest.approx(m["coca_contrastive_loss"] + 2.0 * m["coca_caption_loss"], rel=1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(10):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.metrics["coca_caption_loss"] < 0.9 * m["coca_caption_loss"]


def test_greedy_and_beam_captions(setup):
    model, tok, batch = setup
    images = batch.views["image"][:3]
    ids = generate_captions(model, images)
    assert ids.shape == (3, 16) and (ids[:, 0] == tok.sot_id).all()
    assert all((row == tok.eot_id).any() for row in ids)
    coca = model.objectives["coca"]
    model.eval()
    image_tokens = model.towers["image"].forward_tokens(images)
    for i in range(3):  # beam search with one beam is greedy decoding
        beam = coca._beam(image_tokens[i:i + 1], 16, 1, 0.6)
        assert torch.equal(beam, ids[i, :len(beam)])
    texts = generate_captions(model, images, tok, beams=3)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    with pytest.raises(ConfigError, match="no coca objective"):
        generate_captions(torch.nn.Linear(2, 2), images)


def test_coca_needs_a_causal_text_tower():
    with pytest.raises(ConfigError, match="causal"):
        build_model({"towers": {"image": {"model": "vit_nano_patch4_32"}, "text": {"model": "text_nano", "causal": False}},
                     "objectives": {"coca": {}}})
    assert issubclass(CoCa, torch.nn.Module)


def coca_model(tok, **settings):
    """A fresh CoCa model on the nano towers (the module's fixture model is trained by a test above)."""
    torch.manual_seed(0)
    return build_model({
        "towers": {"image": {"model": "vit_nano_patch4_32", "img_size": 16},
                   "text": {"model": "text_nano", "vocab_size": tok.vocab_size, "context_length": 16}},
        "objectives": {"coca": settings},
    })


def test_caption_fraction_decodes_the_first_quarter_and_its_loss_is_the_full_loss_on_those_rows(setup):
    _, tok, batch = setup  # 16 rows
    model = coca_model(tok, caption_fraction=0.25)
    coca = model.objectives["coca"]
    rows = []
    coca.decoder.blocks[0].register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    features = model.encode(batch)
    quarter = coca(batch, features)
    assert rows == [4]
    coca.caption_fraction = 1.0  # the same weights, every row decoded
    f_img, f_txt = coca.forwards()
    logits = coca.decoder(features[f_txt][:, coca.text_tower.num_prefix_tokens:], features[f_img])
    ids = batch.tokens["text_0"]
    assert quarter.metrics["caption_loss"] == pytest.approx(coca.caption_loss(logits[:4], ids[:4]).item(), rel=1e-5)
    assert quarter.metrics["caption_loss"] != pytest.approx(coca.caption_loss(logits, ids).item(), rel=1e-3)
    # every row: the loss (head run only where a real token follows) is caption_loss over all the logits
    whole = coca(batch, features).metrics
    assert whole["caption_loss"] == pytest.approx(coca.caption_loss(logits, ids).item(), rel=1e-5)
    real = ids[:, 1:] != tok.pad_id
    assert whole["token_acc"] == pytest.approx(float((logits[:, :-1].argmax(-1) == ids[:, 1:])[real].float().mean()))
    # the contrastive term still reads all 16 pairs: the same value with every row decoded
    assert quarter.metrics["contrastive_loss"] == pytest.approx(coca(batch, features).metrics["contrastive_loss"], rel=1e-6)


def test_caption_fraction_rounds_up_and_rejects_shares_outside_0_1(setup):
    _, tok, _ = setup
    coca = coca_model(tok, caption_fraction=0.3).objectives["coca"]
    assert [coca.caption_rows(b) for b in (1, 10, 16, 256)] == [1, 3, 5, 77]
    assert coca_model(tok, caption_fraction=0.25).objectives["coca"].caption_rows(256) == 64
    for bad in (0, 1.5, -0.1, True, "half"):
        with pytest.raises(ConfigError, match="caption_fraction"):
            coca_model(tok, caption_fraction=bad)
