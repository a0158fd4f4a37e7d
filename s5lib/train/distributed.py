"""Process-group helpers for ``torchrun`` (one process per GPU, or several CPU processes).

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/MASTER_PORT). Without them, or
with WORLD_SIZE=1, everything runs in one process with no process group. The backend is NCCL when
the process has a GPU and gloo on CPU.
"""
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


class DistributedSetupError(RuntimeError):
    pass


@dataclass
class DistInfo:
    """Where this process sits: its rank, the number of processes, and its device."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def _env_int(name):
    value = os.environ.get(name)
    if value is None:
        raise DistributedSetupError(f"WORLD_SIZE is set but {name} is not: start multi-process "
                                    "training with torchrun (it sets RANK, WORLD_SIZE, LOCAL_RANK)")
    try:
        return int(value)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={value!r} is not an integer") from None


def pick_device(device="auto", local_rank=0):
    """``"auto"``: cuda:<local_rank> when a GPU exists, else cpu; ``"cpu"`` / ``"cuda"`` force one."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise DistributedSetupError("device 'cuda' was asked for but no GPU is visible")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_distributed(device="auto", backend=None, timeout_s=7200):
    """Join the torchrun process group if there is one; return a :class:`DistInfo`.

    Safe to call twice (an existing process group is reused). ``timeout_s`` bounds how long ranks
    wait for each other (rank 0 validates while the others wait).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(0, 1, 0, pick_device(device, 0))
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    torch_device = pick_device(device, local_rank)
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local_rank, torch_device)


def is_distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier():
    if is_distributed():
        dist.barrier()


def broadcast_object(obj, src=0):
    """``obj`` from rank ``src`` on every rank (identity when single-process)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_gather_object(obj):
    """A list with every rank's ``obj`` (``[obj]`` when single-process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(tensor):
    """Mean of ``tensor`` over ranks (a new tensor; identity when single-process)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def cleanup_distributed():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
