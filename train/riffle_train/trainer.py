"""A small training loop that runs alone or under DistributedDataParallel.

Single process: ``fit(model, x, y, ...)``. Multi-GPU: launch with torchrun, which sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``init_distributed()`` picks NCCL on CUDA and
gloo on CPU, and ``fit`` wraps the model in DDP and shards each epoch's batches with
a DistributedSampler-style stride, so every rank sees different examples.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .layers import default_device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed from torchrun's environment (no-op when absent)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1, default_device()
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return rank, world, device


def shutdown_distributed() -> None:
    """Leave the process group cleanly: every rank reaches a barrier before any rank tears
    down, so no rank's transport threads are still talking to a peer that has already gone
    (gloo aborts the process with "terminate called without an active exception" otherwise)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@dataclass
class FitResult:
    losses: list[float]
    seconds: float
    steps: int


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 50,
        batch_size: int = 64, lr: float = 1e-2, weight_decay: float = 0.0, seed: int = 0,
        device: torch.device | None = None, max_steps: int | None = None,
        autocast: torch.dtype | None = None, log_every: int = 0) -> FitResult:
    """Adam on the trainable parameters, cross-entropy, shuffled minibatches.

    Under an initialised process group the model is wrapped in DDP and each rank takes
    every ``world``-th batch element of the shared permutation.
    """
    device = device or default_device()
    model.to(device)
    x, y = x.to(device), y.to(device)
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    gen = torch.Generator().manual_seed(seed)
    losses, steps, t0 = [], 0, time.perf_counter()
    n = x.shape[0]
    net.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        total, count = 0.0, 0
        for i in range(0, n, batch_size * world):
            idx = perm[i:i + batch_size * world][rank::world]
            if idx.numel() == 0:
                continue
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().item() * idx.numel()
            count += idx.numel()
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        sched.step()
        losses.append(total / max(1, count))
        if log_every and (ep % log_every == 0 or ep == epochs - 1) and rank == 0:
            print(f"  epoch {ep:3d} loss {losses[-1]:.4f}", flush=True)
        if max_steps is not None and steps >= max_steps:
            break
    net.eval()
    return FitResult(losses, time.perf_counter() - t0, steps)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for i in range(0, x.shape[0], batch):
        out = model(x[i:i + batch].to(dev))
        correct += int((out.argmax(-1).cpu() == y[i:i + batch].cpu()).sum())
    return correct / max(1, x.shape[0])
