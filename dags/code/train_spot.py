"""Train the example's classifier as a managed spot job: checkpoint every epoch, resume after an interruption.

Before the script starts, SageMaker (and the local runtime) restores ``CheckpointConfig.S3Uri`` into the
checkpoint directory (``CheckpointConfig.LocalPath``, by default ``/opt/ml/checkpoints``; the platform
writes it into ``$SM_INPUT_CONFIG_DIR/checkpointconfig.json``) and, when the spot instance is reclaimed,
sends SIGTERM. This script saves model, optimizer and epoch there after every epoch (write, then rename);
on SIGTERM it finishes the epoch it is in, saves and exits. Started again, it carries on after the last
saved epoch, so that the final model equals an uninterrupted run's: every epoch's shuffle is seeded by the
epoch's number, not by how many epochs this process ran. Same hyperparameters as ``train.py``, plus
``--epoch-seconds`` (pad each epoch to at least that long, so a rehearsal can interrupt mid-training).
"""

import json
import os
import signal
import time

import torch
from torch import nn
from train import Net, arguments, load, save, train_epoch  # the example's (code/ is on sys.path)


def checkpoint_dir() -> str:
    config = os.path.join(os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config"), "checkpointconfig.json")
    try:
        with open(config) as f:
            return json.load(f)["LocalPath"]
    except (OSError, ValueError, KeyError):
        return "checkpoints"  # no CheckpointConfig: nothing survives an interruption, but the script runs


def main() -> None:
    parser = arguments()
    parser.add_argument("--epoch-seconds", type=float, default=0.0)
    parser.add_argument("--checkpoint-dir", default=checkpoint_dir())
    args = parser.parse_args()
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(time.time()))

    torch.manual_seed(0)
    x_train, y_train = load(args.train)
    x_test, y_test = load(args.test)
    model = Net(args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    os.makedirs(args.checkpoint_dir, exist_ok=True)
    last = os.path.join(args.checkpoint_dir, "last.pt")
    first = 1
    if os.path.exists(last):
        state = torch.load(last, weights_only=True)  # a checkpoint is data: never unpickle code from it
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first = state["epoch"] + 1
        print(f"resumed from {last}: epoch {state['epoch']} done", flush=True)
    print(f"training epochs {first}..{args.epochs} on {os.environ.get('SM_CURRENT_HOST', 'this machine')}",
          flush=True)

    for epoch in range(first, args.epochs + 1):
        began = time.monotonic()
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(epoch))
        loss = train_epoch(model, optimizer, loss_fn, x_train, y_train, order, args.batch_size)
        while not terminated and time.monotonic() - began < args.epoch_seconds:
            time.sleep(0.01)
        torch.save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
                   last + ".tmp")
        os.replace(last + ".tmp", last)
        print(f"epoch={epoch} train_loss={loss:.4f}", flush=True)
        if terminated:
            print(f"SIGTERM: checkpoint of epoch {epoch} saved to {last}; exiting", flush=True)
            return
    save(model, args, x_test, y_test)  # as train.py does: model.pth, model.json


if __name__ == "__main__":
    main()
