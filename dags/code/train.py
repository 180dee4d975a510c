"""Train a small classifier the way the SageMaker PyTorch seed example does.

Hyperparameters arrive as command-line arguments, data in SM_CHANNEL_TRAIN / SM_CHANNEL_TEST, and the
model goes to SM_MODEL_DIR. The same file runs on SageMaker and on the local runtime.
"""

import argparse
import json
import os

import numpy as np
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                    nn.Linear(hidden, 2))

    def forward(self, x):
        return self.layers(x)


def load(channel_dir: str):
    data = np.loadtxt(os.path.join(channel_dir, "data.csv"), delimiter=",", dtype=np.float32)
    return torch.from_numpy(data[:, :2]), torch.from_numpy(data[:, 2]).long()


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def arguments() -> argparse.ArgumentParser:
    """The script's hyperparameters (``train_spot.py`` adds its own to them)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN", "data/train"))
    parser.add_argument("--test", default=os.environ.get("SM_CHANNEL_TEST", "data/test"))
    return parser


def train_epoch(model, optimizer, loss_fn, x, y, order, batch_size: int) -> float:
    """One pass over ``x``/``y`` in ``order``; returns the mean training loss."""
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        optimizer.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(x)


def main() -> None:
    args = arguments().parse_args()
    print(f"training on {os.environ.get('SM_CURRENT_HOST', 'this machine')} with {vars(args)}", flush=True)

    torch.manual_seed(0)
    x_train, y_train = load(args.train)
    x_test, y_test = load(args.test)
    model = Net(args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_train))
        loss = train_epoch(model, optimizer, loss_fn, x_train, y_train, order, args.batch_size)
        print(f"epoch={epoch} train_loss={loss:.4f} "
              f"train_accuracy={accuracy(model, x_train, y_train):.4f}", flush=True)
    save(model, args, x_test, y_test)


def save(model, args, x_test, y_test) -> None:
    """Report the test accuracy; write the model (``model.pth``, ``model.json``) to ``args.model_dir``."""
    test_accuracy = accuracy(model, x_test, y_test)
    print(f"test_accuracy={test_accuracy:.4f}", flush=True)
    os.makedirs(args.model_dir, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(args.model_dir, "model.pth"))
    with open(os.path.join(args.model_dir, "model.json"), "w") as f:
        json.dump({"hidden": args.hidden, "test_accuracy": test_accuracy}, f)


if __name__ == "__main__":
    main()
