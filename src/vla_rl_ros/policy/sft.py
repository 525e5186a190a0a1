"""Supervised fine-tuning on demonstrations, and `vla-rl sft`.

Samples: every frame t of every episode gives (image_t, state_t, instruction) -> the chunk of the
next C actions a_t .. a_{t+C-1}, tokenised per dimension. Chunks that run past the episode end are
not padded with invented actions: the missing steps are masked out of the loss (LeRobot's
`action_is_pad`), so the model never learns "what to do after the episode" from made-up labels.

Every `val_every` steps: validation loss and token accuracy on held-back episodes; every
`eval_every` steps: greedy held-out success in the sim on the selection seeds (the tail of the
held-out range; `vla-rl eval` reports on the head). The checkpoint with the best selection success
(ties: lower validation loss) is what `--out` holds at the end; `--keep-evaluated` keeps the others too
(e.g. to choose a start that is weak at a skill, README "The starting policy").

What can be told before training is checked before it: datasets that cannot be trained on together, a
`--init` checkpoint that does not fit the data, a sim evaluation that could not run (tasks that are not
sim tasks, a state or action space other than the sim's) and an empty training split. An evaluation
that fails all the same ends the evaluations, not the training: `--out` is written as without them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vla_rl_ros.data.atomic import DatasetError
from vla_rl_ros.policy.vla_policy import FinetuneConfig, VLAPolicy

LOG_FILE = "sft_log.jsonl"
DEFAULT_CAMERA = "front"  # a fresh policy's, when --camera is not given


@dataclass
class SFTConfig:
    """`vla-rl sft` options; each field is a command-line flag (underscores as dashes)."""

    data: list[str] = field(default_factory=list, metadata={"help": "dataset root(s) of demonstrations"})
    out: str = field(default="", metadata={"help": "checkpoint directory to write (the best one)"})
    keep_evaluated: str = field(default="", metadata={"help": "also write every evaluated checkpoint to "
                                                                "DIR/step_<N>, to choose by another rule"})
    init: str = field(default="", metadata={"help": "start from this checkpoint instead of a fresh tiny VLA"})
    camera: str = field(default="", metadata={"help": f"camera the policy sees (default: the --init checkpoint's, "
                                                     f"else {DEFAULT_CAMERA})"})
    chunk_size: int = field(default=4, metadata={"help": "C, actions per chunk (fresh model only)"})
    vision: str = field(default="grid", metadata={"help": "fresh tiny VLA image encoder: grid or keypoints"})
    proprio: bool = field(default=True, metadata={"help": "fresh tiny VLA gets a proprioception token"})
    film: bool = field(default=True, metadata={"help": "fresh tiny VLA conditions its conv stem on the "
                                                        "instruction (FiLM)"})
    hidden_size: int = field(default=128, metadata={"help": "fresh tiny VLA decoder width"})
    layers: int = field(default=3, metadata={"help": "fresh tiny VLA decoder layers"})
    finetune: str = field(default="full", metadata={"help": "full or lora"})
    steps: int = field(default=3000, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=64, metadata={"help": "samples per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate (cosine decay after warm-up)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    label_sigma: float = field(default=0.0, metadata={"help": "spread (bins) of HL-Gauss soft labels over the "
                                                              "action bins; 0: one-hot labels (OpenVLA)"})
    shift_pixels: int = field(default=4, metadata={"help": "random-shift augmentation, pixels (DrQ, "
                                                           "Kostrikov et al. 2020); 0 = off"})
    early_frames: int = field(default=3, metadata={"help": "an episode's first frames, where the instruction "
                                                           "decides the action (which object to go to)"})
    early_fraction: float = field(default=0.0, metadata={"help": "share of each batch drawn from the early "
                                                                 "frames (0: frames uniformly; the default's "
                                                                 "stage 2 used 0.5)"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of episodes held back for validation"})
    val_every: int = field(default=250, metadata={"help": "steps between validation passes"})
    eval_every: int = field(default=1000, metadata={"help": "steps between held-out sim evaluations (0: at "
                                                            "the end only)"})
    eval_episodes: int = field(default=10, metadata={"help": "selection episodes per task per evaluation"})
    eval_tasks: list[str] = field(default_factory=list, metadata={"help": "tasks to evaluate (default: "
                                                                          "those in the data); none: skip"})
    seed: int = field(default=0, metadata={"help": "torch/numpy seed"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    device: str = field(default="cpu", metadata={"help": "torch device"})

    def __post_init__(self) -> None:
        if self.finetune not in ("full", "lora"):
            raise ValueError(f"finetune must be full or lora, got {self.finetune!r}")
        if not 0 <= self.early_fraction <= 1:
            raise ValueError(f"early_fraction must be in [0, 1], got {self.early_fraction}")
        if self.early_frames < 1:
            raise ValueError(f"early_frames must be >= 1, got {self.early_frames}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.label_sigma < 0:
            raise ValueError(f"label_sigma must be >= 0 bins (0: one-hot labels), got {self.label_sigma}")
        for name in ("steps", "batch_size", "chunk_size", "val_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Samples:
    """Training samples, one per frame (N)."""

    images: np.ndarray  # (N, H, W, 3) uint8
    state: np.ndarray  # (N, P) float32
    instructions: list[str]  # (N,)
    chunks: np.ndarray  # (N, C, A) float32, robot units; zeros where masked
    valid: np.ndarray  # (N, C) bool, False past the episode end
    episode: np.ndarray  # (N,) int episode index
    frame: np.ndarray  # (N,) int index of the frame in its episode


def load_samples(roots: list[str], camera: str, chunk_size: int) -> Samples:
    """Every frame of every successful episode in the datasets as a (observation, chunk) sample. The
    datasets must agree on what a sample is: the actions' names, the state's size, the camera's image size."""
    from vla_rl_ros.data import EpisodeDataset

    parts: dict[str, list] = {k: [] for k in ("images", "state", "instructions", "chunks", "valid", "episode", "frame")}
    count = 0
    first: dict[str, object] = {}
    for root in roots:
        dataset = EpisodeDataset.open(root)
        if camera not in dataset.cameras:
            raise ValueError(f"dataset {root} has cameras {sorted(dataset.cameras)}, not {camera!r}; pass --camera")
        layout = {"actions": dataset.features["action"]["names"],
                  "state dims": dataset.features["observation.state"]["shape"][0],
                  f"{camera} image size (H, W)": dataset.cameras[camera]}
        first = first or layout
        for what, value in layout.items():
            if value != first[what]:
                raise ValueError(f"datasets {roots[0]} and {root} differ in {what}: {first[what]} and {value}; "
                                 "train on datasets of one action space, state and camera set-up")
        for episode in dataset:
            if not episode.success:  # imitate successes only
                continue
            T = episode.length
            steps = np.arange(T)[:, None] + np.arange(chunk_size)[None]  # (T, C)
            valid = steps < T
            parts["chunks"].append(np.where(valid[..., None], episode.actions[np.minimum(steps, T - 1)], 0.0))
            parts["valid"].append(valid)
            parts["images"].append(episode.images[camera])
            parts["state"].append(episode.state)
            parts["instructions"] += [episode.instruction] * T
            parts["episode"].append(np.full(T, count))
            parts["frame"].append(np.arange(T))
            count += 1
    if not count:
        raise ValueError(f"no successful episodes in {roots}; make demonstrations with `vla-rl demos`")
    return Samples(images=np.concatenate(parts["images"]), state=np.concatenate(parts["state"]),
                   instructions=parts["instructions"], chunks=np.concatenate(parts["chunks"]).astype(np.float32),
                   valid=np.concatenate(parts["valid"]), episode=np.concatenate(parts["episode"]),
                   frame=np.concatenate(parts["frame"]))


def draw_batch(train_idx: np.ndarray, early_idx: np.ndarray, batch_size: int, n_early: int,
               rng: np.random.Generator) -> np.ndarray:
    """(batch_size,) sample indices, n_early of them from early_idx. The frames before the arm commits
    to an object are the few where the words, not the image, decide the action; drawn uniformly they
    are about a tenth of the loss and the policy learns to pick an object from the image alone
    (docs/policy.md)."""
    return np.concatenate([rng.choice(early_idx, n_early), rng.choice(train_idx, batch_size - n_early)])


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """(B, H, W, 3): pad by edge replication and crop back at a random offset per image."""
    if pad == 0:
        return images
    B, H, W, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, (2, B))
    return np.stack([padded[i, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])


def soft_labels(positions: torch.Tensor, sigma: float, n_bins: int) -> torch.Tensor:
    """(..., n_bins) HL-Gauss targets (Imani & White 2018; Farebrother et al. 2024): the mass of a
    Gaussian centred on each continuous bin position (...) with spread `sigma` bins that falls in
    each bin, renormalised over the bins. Neighbouring bins share credit, so the policy learns that
    bin 130 is nearly as good as 131 instead of treating 256 bins as unrelated classes."""
    edges = torch.arange(n_bins + 1, device=positions.device, dtype=torch.float32)  # (n_bins + 1,)
    cdf = torch.special.ndtr((edges - positions[..., None].float()) / sigma)  # (..., n_bins + 1)
    mass = cdf[..., 1:] - cdf[..., :-1]
    return mass / mass.sum(-1, keepdim=True)


def chunk_loss(policy: VLAPolicy, samples: Samples, positions: np.ndarray, idx: np.ndarray,
               images: np.ndarray | None = None, *, label_sigma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked cross-entropy over the 256 action bins and token accuracy, for samples `idx`;
    positions (N, C*A) are the targets on the bin axis; label_sigma > 0 spreads them (HL-Gauss)."""
    images = samples.images[idx] if images is None else images
    logits = policy.action_logits(images, samples.state[idx], [samples.instructions[i] for i in idx])  # (B, CA, 256)
    n_bins = logits.shape[-1]
    position = torch.as_tensor(positions[idx], device=logits.device)  # (B, C*A)
    target = position.floor().long().clamp(max=n_bins - 1)  # (B, C*A) the bin each target falls in
    mask = torch.as_tensor(np.repeat(samples.valid[idx], policy.action_dim, axis=1), device=logits.device)
    if label_sigma > 0:
        log_p = F.log_softmax(logits, -1)  # (B, C*A, 256)
        per_token = -(soft_labels(position, label_sigma, n_bins) * log_p).sum(-1)  # (B, C*A)
    else:
        per_token = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, C*A)
    loss = (per_token * mask).sum() / mask.sum()
    accuracy = ((logits.argmax(-1) == target) * mask).sum() / mask.sum()
    return loss, accuracy


def new_policy(config: SFTConfig, samples: Samples, action_names: list[str], camera: str) -> VLAPolicy:
    """A fresh tiny VLA for the samples (their instructions, action ranges, state size)."""
    from vla_rl_ros.policy.default import new_tiny_policy

    valid_actions = samples.chunks[:, 0][samples.valid[:, 0]]  # (N, A): each frame's own action
    policy = new_tiny_policy(sorted(set(samples.instructions)), valid_actions, chunk_size=config.chunk_size,
                             state_dim=samples.state.shape[1] if config.proprio else 0, states=samples.state,
                             camera=camera,
                             image_size=samples.images.shape[1], action_names=action_names,
                             vision=config.vision, film=config.film, hidden_size=config.hidden_size,
                             num_hidden_layers=config.layers)
    policy.model.to(config.device)
    return policy


def state_dim(policy: VLAPolicy) -> int:
    """Size of the state the policy's model takes (0: none, or a model that does not say)."""
    return getattr(policy.base_model.config, "proprio_dim", 0) or 0


def training_camera(config: SFTConfig, init: VLAPolicy | None) -> str:
    """--camera, else the --init checkpoint's, else DEFAULT_CAMERA. A checkpoint is refused another camera
    than its own: trained on another view's images, it would silently stop working on its own."""
    if init is None:
        return config.camera or DEFAULT_CAMERA
    if config.camera not in ("", init.camera):
        raise ValueError(f"--init {config.init} sees camera {init.camera!r}, not {config.camera!r}; leave --camera "
                         f"out (or pass --camera {init.camera}), or train a fresh policy on {config.camera!r}")
    return init.camera


def check_init_fits(init: VLAPolicy, checkpoint: str, samples: Samples, action_names: list[str]) -> None:
    """The --init checkpoint must act in the data's action space and take its state, else its weights
    would meet tensors of another size (a raw RuntimeError) or learn a different meaning of its outputs."""
    A, P = samples.chunks.shape[2], samples.state.shape[1]
    if init.action_dim != A:
        raise ValueError(f"--init {checkpoint} acts with {init.action_dim}-dim actions {init.config.action_names}; "
                         f"the data's are {A}-dim {action_names}: fine-tune it on data of its actions, or train "
                         "a fresh policy (leave --init out)")
    if state_dim(init) not in (0, P):
        raise ValueError(f"--init {checkpoint} takes {state_dim(init)}-dim state; the data's is {P}-dim: fine-tune "
                         "it on data of its robot, or train a fresh policy (leave --init out)")


def check_evaluation(policy: VLAPolicy, tasks: list[str], episodes: int, action_names: list[str]) -> None:
    """The sim evaluation must be able to run: checked before training, as it first runs after eval_every
    steps. Tasks must be sim tasks with enough selection seeds; the policy must act on the sim's ee_delta
    actions, take the sim's state, see one of its cameras; the sim must render (an OpenGL context)."""
    from vla_rl_ros.policy.evaluate import heldout_seeds
    from vla_rl_ros.sim import STATE_NAMES, TASKS, make_env
    from vla_rl_ros.sim.env import EE_DIMS
    from vla_rl_ros.sim.env import action_names as sim_action_names

    skip = "pass --eval-tasks with sim tasks, or --eval-tasks none to train without sim evaluation"
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"cannot evaluate in the sim: {unknown} are not sim tasks ({', '.join(TASKS)}); {skip}")
    sim_actions = list(sim_action_names("ee_delta", policy.action_dim)) if policy.action_dim in EE_DIMS else []
    if action_names != sim_actions:
        raise ValueError(f"cannot evaluate in the sim: the data's actions {action_names} are not the sim's ee_delta "
                         f"actions; {skip}")
    if state_dim(policy) not in (0, len(STATE_NAMES)):
        raise ValueError(f"cannot evaluate in the sim: the policy takes {state_dim(policy)}-dim state, the sim's is "
                         f"{len(STATE_NAMES)}-dim {list(STATE_NAMES)}; {skip}")
    try:
        for task in tasks:
            heldout_seeds(task, episodes, tail=True)
        make_env(tasks[0], image_size=policy.image_size, cameras=(policy.camera,), action_dim=policy.action_dim).close()
    except (RuntimeError, ValueError) as exc:  # too few seeds, a camera the sim lacks, no OpenGL context
        raise ValueError(f"cannot evaluate in the sim: {exc}; {skip}") from exc


def split_episodes(samples: Samples, val_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sample indices: val_fraction of the episodes held back, at least one trained on."""
    episodes = rng.permutation(samples.episode.max() + 1)
    n_val = round(len(episodes) * val_fraction)
    if n_val >= len(episodes):
        raise ValueError(f"--val-fraction {val_fraction} holds back {n_val} of the {len(episodes)} successful "
                         "episodes for validation: the training split is empty; lower --val-fraction or add episodes")
    val_mask = np.isin(samples.episode, episodes[:n_val])
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def train(config: SFTConfig) -> dict:
    """Run SFT; returns the final summary (also the last line of sft_log.jsonl), with "eval/error" if a sim
    evaluation failed (training went on without evaluations)."""
    from tqdm import tqdm

    from vla_rl_ros.data import EpisodeDataset
    from vla_rl_ros.policy.evaluate import evaluate

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    init = VLAPolicy.load(config.init, device=config.device) if config.init else None
    camera = training_camera(config, init)
    samples = load_samples(config.data, camera, init.chunk_size if init else config.chunk_size)
    train_idx, val_idx = split_episodes(samples, config.val_fraction, rng)
    action_names = list(EpisodeDataset.open(config.data[0]).features["action"]["names"])
    in_data = {meta["task"] for root in config.data for meta in EpisodeDataset.open(root).episodes_meta()}
    tasks = config.eval_tasks or sorted(in_data)
    tasks = [] if tasks == ["none"] else tasks
    if init is not None:
        check_init_fits(init, config.init, samples, action_names)
    policy = init or new_policy(config, samples, action_names, camera)
    if tasks:
        check_evaluation(policy, tasks, config.eval_episodes, action_names)
    policy.configure_finetuning(FinetuneConfig(mode=config.finetune))
    positions = policy.action_tokenizer.bin_position(samples.chunks).reshape(len(samples.episode), -1)  # (N, C*A)

    early_idx = train_idx[samples.frame[train_idx] < config.early_frames]
    n_early = round(config.batch_size * config.early_fraction)

    optimiser = torch.optim.AdamW(policy.trainable_parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 0
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        return 0.5 * (1 + np.cos(np.pi * (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_at)
    out = Path(config.out)
    log = [{"config": asdict(config), "camera": camera, "train_samples": len(train_idx), "val_samples": len(val_idx),
            "tasks": tasks}]

    def write_log() -> None:  # rewritten whole: a save replaces the checkpoint folder it lives in
        out.mkdir(parents=True, exist_ok=True)
        (out / LOG_FILE).write_text("".join(json.dumps(line) + "\n" for line in log))

    best: tuple[float, float] | None = None
    record: dict = {}
    eval_error = ""  # why the sim evaluation failed, if it did
    started = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc="sft", unit="step")
    for step in bar:
        policy.model.train()
        idx = draw_batch(train_idx, early_idx, config.batch_size, n_early, rng)
        loss, accuracy = chunk_loss(policy, samples, positions, idx,
                                    random_shift(samples.images[idx], config.shift_pixels, rng),
                                    label_sigma=config.label_sigma)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy.item():.2f}")
        record = {"step": step, "loss/train": loss.item(), "sft/token_accuracy": accuracy.item(),
                  "time/elapsed_s": time.perf_counter() - started}
        last = step == config.steps
        if len(val_idx) and (step % config.val_every == 0 or last):
            record |= validate(policy, samples, positions, val_idx, config.batch_size)
        if tasks and not eval_error and ((config.eval_every and step % config.eval_every == 0) or last):
            policy.model.eval()
            try:
                report = evaluate(policy, tasks, config.eval_episodes, tail=True)
            except Exception as exc:  # the training must not be lost to it: go on without evaluations
                kept = "keeps the best checkpoint evaluated before" if best else "gets the last weights"
                eval_error = record["eval/error"] = (f"the sim evaluation at step {step} failed: {exc!r}; training "
                                                     f"goes on without evaluations, --out {kept}")
                bar.write(eval_error)
            else:
                record |= {"eval/success_rate": report["mean_success_rate"],
                           **{f"eval/{t}": r["success_rate"] for t, r in report["tasks"].items()}}
                score = (report["mean_success_rate"], -record.get("loss/val", 0.0))
                if config.keep_evaluated:
                    policy.save(Path(config.keep_evaluated) / f"step_{step}")
                if best is None or score > best:
                    best = score
                    policy.save(out)
                bar.write(f"step {step}: selection success {report['mean_success_rate']:.1%} "
                          + " ".join(f"{t}={r['success_rate']:.0%}" for t, r in report["tasks"].items()))
        if "loss/val" in record or "eval/success_rate" in record or "eval/error" in record or last:
            log.append(record)
            write_log()
    if best is None:  # no sim evaluation (or none that ran): keep the last weights
        policy.save(out)
        write_log()
    return record | ({"eval/error": eval_error} if eval_error else {})


def validate(policy: VLAPolicy, samples: Samples, positions: np.ndarray, val_idx: np.ndarray, batch: int) -> dict:
    """Validation loss on one-hot targets whatever the training labels, so runs compare."""
    policy.model.eval()
    losses, accuracies, weights = [], [], []
    with torch.no_grad():
        for start in range(0, len(val_idx), batch):
            idx = val_idx[start:start + batch]
            loss, accuracy = chunk_loss(policy, samples, positions, idx)
            losses.append(loss.item())
            accuracies.append(accuracy.item())
            weights.append(samples.valid[idx].sum())
    return {"loss/val": float(np.average(losses, weights=weights)),
            "sft/val_token_accuracy": float(np.average(accuracies, weights=weights))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-rl sft", description="supervised fine-tuning on demonstrations")
    for f in fields(SFTConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata["help"]
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
        elif f.type == "list[str]":
            parser.add_argument(flag, nargs="+", default=[], help=help_, required=f.name == "data")
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            parser.add_argument(flag, type=kind, default=f.default, help=f"{help_} (default {f.default})",
                                required=f.name == "out")
    return parser


def main(argv: list[str]) -> int:
    """0 when done; 2 for settings or data it cannot train with (one line, nothing written); 1 when trained
    but a sim evaluation failed."""
    args = build_parser().parse_args(argv)
    try:
        summary = train(SFTConfig(**vars(args)))
    except (DatasetError, ValueError) as exc:
        print(f"vla-rl sft: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    if "eval/error" in summary:
        print(f"vla-rl sft: {summary['eval/error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
