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


@pytest.mark.parametrize("size", [1, 2, 8])
def test_conv2d_channels_last_linear_path(size):
    x = torch.randn(3, 6, size, size, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, 6, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: conv2d(x, w, b, (1, 1), (0, 0)), (x, w, b))
    out = conv2d(x, w, b, (1, 1), (0, 0))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, F.conv2d(x, w, b), atol=1e-10)


def _bn_outputs(x, bn):
    from supernet.layers import sliced_batch_norm

    x = x.detach().clone().requires_grad_()
    out = sliced_batch_norm(x, bn, bn.num_features)
    out.backward(torch.sin(torch.arange(out.numel(), dtype=out.dtype)).view(out.shape))
    return out.detach().double(), x.grad.double(), bn.weight.grad.double(), bn.bias.grad.double()


@pytest.mark.parametrize("size", [1, 2, 8])
def test_channels_last_batch_norm_is_the_contiguous_one(size):
    """The training BN of channels-last maps (and 1x1 maps): output, input/weight/bias gradients and running
    statistics as F.batch_norm on the contiguous layout, and no further from float64 (the native channels-last
    kernel loses digits where a channel's mean is large next to its spread)."""
    from supernet.layers import _ChannelsLastBatchNorm

    torch.manual_seed(size)
    x = torch.randn(64, 12, size, size) * 0.5 + 6.0
    x64 = x.double().detach().requires_grad_()
    gy = torch.sin(torch.arange(x.numel(), dtype=torch.float64)).view(x.shape)
    w64 = (torch.rand(12, dtype=torch.float64) + 0.5).requires_grad_()
    b64 = torch.randn(12, dtype=torch.float64).requires_grad_()
    out64, _, _ = _ChannelsLastBatchNorm.apply(x64.contiguous(memory_format=torch.channels_last), w64, b64, 1e-5)
    ref = F.batch_norm(x64, None, None, w64, b64, True, 0.1, 1e-5)
    assert torch.allclose(out64, ref, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x, w, b: _ChannelsLastBatchNorm.apply(x, w, b, 1e-5)[0],
                                    (x64[:3, :4].detach().contiguous(memory_format=torch.channels_last).requires_grad_(),
                                     w64[:4].detach().requires_grad_(), b64[:4].detach().requires_grad_()))
    ref.backward(gy)
    truth = (ref.detach(), x64.grad, w64.grad, b64.grad)
    results = {}
    for layout in ("contiguous", "channels_last"):
        bn = torch.nn.BatchNorm2d(12)
        with torch.no_grad():
            bn.weight.copy_(w64)
            bn.bias.copy_(b64)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        results[layout] = (_bn_outputs(x.contiguous(memory_format=fmt), bn), bn.running_mean.clone(), bn.running_var.clone())
    (ours, mean, var), (theirs, mean_ref, var_ref) = results["channels_last"], results["contiguous"]
    assert torch.allclose(mean, mean_ref, atol=1e-6) and torch.allclose(var, var_ref, rtol=1e-5)
    for a, b, t in zip(ours, theirs, truth):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
        assert float((a - t).abs().max()) <= 2 * float((b - t).abs().max()) + 1e-6


@pytest.mark.parametrize("shortcut", [True, False])
def test_one_pixel_pointwise_conv_in_inference_is_the_convolution(shortcut, monkeypatch):
    """Inference runs a 1x1 conv on one-pixel maps as a linear layer (supernet.layers.ONE_PIXEL_LINEAR): same values."""
    import supernet.layers as layers

    monkeypatch.setattr(layers, "ONE_PIXEL_LINEAR", shortcut)
    torch.manual_seed(0)
    x, w, b = torch.randn(7, 96, 1, 1), torch.randn(384, 96, 1, 1) * 0.1, torch.randn(384)
    with torch.no_grad():
        out = conv2d(x, w, b, (1, 1), (0, 0))
    ref = F.conv2d(x, w, b)
    assert out.shape == ref.shape == (7, 384, 1, 1) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_exported_graphs_keep_the_one_pixel_convolution():
    """The eager-only shortcut stays out of exported graphs: the ONNX file has a Conv node, no Gemm or MatMul."""
    import io
    import warnings

    import onnx

    class Pointwise(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(16, 32, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return conv2d(x, self.conv.weight, self.conv.bias, (1, 1), (0, 0))

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(Pointwise().eval(), (torch.randn(1, 16, 1, 1),), buf, dynamo=False, opset_version=17)
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert "Conv" in ops and not ops & {"Gemm", "MatMul"}
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]  # no branch on a traced shape
