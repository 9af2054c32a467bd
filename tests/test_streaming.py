"""The streamed proxy: pooled BN statistics, a memory budget that changes nothing but speed, balanced subsets,
the embedded default scored as before, and the compute-device setting."""
from __future__ import annotations

import collections
import random
import subprocess
import sys

import pytest
import torch

from helpers import randomize_stats
from search.params import arch_hash
from search.proxy import SupernetProxy, score_logits
from supernet.bn_calibration import PooledBatchStats, recalibrate_bn
from supernet.compute import resolve_device
from supernet.data import balanced_subset, build_data
from supernet.elastic import Supernet
from supernet.errors import UserError
from supernet.layers import BatchNorm

CTX = {"image_size": 32, "num_classes": 10, "distillation": False}


def test_pooled_statistics_are_those_of_all_images():
    bn = BatchNorm(3)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, 4, 4, generator=g) * s + m for n, s, m in ((7, 1.0, 0.0), (20, 3.0, 2.0), (1, 0.5, -4.0))]
    recalibrate_bn(bn, batches)
    every = torch.cat(batches).transpose(0, 1).reshape(3, -1).double()
    assert torch.allclose(bn.running_mean.double(), every.mean(1), atol=1e-6)
    assert torch.allclose(bn.running_var.double(), every.var(1), rtol=1e-5)  # unbiased, over all images
    averaged = torch.stack([b.transpose(0, 1).reshape(3, -1).var(1) for b in batches]).mean(0)
    assert not torch.allclose(bn.running_var, averaged, rtol=0.1)  # what averaging per-batch variances gives
    assert bn.training  # its mode is restored


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_batch_moments_are_two_pass_exact_far_from_zero(layout):
    """A BN input whose mean dwarfs its spread (where E[x^2] - E[x]^2 in float32 loses every digit): the
    two-pass moments are those of float64 to float32 rounding, as var_mean's were, in either layout."""
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(64, 5, 6, 6, generator=g) * torch.tensor([0.01, 1.0, 3.0, 0.1, 1e-3]).view(1, 5, 1, 1)
         + torch.tensor([1e3, 0.0, -50.0, 7.0, 1e2]).view(1, 5, 1, 1)).contiguous(memory_format=layout)
    xd = x.double().transpose(0, 1).reshape(5, -1)
    for two_pass in (True, False):
        PooledBatchStats.two_pass = two_pass
        try:
            stats = PooledBatchStats()
            stats.add(x[:40])
            stats.add(x[40:])
        finally:
            PooledBatchStats.two_pass = True
        torch.testing.assert_close(stats.mean, xd.mean(1), rtol=1e-6, atol=0)
        torch.testing.assert_close(stats.unbiased_var(), xd.var(1), rtol=1e-3, atol=0)


def test_balanced_subset_takes_every_class_in_a_seeded_mixed_order():
    labels = [c for c in range(5) for _ in range(40)] + [5] * 3  # class-sorted, one small class
    pick = balanced_subset(labels, 53, seed=1)
    counts = collections.Counter(labels[i] for i in pick)
    assert len(set(pick)) == 53 and counts[5] == 3 and sorted(counts[c] for c in range(5)) == [10, 10, 10, 10, 10]
    assert pick == balanced_subset(labels, 53, seed=1) and pick != balanced_subset(labels, 53, seed=2)
    assert [labels[i] for i in pick[:10]] != sorted(labels[i] for i in pick[:10])  # not in class order


def _net(space: str = "tiny", seed: int = 0) -> Supernet:
    torch.manual_seed(seed)
    return randomize_stats(Supernet(space, **CTX))


@pytest.mark.slow
def test_memory_budget_changes_nothing_but_what_is_kept():
    """One proxy keeps everything, the other one batch of images: reference, incremental and full
    evaluations give identical scores, and the small one never holds more than its budget."""
    data = build_data({"name": "digits", "calib_size": 90})
    net = _net()
    kw = {"batch_size": 40, "calib_images": 80, "val_images": 200}
    big = SupernetProxy.from_data(net, data, memory_mb=512, **kw)
    small = SupernetProxy.from_data(net, data, memory_mb=40 * 3 * 32 * 32 * 4 / 2**20, **kw)
    rng = random.Random(3)
    ref = net.space.sample(rng, **CTX)
    archs = [ref] + [ref.replace(stages=ref.stages[:k] + net.space.sample(rng, **CTX).stages[k:]) for k in (1, 2, 3, 3, 0)]
    archs = [a for a in archs if net.space.contains(a)]
    assert len(archs) >= 4
    for proxy in (big, small):
        proxy.reference(ref)
    for arch in archs[1:]:
        a, b = big(arch), small(arch)
        assert a == b, arch.summary()
    assert small.store.used <= small.store.budget and big.store.used > small.store.budget
    assert len(big.val.labels) == 200 and sorted(collections.Counter(big.val.labels.tolist()).values())[0] >= 19


def test_memory_budget_below_one_batch_is_refused():
    data = build_data({"name": "digits", "calib_size": 90})
    with pytest.raises(UserError, match=r"^proxy\.memory_mb: 0\.1 MB cannot hold one batch of 500 images"):
        SupernetProxy.from_data(_net(), data, memory_mb=0.1)


@pytest.mark.slow
def test_embedded_default_scores_as_one_pass_over_whole_splits():
    """Fashion-MNIST, whole splits, default settings: the streamed proxy equals one calibration batch of
    the whole calib split and one forward of the whole val split (the proxy before streaming)."""
    data = build_data({"name": "fashion", "calib_size": 500})
    net = _net("efficientformerv2")
    proxy = SupernetProxy.from_data(net, data)
    # the calibration images in the proxy's (stratified) order: a BN's float sums depend on it in the last bits,
    # which can flip a near-tied image of these random-weight networks
    order = [i for chunk in proxy.calib.chunks for i in chunk]
    assert sorted(order) == list(range(500))
    calib = torch.cat([x for x, _ in data.eval_loader("calib", 500, indices=order)]).contiguous(memory_format=torch.channels_last)
    val = list(data.eval_loader("val", 2500))
    vx, vy = val[0][0].contiguous(memory_format=torch.channels_last), val[0][1]
    rng = random.Random(0)
    for arch in (net.smallest(), net.space.sample(rng, **CTX)):
        got = proxy(arch)
        net.set_active(arch)
        recalibrate_bn(net, [calib])
        with torch.no_grad():
            want = score_logits(net.eval()(vx), vy)
        assert got["top1"] == want["top1"], arch.summary()
        assert abs(got["loss"] - want["loss"]) < 1e-5


def test_compute_device_setting():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(" auto ").type in ("cpu", "cuda")
    for bad in ("gpu", "cpu:1", "cuda:x", ""):
        with pytest.raises(UserError, match="compute_device: .* is not one of auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"^compute_device: 'cuda:0' needs a CUDA GPU, and this machine has none"):
            resolve_device("cuda:0")


@pytest.mark.slow
def test_proxy_forgets_scores_and_stage_inputs_when_the_weights_change(tmp_path):
    """Audit of the proxy's caches: after load_member / an in-place write, a cached score or a reference's kept
    stage inputs would describe the old weights; the proxy must score the new ones (equal to a fresh proxy)."""
    data = build_data({"name": "digits", "calib_size": 90})
    net = _net()
    proxy = SupernetProxy.from_data(net, data, val_images=120, cache_path=tmp_path / "c.jsonl", cache_key="k")
    rng = random.Random(5)
    ref = net.space.sample(rng, **CTX)
    other = ref.replace(stages=ref.stages[:3] + net.space.sample(rng, **CTX).stages[3:])
    proxy.reference(ref)
    before = proxy(other)
    with torch.no_grad():
        for p in net.stages[0].parameters():
            p.mul_(0.5)  # the shared first stage changes: every kept stage input is stale
    after = proxy(other)
    fresh = SupernetProxy.from_data(net, data, val_images=120)(other)
    assert after == fresh and after != before
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == 2  # new weights are not written under the old key


def test_whole_split_evaluation_continues_a_screening_exactly():
    """A screened candidate's whole-split score continues from its screening (its BN statistics and screened
    batches) and equals a fresh proxy's full evaluation of it, value for value; the screening itself is no score."""
    data = build_data({"name": "digits", "calib_size": 90})
    net = _net()
    kw = dict(val_images=200, batch_size=40)
    racing, fresh = SupernetProxy.from_data(net, data, **kw), SupernetProxy.from_data(net, data, **kw)
    rng = random.Random(3)
    ref = net.space.sample(rng, **CTX)
    racing.reference(ref)
    fresh.reference(ref)
    checked = 0
    for k in (0, 2, 3, 3):
        arch = ref.replace(stages=ref.stages[:k] + net.space.sample(rng, **CTX).stages[k:])
        if not net.space.contains(arch) or racing.cached(arch) is not None:
            continue
        screened = racing.screen(arch, 0.4)
        assert len(screened.losses) == 80 and screened.bn is not None and racing.cached(arch) is None
        net.set_active(ref)  # another member runs between the screening and its continuation
        racing(ref)
        assert racing(arch) == fresh(arch), arch.summary()
        assert all(s.bn is None for (h, _), s in racing._screened.items() if h == arch_hash(net.member(arch)))
        checked += 1
    assert checked >= 3


def test_screenings_are_kept_beside_the_score_cache_value_for_value(tmp_path):
    """A screening is stored in the sidecar of the score cache (never among the scores) and a later proxy with the
    same key loads it bit for bit instead of computing it; torn lines and other keys are skipped."""
    data = build_data({"name": "digits", "calib_size": 90})
    net = _net()
    cache = tmp_path / "scores.jsonl"
    kw = dict(val_images=200, batch_size=40, cache_path=cache, cache_key="k")
    first = SupernetProxy.from_data(net, data, **kw)
    rng = random.Random(4)
    ref = net.space.sample(rng, **CTX)
    first.reference(ref)
    archs = [ref.replace(stages=ref.stages[:k] + net.space.sample(rng, **CTX).stages[k:]) for k in (1, 3)]
    screened = [first.screen(a, 0.4) for a in archs]
    assert first.screenings == 2 and len(cache.read_text().splitlines()) == 1  # the reference's score only
    sidecar = tmp_path / "scores.screenings.jsonl"
    with open(sidecar, "a") as fh:
        fh.write('{"key": "k", "arch_hash": "torn", "batches": 2, "im')
    again = SupernetProxy.from_data(net, data, **kw)
    for a, s in zip(archs, screened):
        loaded = again.screen(a, 0.4)
        assert torch.equal(loaded.losses, s.losses) and torch.equal(loaded.correct, s.correct) and loaded.bn is None
        assert again.cached(a) is None  # a screening is no score
    assert again.screenings == 0 and again.evaluations == 0
    assert again(archs[0]) == first(archs[0])  # a loaded screening does not change the whole-split score
    other = SupernetProxy.from_data(net, data, **{**kw, "cache_key": "other"})
    other.screen(archs[1], 0.4)
    assert other.screenings == 1


def test_a_cached_reference_is_computed_only_when_a_neighbour_is():
    """reference() of a scored member computes nothing until a neighbour has to be computed incrementally."""
    data = build_data({"name": "digits", "calib_size": 90})
    net = _net()
    proxy = SupernetProxy.from_data(net, data, val_images=120, batch_size=40)
    rng = random.Random(6)
    ref = net.space.sample(rng, **CTX)
    arch = ref
    while arch_hash(net.member(arch)) == arch_hash(net.member(ref)):  # a neighbour differing in the last stage
        arch = ref.replace(stages=ref.stages[:3] + net.space.sample(rng, **CTX).stages[3:])
    score = proxy(ref)
    assert proxy.evaluations == 1
    assert proxy.reference(ref) == score and proxy.evaluations == 1  # pending: nothing computed yet
    fresh = SupernetProxy.from_data(net, data, val_images=120, batch_size=40)
    assert proxy(arch) == fresh(arch) and proxy.evaluations == 3  # the reference, then its neighbour
    assert proxy._start(net.member(arch)) == 3


@pytest.mark.parametrize("memory_mb", [512, 40 * 3 * 32 * 32 * 4 / 2**20])
def test_a_reference_sharing_the_first_stages_is_made_incrementally_and_exactly(memory_mb):
    """A new reference that shares its first stages with the current one (a slimming step's winner) runs only the
    stages it changes - the shared stage inputs are kept - and its neighbours score value for value as from a
    reference made from scratch, whatever the memory budget keeps."""
    data = build_data({"name": "digits", "calib_size": 90})
    net = _net()
    kw = dict(val_images=200, batch_size=40, calib_images=80, memory_mb=memory_mb)
    chain, scratch = SupernetProxy.from_data(net, data, **kw), SupernetProxy.from_data(net, data, **kw)
    rng = random.Random(8)
    ref = net.space.sample(rng, **CTX)
    chain.reference(ref)
    first_stage_runs = []
    hook = net.stages[0].register_forward_hook(lambda *_: first_stage_runs.append(1))
    checked = 0
    for k in (2, 1, 3):
        new = ref.replace(stages=ref.stages[:k] + net.space.sample(rng, **CTX).stages[k:])
        if not net.space.contains(new) or chain._start(net.member(new)) != k:
            continue
        alone = SupernetProxy.from_data(net, data, **kw)(new)
        runs = len(first_stage_runs)
        assert chain.reference(new) == alone
        if memory_mb == 512:
            assert len(first_stage_runs) == runs  # the shared stage inputs were kept: stage 0 did not run again
        scratch.reference(new)
        for j in (k, 3):
            arch = new.replace(stages=new.stages[:j] + net.space.sample(rng, **CTX).stages[j:])
            if net.space.contains(arch):
                assert chain(arch) == scratch(arch), arch.summary()
                checked += 1
        ref = new
    hook.remove()
    assert checked >= 3


FAULTS = """
import resource, sys, torch
from supernet.elastic import Supernet
from supernet.host_memory import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
torch.manual_seed(0)
net = Supernet("efficientformerv2", image_size=32, num_classes=10).eval()
net.set_active(net.largest())
x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
with torch.no_grad():
    net(x)  # the first batch faults its pages in either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(2):
        net(x)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
def test_freed_activation_memory_is_reused_not_faulted_in_again():
    """supernet.host_memory: with glibc, a batch's activations reuse the last batch's pages instead of faulting in
    new ones."""
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt's parameters are glibc's")
    runs = {how: subprocess.run([sys.executable, "-c", FAULTS, how], capture_output=True, text=True, check=True).stdout.split()
            for how in ("default", "reuse")}
    assert runs["reuse"][0] == "True" and runs["default"][0] == "False"
    assert int(runs["reuse"][1]) * 4 < int(runs["default"][1]), runs  # measured here: about 3,500 vs 33,000-50,000


def test_a_users_own_malloc_settings_are_left_alone(monkeypatch):
    from supernet.host_memory import reuse_freed_memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert reuse_freed_memory() is False
