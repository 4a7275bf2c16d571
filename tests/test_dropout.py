"""The cheaper CPU dropout mask (`slimtext.models.dropout`): its rate, scaling, gradient and
reproducibility, and the encoder's attention dropout that uses it."""

from __future__ import annotations

import pytest
import torch

from slimtext.models.dropout import Dropout, dropout, keep_mask
from slimtext.models.encoder import Encoder, EncoderConfig


@pytest.mark.parametrize("p", [0.1, 0.5, 0.02])
def test_keep_rate_is_one_minus_p_at_every_16_bit_position(p):
    torch.manual_seed(0)
    n = 1 << 20
    keep = keep_mask((n,), p).float()
    expected = 1 - round(p * 65536) / 65536
    sigma = (expected * (1 - expected) / n) ** 0.5
    assert abs(keep.mean().item() - expected) < 5 * sigma
    # each 64-bit draw is cut into four 16-bit numbers: every quarter must be uniform, including
    # the top one (a draw that never set its sign bit would keep every fourth element)
    for k in range(4):
        part = keep[k::4]
        assert abs(part.mean().item() - expected) < 5 * (expected * (1 - expected) / len(part)) ** 0.5


def test_odd_sized_shapes_and_neighbours_are_independent():
    torch.manual_seed(1)
    keep = keep_mask((3, 5, 7), 0.5)
    assert keep.shape == (3, 5, 7) and keep.dtype == torch.bool
    flat = keep_mask((1 << 18,), 0.5).float()
    both = (flat[:-1] * flat[1:]).mean().item()  # P(two neighbours kept) = 0.25 if independent
    assert abs(both - 0.25) < 0.005


def test_dropout_scales_kept_values_and_passes_the_gradient_through_the_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.25, True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.75)
    ones = torch.ones(1 << 18)
    assert abs(dropout(ones, 0.1).mean().item() - 1.0) < 0.005  # expectation preserved


def test_eval_mode_and_zero_rate_are_the_identity_and_bf16_keeps_its_dtype():
    x = torch.randn(8, 9)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    module = Dropout(0.3).eval()
    assert module(x) is x and "p=0.3" in repr(module)
    assert dropout(x.bfloat16(), 0.1).dtype == torch.bfloat16


def test_masks_follow_torch_manual_seed():
    torch.manual_seed(3)
    a = keep_mask((1000,), 0.1)
    torch.manual_seed(3)
    b = keep_mask((1000,), 0.1)
    c = keep_mask((1000,), 0.1)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_encoder_attention_dropout_is_seeded_and_the_eval_path_unchanged():
    config = EncoderConfig(family="bert", vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                           intermediate_size=24, max_position_embeddings=64, hidden_dropout=0.0,
                           attention_dropout=0.5)
    torch.manual_seed(0)
    enc = Encoder(config)
    ids = torch.randint(5, 50, (2, 11))
    mask = torch.ones_like(ids)
    enc.train()
    torch.manual_seed(7)
    a = enc(ids, mask)
    torch.manual_seed(7)
    b = enc(ids, mask)
    c = enc(ids, mask)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-3  # attention probabilities were dropped
    enc.eval()
    torch.testing.assert_close(enc(ids, mask), enc(ids, mask))  # eval: no dropout (SDPA path)


def test_attention_with_dropout_keeps_the_compute_dtype_and_matches_sdpa():
    """The spelled-out training path: with p=0 it is SDPA's attention; under bf16 autocast every
    (B, nh, Tq, T) tensor stays bf16 (the fp32 mask would otherwise promote scores and softmax),
    and fp32's -3.4e38 padding value, which rounds to -inf in bf16, gives no NaN."""
    import torch.nn.functional as F

    from slimtext.models.encoder import _attention_with_dropout

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8) for _ in range(3))
    keep = torch.ones(2, 1, 1, 9)
    keep[1, ..., 6:] = 0  # the second row's last three keys are padding
    mask = (1.0 - keep) * torch.finfo(torch.float32).min  # (B, 1, 1, T), as the encoder builds it
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(_attention_with_dropout(q, k, v, mask, 0.0), want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _attention_with_dropout(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, 0.0)
    assert got.dtype == torch.bfloat16 and not got.isnan().any()
    torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=3e-2)
    torch.manual_seed(3)
    dropped = _attention_with_dropout(q, k, v, mask, 0.5)
    assert not dropped.isnan().any() and (dropped - want).abs().max() > 1e-2
