import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from slimtext.errors import SlimtextError
from slimtext.models.lora import (
    LoRAConfig,
    LoRALinear,
    inject,
    load_lora_state_dict,
    lora_state_dict,
    merge_all,
    merged_copy,
    unmerge_all,
)


class Attention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.query, self.key, self.value, self.output = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        att = (self.query(x) @ self.key(x).transpose(1, 2)).softmax(-1)  # (B, T, T)
        return self.output(att @ self.value(x))


class FFN(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.intermediate, self.output = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return self.output(torch.relu(self.intermediate(x)))


class Layer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attention, self.ffn = Attention(d), FFN(d)

    def forward(self, x):
        x = x + self.attention(x)
        return x + self.ffn(x)


class TinyClassifier(nn.Module):
    """Same linear names as slimtext's encoders; called as model(input_ids, attention_mask)."""

    def __init__(self, vocab=50, d=16, n_layers=2, n_labels=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Layer(d) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d)
        self.classifier = nn.Linear(d, n_labels)

    def forward(self, input_ids, attention_mask):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(self.norm(x)[:, 0])


def _batch(vocab=50, b=3, t=7):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (b, t), generator=g), torch.ones(b, t, dtype=torch.long)


def _randomize_B(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.5)


def _tiny_bert(cls_name="BertModel"):
    import transformers

    cfg = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=32, num_labels=3,
    )
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(cfg).eval()


# --- 1. the layer itself --------------------------------------------------------------------


def test_init_output_unchanged_and_merge_roundtrip():
    torch.manual_seed(0)
    base = nn.Linear(10, 20)
    x = torch.randn(4, 10)
    ref, w0 = base(x).detach(), base.weight.detach().clone()
    layer = LoRALinear(base, rank=4, alpha=8)
    assert layer.lora_A.shape == (4, 10) and layer.lora_B.shape == (20, 4)
    assert layer.scaling == 2.0 and not base.weight.requires_grad
    assert_close(layer(x), ref, rtol=0, atol=0)  # B is zero at init

    _randomize_B(layer)
    unmerged = layer(x).detach()
    assert not torch.allclose(unmerged, ref)
    layer.merge()
    layer.merge()  # no-op when merged
    assert layer.merged
    assert_close(layer(x), unmerged, rtol=1e-5, atol=1e-5)
    layer.unmerge()
    layer.unmerge()  # no-op when not merged
    assert_close(base.weight, w0, rtol=1e-6, atol=1e-6)
    assert_close(layer(x), unmerged)


def test_rslora_scaling_and_dropout_in_train_only():
    layer = LoRALinear(nn.Linear(10, 20), rank=4, alpha=8, rslora=True, dropout=0.5)
    assert layer.scaling == 4.0
    _randomize_B(layer)
    x = torch.randn(64, 10)
    layer.eval()
    assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


def test_only_lora_and_head_get_gradients():
    model = TinyClassifier()
    wrapped = inject(model, LoRAConfig(rank=2, targets="query,value"))
    assert wrapped == [f"layers.{i}.attention.{n}" for i in range(2) for n in ("query", "value")]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{w}.lora_{ab}" for w in wrapped for ab in "AB"} | {
        "classifier.weight", "classifier.bias"
    }
    _randomize_B(model)  # so A gets a nonzero gradient too
    model(*_batch()).sum().backward()
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def test_merge_all_unmerge_all_on_model():
    model = TinyClassifier()
    inject(model, LoRAConfig(rank=2, targets="all-linear"))
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    _randomize_B(model)
    batch = _batch()
    with torch.no_grad():
        out = model(*batch)
        merge_all(model)
        assert_close(model(*batch), out, rtol=1e-5, atol=1e-5)
        unmerge_all(model)
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert_close(p, base[n], rtol=1e-6, atol=1e-6)


# --- 2. parity with peft ---------------------------------------------------------------------


def _copy_from_peft(ours, peft_model, wrapped):
    """Give peft's B random values, then copy peft's A/B into our wrappers."""
    inner = peft_model.base_model.model
    with torch.no_grad():
        for name in wrapped:
            theirs, mine = inner.get_submodule(name), ours.get_submodule(name)
            theirs.lora_B["default"].weight.normal_(std=0.5)
            mine.lora_A.copy_(theirs.lora_A["default"].weight)  # (r, in)
            mine.lora_B.copy_(theirs.lora_B["default"].weight)  # (out, r)


def _check_grads(ours, peft_model, wrapped):
    inner = peft_model.base_model.model
    for name in wrapped:
        theirs, mine = inner.get_submodule(name), ours.get_submodule(name)
        assert_close(mine.lora_A.grad, theirs.lora_A["default"].weight.grad, rtol=1e-5, atol=1e-5)
        assert_close(mine.lora_B.grad, theirs.lora_B["default"].weight.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rslora", [False, True])
def test_parity_with_peft_bert(rslora):
    peft = pytest.importorskip("peft")
    bert = _tiny_bert()
    ours, theirs = copy.deepcopy(bert), copy.deepcopy(bert)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0, use_rslora=rslora))
    wrapped = inject(ours, LoRAConfig(rank=4, alpha=8, targets="query,value", rslora=rslora))
    assert len(wrapped) == 4 and all(w.rpartition(".")[2] in ("query", "value") for w in wrapped)
    _copy_from_peft(ours, theirs, wrapped)

    ids, mask = _batch(vocab=60)
    out_ours = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    out_theirs = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
    assert not torch.allclose(out_ours, bert(input_ids=ids, attention_mask=mask).last_hidden_state)
    assert_close(out_ours, out_theirs, rtol=1e-5, atol=1e-5)
    out_ours.pow(2).mean().backward()
    out_theirs.pow(2).mean().backward()
    _check_grads(ours, theirs, wrapped)
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == {
        n.removeprefix("base_model.model.").replace(".default.weight", "")
        for n, p in theirs.named_parameters() if p.requires_grad
    }


def test_parity_with_peft_sequential():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 5))
    ours, theirs = copy.deepcopy(net), copy.deepcopy(net)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(
        r=3, lora_alpha=6, target_modules=["0", "2"], lora_dropout=0.0))
    wrapped = inject(ours, LoRAConfig(rank=3, alpha=6, targets="0,2"))
    assert wrapped == ["0", "2"]
    _copy_from_peft(ours, theirs, wrapped)
    x = torch.randn(8, 10)
    out_ours, out_theirs = ours(x), theirs(x)
    assert_close(out_ours, out_theirs, rtol=1e-5, atol=1e-5)
    out_ours.sum().backward()
    out_theirs.sum().backward()
    _check_grads(ours, theirs, wrapped)


# --- 3. adapter files ------------------------------------------------------------------------


def test_adapter_roundtrip_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = LoRAConfig(rank=2, alpha=4, targets="query,value,intermediate")
    torch.manual_seed(0)
    base = TinyClassifier()
    trained, fresh = copy.deepcopy(base), copy.deepcopy(base)
    inject(trained, cfg)
    _randomize_B(trained)
    with torch.no_grad():
        trained.classifier.weight.add_(1.0)  # the head trains fully
    sd = lora_state_dict(trained)
    assert set(sd) == {n for n, p in trained.named_parameters() if p.requires_grad}
    assert "classifier.weight" in sd and not any(".base." in k for k in sd)
    save_file(sd, tmp_path / "adapter.safetensors")

    inject(fresh, cfg)
    load_lora_state_dict(fresh, load_file(tmp_path / "adapter.safetensors"))
    batch = _batch()
    with torch.no_grad():
        assert_close(fresh(*batch), trained(*batch), rtol=0, atol=0)


def test_load_errors_name_the_key():
    cfg = LoRAConfig(rank=2)
    model = TinyClassifier()
    inject(model, cfg)
    sd = lora_state_dict(model)
    broken = {k: v for k, v in sd.items() if k != "layers.1.attention.value.lora_B"}
    with pytest.raises(SlimtextError, match=r"missing keys: layers\.1\.attention\.value\.lora_B"):
        load_lora_state_dict(model, broken)
    with pytest.raises(SlimtextError, match="unexpected keys: extra.weight"):
        load_lora_state_dict(model, {**sd, "extra.weight": torch.zeros(1)})
    bad_shape = {**sd, "layers.0.attention.query.lora_A": torch.zeros(3, 16)}
    with pytest.raises(SlimtextError, match=r"shape mismatch: layers\.0\.attention\.query\.lora_A"):
        load_lora_state_dict(model, bad_shape)


# --- 4. targets ------------------------------------------------------------------------------


def test_bad_target_lists_valid_names():
    model = TinyClassifier()
    with pytest.raises(SlimtextError) as e:
        inject(model, LoRAConfig(targets="query,vaule"))
    msg = str(e.value)
    assert "'vaule'" in msg and "Did you mean 'value'" in msg
    for name in ("query", "key", "value", "output", "intermediate", "layers.0.attention.query"):
        assert name in msg
    assert "classifier" not in msg.replace("'classifier' head", "")
    assert not any(isinstance(m, LoRALinear) for m in model.modules())  # nothing half-done


def test_bad_target_on_hf_bert_lists_its_names():
    pytest.importorskip("transformers")
    with pytest.raises(SlimtextError, match=r"Valid targets: dense, key, query, value"):
        inject(_tiny_bert(), LoRAConfig(targets="intermediate"))


def test_classifier_never_wrapped():
    model = TinyClassifier()
    wrapped = inject(model, LoRAConfig(targets="all-linear"))
    assert len(wrapped) == 12 and isinstance(model.classifier, nn.Linear)
    assert not isinstance(model.classifier, LoRALinear)
    assert model.classifier.weight.requires_grad
    with pytest.raises(SlimtextError, match="already has LoRA"):
        inject(model, LoRAConfig())


def test_classifier_never_wrapped_hf():
    pytest.importorskip("transformers")
    model = _tiny_bert("BertForSequenceClassification")
    wrapped = inject(model, LoRAConfig(targets="all-linear"))
    assert "bert.pooler.dense" in wrapped and not any("classifier" in w for w in wrapped)
    assert type(model.classifier) is nn.Linear and model.classifier.weight.requires_grad
    with pytest.raises(SlimtextError, match="'classifier' head is never wrapped"):
        inject(_tiny_bert("BertForSequenceClassification"), LoRAConfig(targets="classifier"))


# --- 5. export -------------------------------------------------------------------------------


def test_merged_copy():
    model = TinyClassifier()
    inject(model, LoRAConfig(rank=2, targets="all-linear"))
    _randomize_B(model)
    plain = merged_copy(model)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert not any("lora_" in n for n, _ in plain.named_parameters())
    assert set(plain.state_dict()) == set(TinyClassifier().state_dict())
    batch = _batch()
    with torch.no_grad():
        assert_close(plain(*batch), model(*batch), rtol=1e-5, atol=1e-5)
    assert not any(m.merged for m in model.modules() if isinstance(m, LoRALinear))
