"""Inference code for the bring-your-own-model example: a TorchScript model plus a JSON answer format."""

import json
import os

import torch


def model_fn(model_dir):
    return torch.jit.load(os.path.join(model_dir, "model.pt"))


def input_fn(body, content_type):
    if content_type != "application/json":
        raise ValueError(f"send application/json, not {content_type}")
    return torch.tensor(json.loads(body)["inputs"], dtype=torch.float32)


def predict_fn(data, model):
    with torch.no_grad():
        return model(data)


def output_fn(prediction, accept):
    return json.dumps({"outputs": prediction.tolist()}), "application/json"
