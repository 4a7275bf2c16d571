"""Layer-selected students for `slimtext distill`: which teacher layers a student keeps, and the
student built from them.

Layer numbers are **1-based**, as papers count them: for a 12-layer teacher `odd` is 1,3,...,11 and
`even` is 2,4,...,12; they become 0-based only at `Encoder.from_layers`. The recipe that trains a
student is `slimtext.recipes.distill`; `slimtext.checkpoint` rebuilds a finished one.

References:
- Sanh et al. 2019, DistilBERT (a student initialised from every other teacher layer),
  arXiv:1910.01108
- Sajjad et al. 2023, On the Effect of Dropping Layers of Pre-trained Transformer Models
  (odd / even / top / bottom layer dropping), arXiv:2004.03844
"""

from __future__ import annotations

from torch import nn

from slimtext.errors import SlimtextError, UnknownNameError
from slimtext.models.encoder import Encoder, EncoderClassifier
from slimtext.models.lora import LoRALinear, merged_copy

NAMED_SELECTIONS = ("odd", "even", "first", "last")


# --- which layers ---------------------------------------------------------------------------------


def parse_student_layers(
    spec: str, teacher_layers: int, student_layers: int | None = None
) -> list[int]:
    """The teacher layers a student keeps, as sorted **1-based** layer numbers (1 = lowest layer).

    `odd` = 1,3,5,... and `even` = 2,4,6,... (12 layers: 1..11 / 2..12; 6 layers: 1,3,5 / 2,4,6);
    `first` = 1..k and `last` = the top k layers, where k is `student_layers`, or the `:K` suffix
    (`first:4`), or teacher_layers // 2; or an explicit increasing list like `1,4,7`.
    """
    n = teacher_layers
    name, _, suffix = spec.strip().lower().partition(":")
    if suffix:
        if not suffix.isdigit():
            raise SlimtextError(
                f"student layers {spec!r}: write {name}:K with K a number of layers"
            )
        if student_layers is not None and student_layers != int(suffix):
            raise SlimtextError(
                f"student layers {spec!r} disagrees with student_layers={student_layers}"
            )
        student_layers = int(suffix)
    if name in ("odd", "even"):
        ids = list(range(1 if name == "odd" else 2, n + 1, 2))
        if student_layers is not None and student_layers != len(ids):
            raise SlimtextError(
                f"{name} picks {len(ids)} of the teacher's {n} layers, not {student_layers}; "
                "for another count use first:K, last:K or an explicit list like 1,4,7"
            )
    elif name in ("first", "last"):
        k = n // 2 if student_layers is None else student_layers
        if not 1 <= k <= n:
            raise SlimtextError(
                f"a {name} student needs 1..{n} layers (the teacher has {n}); got {k}"
            )
        ids = list(range(1, k + 1)) if name == "first" else list(range(n - k + 1, n + 1))
    else:
        if suffix:
            raise UnknownNameError("layer selection", name, list(NAMED_SELECTIONS))
        ids = _explicit_layers(spec, n)
    if not ids:
        raise SlimtextError(f"{spec!r} selects no layer of a {n}-layer teacher")
    return ids


def _explicit_layers(spec: str, n: int) -> list[int]:
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise SlimtextError(
            f"student layers {spec!r}: use odd, even, first[:K], last[:K] or a comma list of "
            f"1-based layer numbers like 1,4 (the teacher has layers 1..{n})"
        )
    ids = [int(p) for p in parts]
    if 0 in ids:
        raise SlimtextError(
            f"student layers {spec!r}: layers are numbered from 1 (1..{n}), not from 0"
        )
    out = [i for i in ids if i > n]
    if out:
        raise SlimtextError(
            f"student layers {spec!r}: {out} out of range; the teacher has layers 1..{n}"
        )
    if len(set(ids)) != len(ids):
        raise SlimtextError(f"student layers {spec!r}: a layer is listed twice")
    if ids != sorted(ids):
        raise SlimtextError(f"student layers {spec!r}: list the layers in increasing order")
    return ids


# --- building the student -------------------------------------------------------------------------


def layer_student(
    teacher: nn.Module, layers: list[int], num_labels: int, dropout: float = 0.1
) -> EncoderClassifier:
    """A shallower `EncoderClassifier` initialised from `teacher`: embeddings, MPNet relative bias
    and the teacher layers numbered `layers` (**1-based**) in order, plus copies of the teacher's
    pooler and classifier head. Everything is a copy; a LoRA teacher is merged first."""
    if any(isinstance(m, LoRALinear) for m in teacher.modules()):
        teacher = merged_copy(teacher)
    require_encoder(teacher)
    if teacher.classifier.out_features != num_labels:
        raise SlimtextError(
            f"the teacher has {teacher.classifier.out_features} labels, the data {num_labels}"
        )
    encoder = Encoder.from_layers(teacher.encoder, [i - 1 for i in layers])  # 1-based -> 0-based
    encoder.requires_grad_(True)  # a head/LoRA teacher's frozen flags do not carry over
    student = EncoderClassifier(encoder, num_labels, dropout=dropout, pooling=teacher.pooling)
    student.classifier.load_state_dict(teacher.classifier.state_dict())
    return student.train()


def require_encoder(teacher: nn.Module) -> None:
    if not isinstance(teacher, EncoderClassifier):
        raise SlimtextError(
            "a layer-selected student needs a BERT/MPNet encoder teacher, not "
            f"{type(teacher).__name__}; distill this teacher into an RNN instead "
            "(--student lstm, gru or rnn)"
        )
