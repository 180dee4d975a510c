"""Serve the classifier trained by train.py: the model server imports this module from code/.

``model_fn`` loads the weights once per worker; the default ``input_fn`` turns the request (NPY, JSON or
CSV) into a tensor and the default ``output_fn`` answers in the requested format. The same file serves
on a SageMaker endpoint and on the local runtime.
"""

import json
import os

import torch

from train import Net  # source_dir is repacked into model.tar.gz's code/, which is on sys.path


def model_fn(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        config = json.load(f)
    model = Net(config["hidden"])
    model.load_state_dict(torch.load(os.path.join(model_dir, "model.pth"), weights_only=True))
    return model.eval()


def predict_fn(data, model):
    """Points in, predicted classes out."""
    with torch.no_grad():
        return model(data.float()).argmax(dim=1)
