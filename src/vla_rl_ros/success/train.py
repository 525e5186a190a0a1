"""`vla-rl train-classifier`: train the classifier success backend from recorded episodes.

Labelling rule (frames of an episode of T frames, frame t = the observation before action t):
- a successful episode ends once success has held for k steps, so its last frames show the success
  state: the last `positive_tail` frames are POSITIVE (default 2 = k - 1 for the sim's k = 3: the
  k-th success state is the observation after the last action, which no frame holds);
- its first `negative_head` fraction of frames (default 0.5) are NEGATIVE: the task is not done yet;
- the frames in between are left out (the task is being completed there; no label is reliable);
- every frame of a failed episode (success false, a time-out or an operator's f) is NEGATIVE;
- episodes that ended by abort, e-stop, lost node or error carry no verdict and are skipped (the
  learner discards them for the same reason, rl.records.DISCARD_REASONS).

Episodes, not frames, are split into training and held-out sets (stratified by success, seeded), so
no held-out frame has a near-identical neighbour in training. The command prints the held-out
frame precision and recall at the threshold, and the episode-level outcome with the hold filter,
and stores both in classifier.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vla_rl_ros.data import DatasetError, EpisodeDataset
from vla_rl_ros.rl.records import DISCARD_REASONS
from vla_rl_ros.sim.tasks.hold import HoldFilter
from vla_rl_ros.success.classifier import ClassifierConfig, SuccessNet, preprocess, save_classifier


def frame_labels(length: int, success: bool, positive_tail: int, negative_head: float) -> np.ndarray:
    """(T,) labels of an episode's frames: 1 positive, 0 negative, -1 left out (the rule above)."""
    labels = np.full(length, -1, dtype=np.int64)
    if not success:
        labels[:] = 0
        return labels
    labels[: int(length * negative_head)] = 0
    labels[max(0, length - positive_tail):] = 1  # the tail wins over the head in very short episodes
    return labels


@dataclass
class Episodes:
    """Labelled episodes of one camera: images (T, H, W, 3), labels (T,), success flag, name."""

    images: list[np.ndarray]
    labels: list[np.ndarray]
    success: list[bool]
    names: list[str]
    skipped: int = 0  # episodes without a verdict (aborted, e-stopped, ...)


def load_episodes(roots: Sequence[Path], camera: str, positive_tail: int, negative_head: float) -> Episodes:
    out = Episodes([], [], [], [])
    for root in roots:
        ds = EpisodeDataset.open(root)
        if camera not in ds.cameras:
            raise DatasetError(f"dataset {root} has no camera {camera!r}; it has {sorted(ds.cameras)}")
        for index, meta in enumerate(ds.episodes_meta()):
            if meta["end_reason"] in DISCARD_REASONS:
                out.skipped += 1
                continue
            episode = ds.read(index, cameras=[camera])
            out.images.append(episode.images[camera])
            out.labels.append(frame_labels(episode.length, episode.success, positive_tail, negative_head))
            out.success.append(bool(episode.success))
            out.names.append(f"{root}#{index}")
    return out


def split_episodes(success: Sequence[bool], heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) episode indices; each class keeps at least one episode on each side when it can."""
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for cls in (True, False):
        members = [i for i, s in enumerate(success) if s == cls]
        rng.shuffle(members)
        n = round(len(members) * heldout_fraction)
        if len(members) >= 2:
            n = min(max(n, 1), len(members) - 1)
        heldout += members[:n]
        train += members[n:]
    return sorted(train), sorted(heldout)


def stack(eps: Episodes, indices: Sequence[int], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The labelled frames of the episodes: (N, 3, S, S) images, (N,) float labels."""
    images = [eps.images[i][eps.labels[i] >= 0] for i in indices]
    labels = [eps.labels[i][eps.labels[i] >= 0] for i in indices]
    return preprocess(np.concatenate(images), image_size), torch.from_numpy(np.concatenate(labels)).float()


def precision_recall(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(predicted & truth))
    fp, fn = int(np.sum(predicted & ~truth)), int(np.sum(~predicted & truth))
    return {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0,
            "tp": tp, "fp": fp, "fn": fn, "frames": int(truth.size)}


@torch.no_grad()
def probabilities(model: SuccessNet, images: np.ndarray, image_size: int, batch: int = 256) -> np.ndarray:
    return np.concatenate([torch.sigmoid(model(preprocess(images[i:i + batch], image_size))).numpy()
                           for i in range(0, len(images), batch)])


def evaluate(model: SuccessNet, eps: Episodes, indices: Sequence[int], config: ClassifierConfig) -> dict:
    """Held-out frame precision/recall, and per episode whether the hold filter fired (success found)."""
    model.eval()
    predicted, truth, found = [], [], {"success": [0, 0], "failure": [0, 0]}  # [fired, episodes]
    for i in indices:
        p = probabilities(model, eps.images[i], config.image_size) >= config.threshold  # (T,)
        keep = eps.labels[i] >= 0
        predicted.append(p[keep])
        truth.append(eps.labels[i][keep] == 1)
        hold = HoldFilter(config.hold_steps)
        fired = any([hold.update(bool(v)) for v in p])
        kind = found["success" if eps.success[i] else "failure"]
        kind[0] += int(fired)
        kind[1] += 1
    metrics = precision_recall(np.concatenate(predicted), np.concatenate(truth)) if indices else {}
    return {**metrics, "episodes": len(indices), "successes_detected": found["success"],
            "failures_flagged": found["failure"]}


def train(eps: Episodes, train_idx: Sequence[int], config: ClassifierConfig, *, epochs: int, batch_size: int,
          lr: float, seed: int) -> SuccessNet:
    torch.manual_seed(seed)
    x, y = stack(eps, train_idx, config.image_size)  # (N, 3, S, S), (N,)
    positives = float(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError(f"the training episodes give {int(positives)} positive frames of {len(y)}: need both "
                         "successful and failed (or long enough successful) episodes")
    model = SuccessNet(config.channels, config.image_size)
    # Positives are few (a tail per successful episode): weight them up to balance the classes.
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - positives) / positives))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for mb_idx in torch.randperm(len(y), generator=generator).split(batch_size):
            mb_x = x[mb_idx]
            loss = loss_fn(model(mb_x), y[mb_idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def parse(argv: Sequence[str]) -> argparse.Namespace:
    defaults = ClassifierConfig()
    ap = argparse.ArgumentParser(prog="vla-rl train-classifier", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="episode dataset root(s)")
    ap.add_argument("--out", type=Path, required=True, help="output directory (model.safetensors, classifier.json)")
    ap.add_argument("--camera", default=defaults.camera, help="dataset camera to train on")
    ap.add_argument("--image-size", type=int, default=defaults.image_size, help="input size (px)")
    ap.add_argument("--positive-tail", type=int, default=defaults.positive_tail,
                    help="last frames of a successful episode labelled positive")
    ap.add_argument("--negative-head", type=float, default=defaults.negative_head,
                    help="leading fraction of a successful episode labelled negative")
    ap.add_argument("--heldout", type=float, default=0.25, help="fraction of episodes held out (split by episode)")
    ap.add_argument("--threshold", type=float, default=defaults.threshold, help="decision probability")
    ap.add_argument("--hold-steps", type=int, default=defaults.hold_steps,
                    help="consecutive success frames the detector requires")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    # One thread: this net is too small to gain from more, and on a busy machine two threads thrash.
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return ap.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    t0 = time.monotonic()
    try:
        config = ClassifierConfig(camera=args.camera, image_size=args.image_size, threshold=args.threshold,
                                  hold_steps=args.hold_steps, positive_tail=args.positive_tail,
                                  negative_head=args.negative_head)
        if not 0.0 < args.heldout < 1.0:
            raise ValueError(f"--heldout={args.heldout} must be in (0, 1)")
        eps = load_episodes(args.data, args.camera, args.positive_tail, args.negative_head)
        train_idx, heldout_idx = split_episodes(eps.success, args.heldout, args.seed)
        if not heldout_idx or not any(eps.success[i] for i in heldout_idx):
            raise ValueError(f"{len(eps.success)} episodes ({sum(eps.success)} successful) leave no successful "
                             "held-out episode; record more")
        model = train(eps, train_idx, config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed)
    except (DatasetError, ValueError) as exc:
        print(f"vla-rl train-classifier: {exc}", file=sys.stderr)
        return 2
    heldout = evaluate(model, eps, heldout_idx, config)
    config.trained_on = {"data": [str(p) for p in args.data], "train_episodes": len(train_idx),
                         "heldout_episodes": [eps.names[i] for i in heldout_idx], "epochs": args.epochs,
                         "seed": args.seed}
    config.heldout = heldout
    save_classifier(args.out, model, config)
    s, f = heldout["successes_detected"], heldout["failures_flagged"]
    skipped = f"; skipped {eps.skipped} without a verdict (abort, e-stop, ...)" if eps.skipped else ""
    print(f"trained on {len(train_idx)} episodes in {time.monotonic() - t0:.1f} s; held out {len(heldout_idx)}"
          f"{skipped}")
    print(f"held-out frames: precision {heldout['precision']:.3f} recall {heldout['recall']:.3f} "
          f"({heldout['frames']} labelled frames, threshold {config.threshold})")
    print(f"held-out episodes (hold {config.hold_steps}): success found in {s[0]}/{s[1]} successful, "
          f"{f[0]}/{f[1]} failed")
    print(f"saved {args.out}")
    return 0
