"""Decoder parity with a tiny random `transformers` GPT-2, key-map errors, last-token head."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from slimtext.errors import SlimtextError
from slimtext.models.decoder import Decoder, DecoderClassifier, DecoderConfig, load_decoder

transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)


def tiny_gpt2(cls_name: str = "GPT2Model"):
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(transformers.GPT2Config(**TINY)).eval()


def right_padded(lengths=(11, 6, 1), pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.full((len(lengths), max(lengths)), pad_id)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(1, 99, (n,), generator=g)
        mask[b, :n] = 1
    return ids, mask


def test_parity_with_transformers(tmp_path):
    hf = tiny_gpt2()
    hf.save_pretrained(tmp_path)
    ours = load_decoder(tmp_path)
    ids, mask = right_padded()
    keep = mask.bool()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours(ids, mask)[keep], ref[keep], atol=1e-5, rtol=1e-5)
        full = torch.ones_like(mask)  # no padding: SDPA's is_causal path
        torch.testing.assert_close(ours(ids, full), hf(input_ids=ids, attention_mask=full)[0],
                                   atol=1e-5, rtol=1e-5)


def test_lm_head_checkpoint_with_transformer_prefix(tmp_path):
    hf = tiny_gpt2("GPT2LMHeadModel")
    hf.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    assert any(k.startswith("transformer.") for k in state)
    state["transformer.h.0.attn.bias"] = torch.ones(1, 1, 64, 64)  # as old checkpoints carry
    state["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, tmp_path / "model.safetensors")
    ours = load_decoder(tmp_path)
    ids, mask = right_padded()
    with torch.no_grad():
        ref = hf.transformer(input_ids=ids, attention_mask=mask)[0]
        torch.testing.assert_close(ours(ids, mask)[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-5)


def test_fused_c_attn_is_split_and_transposed(tmp_path):
    hf = tiny_gpt2()
    hf.save_pretrained(tmp_path)
    ours = load_decoder(tmp_path)
    c_attn = hf.h[1].attn.c_attn.weight  # Conv1D (in, 3 * out)
    torch.testing.assert_close(ours.layers[1].attention.key.weight, c_attn[:, 32:64].t())
    torch.testing.assert_close(ours.layers[1].attention.value.bias, hf.h[1].attn.c_attn.bias[64:])
    save_file(ours.state_dict(), tmp_path / "ours.safetensors")  # split tensors own their storage


def test_missing_and_unexpected_keys_are_named(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["h.0.mlp.c_fc.bias"]
    state["h.0.mlp.gate.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(SlimtextError) as err:
        load_decoder(tmp_path)
    assert "missing: h.0.mlp.c_fc.bias" in str(err.value)
    assert "unexpected: h.0.mlp.gate.weight" in str(err.value)


def test_shape_mismatch_is_named(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["wpe.weight"] = torch.zeros(32, 32)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(SlimtextError, match=r"wpe\.weight has shape \(32, 32\)"):
        load_decoder(tmp_path)


def test_classifier_reads_the_last_real_token_whatever_the_padding():
    torch.manual_seed(0)
    config = DecoderConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4,
                           intermediate_size=64, max_position_embeddings=64)
    model = DecoderClassifier(Decoder(config), num_labels=3).eval()
    tokens = torch.tensor([5, 17, 42, 8, 23])
    alone = model(tokens[None], torch.ones(1, 5, dtype=torch.long))
    right = torch.cat([tokens, torch.zeros(4, dtype=torch.long)])[None]  # pad id 0
    left = torch.cat([torch.full((4,), 7), tokens])[None]  # pad id 7: ignored via the mask
    right_mask = torch.tensor([[1] * 5 + [0] * 4])
    left_mask = right_mask.flip(1)
    torch.testing.assert_close(model(right, right_mask), alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(left, left_mask), alone, atol=1e-5, rtol=1e-5)
    # in a mixed batch every row uses its own last real token
    ids, mask = right_padded()
    hidden = model.decoder(ids, mask)
    expected = model.classifier(hidden[torch.arange(3), torch.tensor([10, 5, 0])])
    torch.testing.assert_close(model(ids, mask), expected)
    assert model(ids, mask).shape == (3, 3)
    with pytest.raises(SlimtextError, match="last real token"):
        DecoderClassifier(model.decoder, 2, pooling="mean")


def test_config_from_hf_and_round_trip():
    config = DecoderConfig.from_hf(transformers.GPT2Config(**TINY).to_dict())
    assert (config.hidden_size, config.intermediate_size, config.num_layers) == (32, 128, 2)
    assert DecoderConfig.from_dict(config.to_dict()) == config
    with pytest.raises(SlimtextError, match="not a decoder"):
        DecoderConfig.from_hf({"model_type": "bert"})
