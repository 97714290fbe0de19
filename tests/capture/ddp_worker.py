"""One rank of the distributed test: DDP over gloo on the CPU, watched by deepscope; rank 1 is slowed."""

import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import deepscope

root, slow_rank, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(rank)
model = DDP(nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
run = deepscope.init(project="ddp", name="ddp-test", dir=root)  # the run id is agreed through torch.distributed
run.watch(model, opt, print_findings=False)
for step in range(steps):
    if rank == slow_rank:
        time.sleep(0.03)  # a slow data loader on this rank
    x, y = torch.randn(16, 32), torch.randint(0, 4, (16,))
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    run.log({"train/loss": loss}, step=step)
run.finish()
dist.destroy_process_group()
print(f"rank {rank} of {os.environ['WORLD_SIZE']} wrote run {run.id}", flush=True)
