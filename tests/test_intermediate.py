"""Intermediate-layer distillation on tiny encoders: the recording forward (`Taps`) gives the plain
forward's numbers; each loss (hidden MSE, attention KL, MiniLM relation KL, LayerKD) is zero when
student = teacher, and its gradient reaches the student (and the projection) but never the teacher."""

from __future__ import annotations

import pytest
import torch

from slimtext.errors import SlimtextError
from slimtext.models.encoder import Encoder, EncoderClassifier, EncoderConfig, Taps
from slimtext.train.losses import AttentionKL, HiddenMSE, KDLoss, LayerKD, RelationKL


def config(hidden=16, heads=2, layers=3, family="bert") -> EncoderConfig:
    return EncoderConfig(family=family, vocab_size=50, hidden_size=hidden, num_layers=layers, num_heads=heads,
                         intermediate_size=24, max_position_embeddings=64, hidden_dropout=0.0,
                         attention_dropout=0.0)


def batch(lengths=(9, 5, 2)):
    g = torch.Generator().manual_seed(3)
    T = max(lengths)
    ids, mask = torch.zeros(len(lengths), T, dtype=torch.long), torch.zeros(len(lengths), T, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(3, 50, (n,), generator=g)
        mask[b, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 0]),
            "index": torch.arange(len(lengths))}


def encoder(seed=0, **kw) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(config(**kw))


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_recorded_forward_gives_the_plain_forwards_numbers(family):
    enc, b = encoder(family=family), batch()
    enc.train()
    plain = enc(b["input_ids"], b["attention_mask"])
    enc.taps = Taps(attention=True)
    recorded = enc(b["input_ids"], b["attention_mask"])
    torch.testing.assert_close(recorded, plain)
    assert len(enc.taps.hidden) == 3 and len(enc.taps.layers) == 3
    assert enc.taps.layers[0]["attention"].shape == (3, 2, 9, 9)  # (B, nh, T, T)
    torch.testing.assert_close(enc.taps.hidden[-1], plain)
    torch.testing.assert_close(enc.taps.layers[1]["attention"].sum(-1), torch.ones(3, 2, 9))
    enc.eval()
    enc.taps.clear()
    enc(b["input_ids"], b["attention_mask"])
    assert not enc.taps.hidden, "eval forwards record nothing unless in_eval"


def grads(module):
    return [p.grad for p in module.parameters()]


def test_hidden_mse_zero_on_equal_states_and_gradient_to_projection_and_student_only():
    enc, b = encoder(), batch()
    enc.taps = Taps()
    enc.train()(b["input_ids"], b["attention_mask"])
    same = HiddenMSE(16, 16)
    assert same(enc.taps.hidden, [h.detach() for h in enc.taps.hidden], b["attention_mask"]).item() == 0.0
    student, teacher = encoder(1, hidden=8), encoder(2)
    student.taps, teacher.taps = Taps(), Taps(in_eval=True)
    student.train()(b["input_ids"], b["attention_mask"])
    teacher.eval()(b["input_ids"], b["attention_mask"])
    loss = HiddenMSE(8, 16)
    out = loss(student.taps.hidden, teacher.taps.hidden, b["attention_mask"])
    out.backward()
    assert out.item() > 0 and isinstance(loss.proj, torch.nn.Linear)
    assert loss.proj.weight.grad is not None and loss.proj.weight.grad.abs().sum() > 0
    assert student.layers[0].ffn.output.weight.grad.abs().sum() > 0
    assert all(g is None for g in grads(teacher)), "the teacher got a gradient"


def test_attention_and_relation_kl_zero_on_equal_and_gradient_to_student_only():
    b = batch()
    student, teacher = encoder(1), encoder(2)
    student.taps, teacher.taps = Taps(attention=True), Taps(attention=True, in_eval=True)
    student.train()(b["input_ids"], b["attention_mask"])
    teacher.eval()(b["input_ids"], b["attention_mask"])
    s_att = [r["attention"] for r in student.taps.layers]
    mask = b["attention_mask"]
    assert AttentionKL()(s_att, [a.detach() for a in s_att], mask).abs().item() < 1e-6
    rel = RelationKL(heads=4)
    last = student.taps.layers[-1]
    assert rel(last, {k: v.detach() for k, v in last.items()}, mask).abs().item() < 1e-6
    out = AttentionKL()(s_att, [r["attention"] for r in teacher.taps.layers], mask) + rel(last, teacher.taps.layers[-1], mask)
    out.backward()
    assert out.item() > 0
    assert student.layers[0].attention.query.weight.grad.abs().sum() > 0
    assert student.layers[-1].attention.value.weight.grad.abs().sum() > 0
    assert all(g is None for g in grads(teacher))
    with pytest.raises(SlimtextError, match="as many heads"):
        AttentionKL()([torch.zeros(1, 2, 3, 3)], [torch.zeros(1, 4, 3, 3)], torch.ones(1, 3))


def test_relation_kl_compares_models_of_different_widths():
    b = batch()
    small, big = encoder(1, hidden=8), encoder(2, hidden=16, heads=4)
    small.taps, big.taps = Taps(attention=True), Taps(attention=True, in_eval=True)
    small.train()(b["input_ids"], b["attention_mask"])
    big.eval()(b["input_ids"], b["attention_mask"])
    out = RelationKL(heads=4)(small.taps.layers[-1], big.taps.layers[-1], b["attention_mask"])
    assert out.item() > 0 and torch.isfinite(out)


def layer_kd(student_cls, teacher_cls, source, **weights):
    logits = torch.zeros(3, 2)
    return LayerKD(KDLoss(logits, alpha=0.5), teacher_cls.encoder, student_cls.encoder, source,
                   relation_heads=2, **weights)


def test_layer_kd_is_kd_alone_when_the_student_equals_the_teacher():
    torch.manual_seed(0)
    teacher = EncoderClassifier(Encoder(config()), 2, dropout=0.0)
    student = EncoderClassifier(Encoder.from_layers(teacher.encoder, [0, 1, 2]), 2, dropout=0.0)
    b = batch()
    loss = layer_kd(student, teacher, [0, 1, 2], hidden_weight=1.0, attention_weight=1.0, relation_weight=1.0)
    logits = student.train()(b["input_ids"], b["attention_mask"])
    kd_only = loss.kd(logits, b)
    total = loss(logits, b)
    torch.testing.assert_close(total, kd_only)
    assert set(loss.last_terms) == {"hidden", "attention", "relation"}
    assert all(abs(v) < 1e-6 for v in loss.last_terms.values())
    # compared with other teacher layers than their sources, the same student is not at zero
    loss2 = layer_kd(student, teacher, [1, 2, 0], hidden_weight=1.0, attention_weight=1.0)
    loss2(student(b["input_ids"], b["attention_mask"]), b)
    assert loss2.last_terms["hidden"] > 0 and loss2.last_terms["attention"] > 0


def test_layer_kd_gradient_reaches_the_student_never_the_teacher():
    torch.manual_seed(0)
    teacher = EncoderClassifier(Encoder(config()), 2, dropout=0.0)
    student = EncoderClassifier(Encoder.from_layers(teacher.encoder, [0, 2]), 2, dropout=0.0)
    with torch.no_grad():
        for p in student.encoder.layers.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = batch()
    loss = layer_kd(student, teacher, [0, 2], hidden_weight=1.0, attention_weight=1.0, relation_weight=1.0)
    assert all(not p.requires_grad for p in teacher.encoder.parameters())
    out = loss(student.train()(b["input_ids"], b["attention_mask"]), b)
    out.backward()
    assert all(v > 0 for v in loss.last_terms.values())
    assert student.encoder.layers[0].attention.key.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.encoder.parameters())
    assert not loss.teacher.training
    loss.train()
    assert not loss.teacher.training, "the teacher stays in eval mode (no dropout)"
    # an evaluation forward records nothing: the loss is the KD term alone
    student.eval()
    logits = student(b["input_ids"], b["attention_mask"])
    torch.testing.assert_close(loss(logits, b), loss.kd(logits, b))


def test_a_projection_of_a_narrower_student_trains_and_resumes_exactly(tmp_path):
    """HiddenMSE's projection (student 8 wide, teacher 16) is a parameter of the loss, not of the
    model: `fit` must train it with the student and checkpoint it for an exact resume."""
    from slimtext.data.batches import EncodedSplit
    from slimtext.rundir import RunDir
    from slimtext.train.loop import TrainConfig, fit

    g = torch.Generator().manual_seed(5)
    ids = [torch.randint(3, 50, (int(n),), generator=g).tolist() for n in torch.randint(2, 12, (24,), generator=g)]
    train = EncodedSplit(ids, torch.randint(0, 2, (24,), generator=g))
    dev = EncodedSplit(ids[:8], train.labels[:8])
    torch.manual_seed(0)
    teacher = EncoderClassifier(Encoder(config(hidden=16, heads=2, layers=2)), 2, dropout=0.0)
    cached = torch.randn(24, 2, generator=g)
    cfg = TrainConfig(epochs=2, batch_size=6, lr=1e-2, seed=1, threads=1, precision="fp32")

    def run(out, stop_after_first=False, resume=False):
        torch.manual_seed(7)
        student = EncoderClassifier(Encoder(config(hidden=8, heads=2, layers=2)), 2, dropout=0.0)
        loss = LayerKD(KDLoss(cached, alpha=0.5), teacher.encoder, student.encoder, [0, 1], hidden_weight=1.0)
        start = loss.hidden.proj.weight.detach().clone()

        def hook(point, st):
            if stop_after_first and point == "cleaned" and st.epoch == 1:
                raise KeyboardInterrupt

        try:
            fit(student, train, dev, cfg, RunDir(out), 2, loss_fn=loss, resume=resume, quiet=True, hook=hook)
        except KeyboardInterrupt:
            pass
        return student, loss, start

    whole, whole_loss, start = run(tmp_path / "a")
    assert not torch.allclose(whole_loss.hidden.proj.weight, start), "the projection never trained"
    run(tmp_path / "b", stop_after_first=True)
    assert len(RunDir(tmp_path / "b").read_metrics()) == 1  # stopped after epoch 1's commit
    resumed, resumed_loss, _ = run(tmp_path / "b", resume=True)
    torch.testing.assert_close(resumed_loss.hidden.proj.weight, whole_loss.hidden.proj.weight)
    for (n, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)
