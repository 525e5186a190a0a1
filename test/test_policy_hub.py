"""Checkpoints named by Hugging Face Hub id (`org/name`), resolved through huggingface_hub's cache.

The cache is one this test writes in huggingface_hub's layout (models--org--name/refs/main and
snapshots/<commit>/), read offline (HF_HUB_OFFLINE=1) in a fresh process, as a user with a populated
cache and no network would: huggingface_hub reads its environment at import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from vla_rl_ros.policy import VLAPolicy

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ACT = """
import json, sys
import numpy as np
from vla_rl_ros.policy import VLAPolicy
try:
    policy = VLAPolicy.load(sys.argv[1])
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)
images = np.full((2, 32, 32, 3), 128, np.uint8)
out = policy.act(images, np.zeros((2, policy.base_model.config.proprio_dim), np.float32),
                 ["reach the red cube"] * 2, greedy=True)
print(json.dumps({"tokens": out.token_ids.tolist(), "path": str(sys.argv[1])}))
"""


def cache_model(hub: Path, repo_id: str, files: Path) -> Path:
    """A model in huggingface_hub's cache layout; returns its snapshot folder."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(files, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def load_offline(hub: Path, name: str) -> dict:
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", ACT, name], capture_output=True, text=True, env=env, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_hub_id_loads_the_cached_model_offline(tiny_checkpoint: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    cache_model(hub, "lab/tiny-vla", tiny_checkpoint)
    got = load_offline(hub, "lab/tiny-vla")
    policy = VLAPolicy.load(tiny_checkpoint)
    want = policy.act(np.full((2, 32, 32, 3), 128, np.uint8),
                      np.zeros((2, policy.base_model.config.proprio_dim), np.float32),
                      ["reach the red cube"] * 2, greedy=True)
    assert got.get("tokens") == want.token_ids.tolist(), got


def test_an_uncached_id_offline_and_pickle_weights_are_refused_by_name(tiny_checkpoint: Path,
                                                                        tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    missing = load_offline(hub, "lab/never-downloaded")["error"]
    assert missing.startswith("FileNotFoundError") and "'lab/never-downloaded' is not a directory, nor a " \
        "Hugging Face Hub model" in missing
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_checkpoint, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    cache_model(hub, "lab/pickled", pickled)
    refused = load_offline(hub, "lab/pickled")["error"]
    assert refused.startswith("CheckpointError") and "holds only pickle weights" in refused
