"""Data-parallel training of the example's classifier on several hosts, launched by torchrun or mpirun.

Every rank trains its shard of a deterministic two-moons dataset with DistributedDataParallel (NCCL on
GPUs, gloo on CPUs), then the ranks compare their final parameters: rank 0 writes the model and
``ranks.json`` (world size, each rank's host and parameter checksum) to SM_MODEL_DIR. The same file runs
on SageMaker and on the local runtime, under torchrun (``torch_distributed``) or mpirun (``mpi``).
"""

import json
import os

import torch
import torch.distributed as dist
from torch import nn

from data import moons  # the examples' dataset (code/ is on sys.path)
from train import Net  # the example's classifier


def moons_tensors(n: int, seed: int):
    data = moons(n, seed)
    return torch.tensor(data[:, :2], dtype=torch.float32), torch.tensor(data[:, 2]).long()


def main() -> None:
    # under mpirun the rank comes from Open MPI; torchrun sets RANK/WORLD_SIZE itself
    os.environ.setdefault("RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    os.environ.setdefault("WORLD_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    host = os.environ.get("SM_CURRENT_HOST", "?")
    print(f"rank {rank}/{world} on {host} ({backend})", flush=True)

    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    model = nn.parallel.DistributedDataParallel(Net())
    x, y = moons_tensors(2000, seed=1)
    x, y = x[rank::world], y[rank::world]  # this rank's shard
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    epochs = int(os.environ.get("SM_HP_EPOCHS", "10"))
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(order), 64):
            idx = order[start:start + 64]
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()  # gradients are averaged across the ranks
            optimizer.step()
    checksum = float(sum(p.double().sum() for p in model.module.parameters()))
    seen = [None] * world
    dist.all_gather_object(seen, {"rank": rank, "host": host, "checksum": checksum})
    x_test, y_test = moons_tensors(500, seed=2)
    with torch.no_grad():
        accuracy = (model.module(x_test).argmax(dim=1) == y_test).float().mean().item()
    print(f"rank {rank} checksum={checksum:.10f} test_accuracy={accuracy:.4f}", flush=True)
    if rank == 0:
        out = os.environ.get("SM_MODEL_DIR", "model")
        os.makedirs(out, exist_ok=True)
        torch.save(model.module.state_dict(), os.path.join(out, "model.pth"))
        with open(os.path.join(out, "ranks.json"), "w") as f:
            json.dump({"world_size": world, "ranks": seen, "test_accuracy": accuracy}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
