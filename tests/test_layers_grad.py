"""The hand-written backward passes of supernet/layers.py checked against autograd."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from supernet.layers import _DepthwiseConv3x3, _tiny_weight_grad, conv2d
from supernet.train.precision import cpu_has_native_bf16


@pytest.mark.parametrize("size", [1, 2, 3, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_gradcheck(size, stride):
    g = torch.Generator().manual_seed(size * 10 + stride)
    x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: _DepthwiseConv3x3.apply(x, w, b, stride), (x, w, b))


@pytest.mark.parametrize("size, stride", [(1, 1), (2, 1), (2, 2), (3, 2), (4, 1)])
def test_tiny_weight_grad_matches_autograd(size, stride):
    x = torch.randn(4, 5, size, size)
    w = torch.randn(5, 1, 3, 3, requires_grad=True)
    out = F.conv2d(x, w, None, stride, 1, 1, 5)
    grad = torch.randn_like(out)
    (expected,) = torch.autograd.grad(out, w, grad)
    assert torch.allclose(_tiny_weight_grad(x, grad, stride), expected, atol=1e-5)


@pytest.mark.parametrize("size", [1, 2, 8])
def test_conv2d_shortcuts_match_fconv2d(size):
    x = torch.randn(3, 6, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d(x, w, b, (1, 1), (0, 0)), (x, w, b))
    ours = conv2d(x, w, b, (1, 1), (0, 0))
    assert torch.allclose(ours, F.conv2d(x, w, b), atol=1e-10)


@pytest.mark.skipif(not cpu_has_native_bf16(), reason="needs a CPU with native bf16")
@pytest.mark.parametrize("size, stride", [(2, 1), (8, 1), (8, 2)])
def test_depthwise_under_bf16_autocast(size, stride):
    x = torch.randn(4, 8, size, size, requires_grad=True)
    w = torch.randn(8, 1, 3, 3, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _DepthwiseConv3x3.apply(x, w, b, stride)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    got = [t.grad.clone() for t in (x, w, b)]
    assert [g.dtype for g in got] == [torch.float32] * 3
    for t in (x, w, b):
        t.grad = None
    F.conv2d(x, w, b, stride, 1, 1, 8).square().sum().backward()
    for g, t in zip(got, (x, w, b)):
        assert torch.allclose(g, t.grad, rtol=0.05, atol=0.05 * float(t.grad.abs().max()))
