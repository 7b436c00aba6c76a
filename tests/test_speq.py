from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from speq_search import create_model, distillation_loss, quantize_model, speq_loss, stochastic_precision
from speq_search.errors import ConfigError
from speq_search.quant import act_quantizers, calibrating


@pytest.fixture
def qnet():
    torch.manual_seed(0)
    net = create_model("resnet20", num_classes=10, in_channels=1, width=0.25)
    quantize_model(net, w_bits=2, a_bits=2)
    with calibrating(net):
        net(torch.randn(16, 1, 8, 8))
    return net


def _buffers(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_p_high_zero_gives_the_students_logits(qnet):
    x = torch.randn(8, 1, 8, 8)
    qnet.eval()
    student = qnet(x)
    with torch.no_grad(), stochastic_precision(qnet, p_high=0.0, high_bits=8, generator=torch.Generator().manual_seed(1)):
        teacher = qnet(x)
    assert torch.equal(student, teacher)


def test_p_high_one_at_32_bits_equals_every_quantizer_at_32(qnet):
    x = torch.randn(8, 1, 8, 8)
    qnet.eval()
    with torch.no_grad(), stochastic_precision(qnet, p_high=1.0, high_bits=32) as drawn:
        teacher = qnet(x)
    assert set(drawn) == {32}
    targets = [q.bits for q in act_quantizers(qnet)]
    for q in act_quantizers(qnet):
        q.bits = 32
    reference = qnet(x)
    for q, t in zip(act_quantizers(qnet), targets):
        q.bits = t
    assert torch.equal(teacher, reference)
    assert not torch.allclose(teacher, qnet(x))  # and it differs from the 2-bit student


def test_draws_vary_and_are_reproducible_for_a_seed(qnet):
    def draws(seed, n=6):
        g = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(n):
            with stochastic_precision(qnet, p_high=0.5, high_bits=8, generator=g) as drawn:
                out.append(tuple(drawn))
        return out

    first = draws(3)
    assert first == draws(3)
    assert len(set(first)) > 1  # the precision path changes from step to step
    assert first != draws(4)
    assert {b for d in first for b in d} <= {2, 8}


def test_targets_are_restored_on_exit_even_after_an_error(qnet):
    before = [q.bits for q in act_quantizers(qnet)]
    with pytest.raises(RuntimeError), stochastic_precision(qnet, p_high=1.0, high_bits=8):
        raise RuntimeError("boom")
    assert [q.bits for q in act_quantizers(qnet)] == before


@pytest.mark.parametrize("bn_mode", ["batch", "running"])
def test_teacher_pass_in_train_mode_leaves_every_buffer_unchanged(qnet, bn_mode):
    qnet.train()
    qnet(torch.randn(8, 1, 8, 8))  # the student's pass does move BatchNorm statistics
    before = _buffers(qnet)
    with torch.no_grad(), stochastic_precision(qnet, 0.5, 8, torch.Generator().manual_seed(0), bn_mode):
        qnet(torch.randn(8, 1, 8, 8))
        qnet(torch.randn(8, 1, 8, 8))
    after = _buffers(qnet)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert qnet.training and all(m.training for m in qnet.modules())
    assert all(m.track_running_stats for m in qnet.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_teacher_in_train_mode_uses_batch_statistics_by_default(qnet):
    qnet.train()
    x = torch.randn(8, 1, 8, 8) * 3 + 1
    with torch.no_grad(), stochastic_precision(qnet, 0.0, 8):
        batch_stats = qnet(x)
    with torch.no_grad(), stochastic_precision(qnet, 0.0, 8, teacher_bn="running"):
        running_stats = qnet(x)
    qnet.eval()
    assert torch.allclose(running_stats, qnet(x))
    assert not torch.allclose(batch_stats, running_stats)


def test_bad_p_high_is_refused(qnet):
    with pytest.raises(ConfigError, match="p_high"), stochastic_precision(qnet, p_high=1.5):
        pass


# ------------------------------------------------------------------------------ losses
ZT = torch.tensor([[2.0, 0.0, -1.0]])
ZS = torch.tensor([[0.5, 1.0, 0.0]])


def _softmax(v, t=1.0):
    e = [math.exp(a / t) for a in v]
    return [a / sum(e) for a in e]


def _cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize("t", [1.0, 2.0])
def test_cosine_on_probabilities_by_hand(t):
    expected = 1 - _cos(_softmax([2, 0, -1], t), _softmax([0.5, 1, 0], t))
    assert distillation_loss(ZT, ZS, "cosine", t).item() == pytest.approx(expected, rel=1e-5)


def test_cosine_on_logits_by_hand():
    expected = 1 - _cos([2, 0, -1], [0.5, 1, 0])
    assert distillation_loss(ZT, ZS, "cosine-logits").item() == pytest.approx(expected, rel=1e-5)


def test_kl_by_hand():
    t = 2.0
    pt, ps = _softmax([2, 0, -1], t), _softmax([0.5, 1, 0], t)
    expected = t * t * sum(a * math.log(a / b) for a, b in zip(pt, ps))
    assert distillation_loss(ZT, ZS, "kl", t).item() == pytest.approx(expected, rel=1e-5)


def test_identical_logits_give_zero_distillation():
    for kind in ("cosine", "cosine-logits", "kl"):
        assert distillation_loss(ZS, ZS, kind).item() == pytest.approx(0.0, abs=1e-6)


def test_speq_loss_weights_and_teacher_gets_no_gradient():
    zs = ZS.clone().requires_grad_(True)
    zt = ZT.clone().requires_grad_(True)
    y = torch.tensor([1])
    loss = speq_loss(zs, zt, y, ce_weight=0.5, kd_weight=2.0, temperature=1.0)
    expected = 0.5 * F.cross_entropy(ZS, y) + 2.0 * distillation_loss(ZT, ZS)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert zt.grad is None and zs.grad is not None
    assert speq_loss(ZS, None, y).item() == pytest.approx(F.cross_entropy(ZS, y).item())
    assert speq_loss(ZS, ZT, y, kd_weight=0).item() == pytest.approx(F.cross_entropy(ZS, y).item())


def test_unknown_kd_loss_is_refused():
    with pytest.raises(ConfigError, match="kd_loss"):
        distillation_loss(ZT, ZS, "mse")
