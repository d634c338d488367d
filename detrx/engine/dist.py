"""Multi-process helpers: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; we use NCCL on CUDA, gloo on CPU."""
import os

import torch
import torch.distributed as dist


def init_distributed(device):
    """Joins the process group when launched by torchrun; returns the device this process uses."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device(device)


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_distributed() else 0


def get_world_size():
    return dist.get_world_size() if is_distributed() else 1


def is_main_process():
    return get_rank() == 0


def all_gather_list(items):
    """Concatenates every process's python list (on every process)."""
    if not is_distributed():
        return list(items)
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in part]


def reduce_mean(values):
    """dict of python floats -> the same dict averaged over processes."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return dict(zip(keys, (tensor / get_world_size()).tolist()))
