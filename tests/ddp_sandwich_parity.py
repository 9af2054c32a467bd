"""Run under torchrun (2 ranks, gloo): the DDP sandwich step (one all-reduce per step, the other
members under no_sync) must give the same gradients as local sandwich steps averaged by hand.
Prints 'max_abs_diff <x> params_with_grad <n>' on rank 0; exits 1 on a mismatch."""
from __future__ import annotations

import copy
import sys

import torch
import torch.distributed as dist

from supernet.elastic import Supernet
from supernet.train.sandwich import sandwich_members, sandwich_step


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    ctx = {"image_size": 32, "num_classes": 10, "distillation": False}
    ref = Supernet("tiny", **ctx).train()
    net = copy.deepcopy(ref)
    ddp = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True, broadcast_buffers=False)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    worst, count = 0.0, 0
    for step in range(3):  # the last member differs per step (some weights unused in its forward)
        members = sandwich_members(ref.space, step, 0, 2, **ctx)
        for m in (ref, net):
            m.zero_grad(set_to_none=True)
        sandwich_step(ddp, net, members, x, y)
        sandwich_step(ref, ref, members, x, y)
        for (name, p), q in zip(ref.named_parameters(), net.parameters()):
            local = p.grad if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(local)
            local /= world
            got = q.grad if q.grad is not None else torch.zeros_like(q)
            worst = max(worst, float((local - got).abs().max()))
            count += int(q.grad is not None)
    if rank == 0:
        print(f"max_abs_diff {worst:.3e} params_with_grad {count}", flush=True)
    dist.barrier()  # both ranks done before teardown (a rank leaving early can abort gloo under load)
    dist.destroy_process_group()
    sys.exit(0 if worst <= 1e-6 else 1)


if __name__ == "__main__":
    main()
