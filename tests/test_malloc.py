"""retain_freed_memory: a training step's big buffers are reused, not page-faulted in anew each step."""

import subprocess
import sys

import pytest

from slimtext.train import malloc

# train_step on a 1-layer encoder with minilm-l6's vocabulary and width: its word-embedding
# gradient is 30,522 x 384 fp32 (45 MiB, 11,446 pages of 4 KiB), allocated and freed every step
SCRIPT = """
import resource, sys, torch
from slimtext.models.encoder import Encoder, EncoderClassifier, EncoderConfig
from slimtext.train.loop import TrainConfig, make_optimizer, make_scheduler, train_step
from slimtext.train.losses import CrossEntropy
from slimtext.train.malloc import retain_freed_memory
if sys.argv[1] == "on":
    assert retain_freed_memory()
torch.manual_seed(0)
config = EncoderConfig(hidden_size=384, num_layers=1, num_heads=6, intermediate_size=512)
model = EncoderClassifier(Encoder(config), num_labels=2)
cfg = TrainConfig(batch_size=32, lr=1e-4, precision="fp32")
opt = make_optimizer(model, cfg)
sched = make_scheduler(opt, cfg, 100)
batch = {"input_ids": torch.randint(1, 30522, (32, 30)), "attention_mask": torch.ones(32, 30, dtype=torch.long),
         "labels": torch.randint(0, 2, (32,))}
for step in range(8):
    if step == 3:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    train_step(model, batch, CrossEntropy(), opt, sched, cfg, list(model.parameters()))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_a_training_step_reuses_its_embedding_gradient_instead_of_faulting_it_in():
    pages = 30522 * 384 * 4 / 4096
    assert faults_per_step("off") > 0.5 * pages  # glibc mmaps it afresh and the kernel zero-fills it
    assert faults_per_step("on") < 0.05 * pages


def test_it_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.setenv("SLIMTEXT_KEEP_FREED_MEMORY", "0")
    assert malloc.retain_freed_memory() is False
