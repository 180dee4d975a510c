"""The examples' dataset: a deterministic two-moons sample (numpy only), shared by the DAGs and scripts."""

import numpy as np


def moons(n: int, seed: int) -> np.ndarray:
    """``n`` rows of ``x, y, label`` (two interleaved half circles with a little noise)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.where(label == 0, np.cos(t), 1 - np.cos(t))
    y = np.where(label == 0, np.sin(t), 0.5 - np.sin(t))
    points = np.stack([x, y], axis=1) + rng.normal(0, 0.1, (n, 2))
    return np.column_stack([points, label])


def stage_moons(hook, key_prefix: str, sizes=None) -> dict:
    """Write train/test samples as CSV and stage them with ``hook.upload_data`` (the SDK's
    ``Session.upload_data``); returns ``{channel: uri}`` for ``inputs=``."""
    import tempfile
    from pathlib import Path

    uris = {}
    with tempfile.TemporaryDirectory() as tmp:
        for channel, (n, seed) in (sizes or {"train": (2000, 1), "test": (500, 2)}).items():
            folder = Path(tmp, channel)
            folder.mkdir()
            np.savetxt(folder / "data.csv", moons(n, seed), delimiter=",", fmt="%.6f")
            uris[channel] = hook.upload_data(folder, key_prefix=f"{key_prefix}/{channel}")
    return uris
