"""CPU stand-in for the training adapter's ``examples/llama/llama_pretrain.py`` (see ../../LOCAL_CPU_LAUNCHER).

Like the adapter it is started by torchrun with ``--config-path . --config-name <recipe>.yaml`` and takes
everything from the resolved recipe: a tiny next-token model (an embedding, ``model.num_hidden_layers``
MLP blocks of ``model.hidden_size``, vocabulary ``model.vocab_size``) trained for ``trainer.max_steps`` steps
of ``model.train_batch_size`` synthetic sequences of ``model.max_position_embeddings`` tokens with AdamW at
``model.optim.lr``. It writes ``model.pt`` and ``metrics.json`` into ``SM_MODEL_DIR``.
"""

import argparse
import json
import os

import torch
import yaml


def load_recipe() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config-path", default=".")
    parser.add_argument("--config-name", required=True)
    known, _ = parser.parse_known_args()  # the SMP hyperparameter (--mp_parameters) is not ours
    with open(os.path.join(known.config_path, known.config_name), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def synthetic_batch(generator: torch.Generator, batch: int, length: int, vocab: int) -> torch.Tensor:
    """Sequences that count up modulo the vocabulary from a random start: learnable next tokens."""
    start = torch.randint(0, vocab, (batch, 1), generator=generator)
    return (start + torch.arange(length + 1)) % vocab


def main() -> None:
    recipe = load_recipe()
    model_cfg, trainer = recipe["model"], recipe["trainer"]
    torch.manual_seed(model_cfg["seed"])
    vocab, width = model_cfg["vocab_size"], model_cfg["hidden_size"]
    blocks = [torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.GELU())
              for _ in range(model_cfg["num_hidden_layers"])]
    model = torch.nn.Sequential(torch.nn.Embedding(vocab, width), *blocks, torch.nn.Linear(width, vocab))
    optim = model_cfg["optim"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim["lr"], weight_decay=optim["weight_decay"])
    generator = torch.Generator().manual_seed(model_cfg["seed"])
    losses = []
    for step in range(trainer["max_steps"]):
        tokens = synthetic_batch(generator, model_cfg["train_batch_size"], model_cfg["max_position_embeddings"],
                                 vocab)
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % trainer["log_every_n_steps"] == 0 or step == trainer["max_steps"] - 1:
            print(f"step {step}: train_loss={loss.item():.4f}", flush=True)
    out = os.environ.get("SM_MODEL_DIR", recipe["run"]["results_dir"])
    torch.save(model.state_dict(), os.path.join(out, "model.pt"))
    metrics = {"recipe": recipe["run"]["name"], "steps": len(losses), "first_loss": losses[0],
               "final_loss": losses[-1], "peft": model_cfg.get("peft", {}).get("peft_type")}
    with open(os.path.join(out, "metrics.json"), "w", encoding="utf-8") as handle:
        json.dump(metrics, handle)
    print(f"final_loss={losses[-1]:.4f}", flush=True)


if __name__ == "__main__":
    main()
