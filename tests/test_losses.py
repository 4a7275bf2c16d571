"""KDLoss against hand-computed values: the alpha ends (pure CE, pure T^2 * KL), a 2 x 3 case
written out with explicit formulas, row selection by `index`, and the gradient's size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from slimtext.errors import SlimtextError
from slimtext.train.losses import CrossEntropy, KDLoss

STUDENT = [[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]]
TEACHER = [[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
LABELS = [1, 2]


def batch(labels=LABELS, index=None) -> dict:
    n = len(labels)
    return {
        "labels": torch.tensor(labels),
        "index": torch.arange(n) if index is None else torch.tensor(index),
    }


def softmax(row: list[float], T: float = 1.0) -> list[float]:
    z = [math.exp(v / T) for v in row]
    return [v / sum(z) for v in z]


def by_hand(alpha: float, T: float) -> float:
    """alpha * T^2 * mean_i sum_c p_ic (log p_ic - log q_ic)
    + (1 - alpha) * mean_i -log softmax(s_i)[y_i],
    with p = softmax(teacher / T), q = softmax(student / T)."""
    kl = ce = 0.0
    for s, t, y in zip(STUDENT, TEACHER, LABELS):
        p, q = softmax(t, T), softmax(s, T)
        kl += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q))
        ce += -math.log(softmax(s)[y])
    n = len(LABELS)
    return alpha * T**2 * kl / n + (1 - alpha) * ce / n


def test_alpha_zero_is_cross_entropy():
    s = torch.tensor(STUDENT)
    loss = KDLoss(torch.tensor(TEACHER), alpha=0.0, temperature=2.0)(s, batch())
    torch.testing.assert_close(loss, F.cross_entropy(s, torch.tensor(LABELS)))
    torch.testing.assert_close(loss, CrossEntropy()(s, batch()))
    assert loss.item() == pytest.approx(by_hand(0.0, 2.0), rel=1e-6)


def test_hand_computed_two_examples_three_classes():
    loss = KDLoss(torch.tensor(TEACHER), alpha=0.5, temperature=2.0)(torch.tensor(STUDENT), batch())
    assert loss.item() == pytest.approx(by_hand(0.5, 2.0), rel=1e-6)
    assert loss.item() == pytest.approx(0.72562, abs=1e-5)  # the value by_hand gives, pinned


def test_alpha_one_is_pure_t_squared_kl():
    T = 3.0
    loss = KDLoss(torch.tensor(TEACHER), alpha=1.0, temperature=T)(torch.tensor(STUDENT), batch())
    assert loss.item() == pytest.approx(by_hand(1.0, T), rel=1e-6)
    # labels play no part: any labels give the same loss
    other = KDLoss(torch.tensor(TEACHER), alpha=1.0, temperature=T)(
        torch.tensor(STUDENT), batch([0, 0])
    )
    torch.testing.assert_close(loss, other)
    # a student equal to the teacher has zero soft loss
    same = KDLoss(torch.tensor(TEACHER), alpha=1.0, temperature=T)(torch.tensor(TEACHER), batch())
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_index_picks_the_cached_rows():
    table = torch.randn(5, 3)
    table[3], table[0] = torch.tensor(TEACHER[0]), torch.tensor(TEACHER[1])
    picked = KDLoss(table, 0.7, 2.0)(torch.tensor(STUDENT), batch(index=[3, 0]))
    direct = KDLoss(torch.tensor(TEACHER), 0.7, 2.0)(torch.tensor(STUDENT), batch())
    torch.testing.assert_close(picked, direct)


def test_gradient_of_the_soft_term_is_t_times_q_minus_p():
    """d/ds [T^2 * KL(p || q)] = T * (q - p) / B with p, q the tempered softmaxes: the T^2 factor
    leaves a gradient that shrinks only as 1/T (instead of 1/T^2) for logit differences of a
    given size."""
    T = 4.0
    s = torch.tensor(STUDENT, requires_grad=True)
    KDLoss(torch.tensor(TEACHER), alpha=1.0, temperature=T)(s, batch()).backward()
    p = torch.softmax(torch.tensor(TEACHER) / T, -1)
    q = torch.softmax(torch.tensor(STUDENT) / T, -1)
    torch.testing.assert_close(s.grad, T * (q - p) / len(LABELS))


@pytest.mark.parametrize(("alpha", "T"), [(-0.1, 2.0), (1.5, 2.0), (0.5, 0.0)])
def test_bad_settings_are_user_errors(alpha, T):
    with pytest.raises(SlimtextError, match="kd_alpha|temperature"):
        KDLoss(torch.zeros(2, 3), alpha, T)
