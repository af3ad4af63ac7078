"""Data-parallel training across processes, as started by ``torchrun``.

``torchrun --nproc_per_node=N -m charlm train ...`` starts N copies of charlm with RANK, WORLD_SIZE
and LOCAL_RANK set. Every rank builds the same model from the same seed; the config's
``batch_size`` streams are split between the ranks (rank r takes its own contiguous share), each
rank computes the gradient of its share, and one all-reduce per step averages them, so the update
is the one a single process would make with the whole batch. Rank 0 alone writes logs and
checkpoints; the checkpoint holds the carried state of all streams and the random state of every
rank, so a run resumes under torchrun or in one process alike.

Everything here is a no-op for a single process (``world == 1``).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

from charlm.errors import CharlmError
from charlm.runtime import rank_device


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    # Where the small tensors of agree/broadcast/sum live: NCCL takes only CUDA tensors, gloo any.
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, batch_size: int) -> slice:
        """This rank's rows of a batch of ``batch_size`` streams."""
        per_rank = batch_size // self.world
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)

    def average(self, grads: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
        """Average the gradients (in place) and the loss over all ranks with one all-reduce."""
        if not self.enabled:
            return loss
        import torch.distributed as dist

        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).float()])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        return flat[-1]

    def agree(self, code: int, seconds: float) -> tuple[int, float]:
        """The largest stop code and clock of all ranks, so every rank stops at the same step and
        follows the same time-based schedule."""
        if not self.enabled:
            return code, seconds
        import torch.distributed as dist

        values = torch.tensor([float(code), seconds], dtype=torch.float64, device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        code_value, clock = values.tolist()
        return int(code_value), clock

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            import torch.distributed as dist

            values = values.to(self.device, copy=True)
            dist.all_reduce(values)
        return values

    def broadcast(self, value: float | None) -> float | None:
        """Rank 0's value (an evaluation's loss, or None) on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        holder = torch.tensor([float("nan") if value is None else value], dtype=torch.float64, device=self.device)
        dist.broadcast(holder, src=0)
        received = holder.item()
        return None if math.isnan(received) else received

    def gather_state(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The carried state of every rank's streams, in stream order (the batch is dimension 1)."""
        if not self.enabled:
            return state
        import torch.distributed as dist

        gathered = []
        for tensor in state:
            local = tensor.to(self.device).contiguous()
            parts = [torch.empty_like(local) for _ in range(self.world)]
            dist.all_gather(parts, local)
            gathered.append(torch.cat(parts, dim=1).to(tensor.device))
        return tuple(gathered)

    def close(self, finished: bool) -> None:
        """Leave the process group. Without this, gloo's worker threads are still running when the
        interpreter exits and the C++ runtime aborts the process ("terminate called without an active
        exception"), which torchrun reports as a failed run. After a normal finish the ranks first
        wait for each other, so none tears down a connection another still uses."""
        if not self.enabled:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            return
        if finished:
            dist.barrier()
        dist.destroy_process_group()

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather_objects(self, value: Any) -> list[Any]:
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values


def from_environment() -> Distributed:
    """This process's place as torchrun describes it in the environment (one process: rank 0 of 1),
    without joining the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(rank=int(os.environ.get("RANK", "0")), world=world,
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def setup(device_name: str) -> Distributed:
    """Join the process group torchrun describes in the environment (once per process)."""
    info = from_environment()
    if not info.enabled:
        return info
    import torch.distributed as dist

    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    backend = choose_backend(use_cuda, torch.cuda.device_count() if use_cuda else 0, info.local_world)
    if use_cuda:
        gpu = rank_device(torch.device("cuda"), info.local_rank, torchrun=True)  # the trainer's device too
        torch.cuda.set_device(gpu)
        if backend == "nccl":
            info.device = gpu
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend)
        except Exception as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise CharlmError(f"cannot join the torchrun process group: {first}; check MASTER_ADDR/MASTER_PORT"
                              " and that every node runs the same torchrun command") from None
    return info


def choose_backend(use_cuda: bool, gpus: int, local_world: int) -> str:
    """NCCL when every rank of this node has a GPU of its own; gloo otherwise (the CPU, or several
    ranks sharing a GPU, which NCCL refuses). Gloo moves CUDA tensors through host memory."""
    return "nccl" if use_cuda and gpus >= local_world else "gloo"


def check_batch(info: Distributed, batch_size: int) -> None:
    if info.enabled and batch_size % info.world:
        raise CharlmError(
            f"train.batch_size ({batch_size}) must divide evenly between the {info.world} processes:"
            f" use a multiple of {info.world}"
        )


def leave_worker(code: int) -> None:
    """Under torchrun, end a worker that has finished (files closed, output flushed) without
    Python's interpreter teardown: there gloo's C++ threads can still release tensors and abort
    the process ("terminate called without an active exception", pytorch/pytorch#190489), which
    torchrun reports as a failed run, even after destroy_process_group. A no-op outside torchrun."""
    if not from_environment().enabled:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
