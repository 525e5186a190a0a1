"""GPU figures of a random-init Llava of real shapes (SigLIP + Llama) through VLAPolicy: act() latency
p50/p95 at batch 1, 8 and 16 against the raw forward pass, GRPO update samples/s (full fine-tuning and
LoRA r=32), peak memory. One JSON line per figure.

    .venv/bin/python benchmarks/bench_gpu.py [--sizes small,1b,7b] [--dtype bfloat16] [--smoke]
                                             [--device cuda] [--json out.json]

sizes (224 px images, chunks of 8 x 7 action tokens, a 32,000-token vocabulary):
  small  a test-sized model (vision 2 x 64, text 2 x 128)
  1b     SigLIP-base/16 (12 x 768, 196 image tokens) + TinyLlama-1.1B's shapes (22 x 2048)
  7b     SigLIP-so400m/14 (27 x 1152, 256 image tokens) + Llama-2-7B's shapes (32 x 4096): OpenVLA's size
A sample is one chunk (image, prompt, 56 sampled tokens) for one epoch, as bench_learner counts it.
--smoke: the small size only and a few repeats (under a minute). Without CUDA, --device cuda (the
default) prints one line saying so and exits 0; --device cpu runs the same code on the CPU (the small
size is what fits), which is how the code path is checked on machines without a GPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import transformers as tf

from vla_rl_ros.policy import ActionTokenizer, FinetuneConfig, PolicyConfig, VLAPolicy
from vla_rl_ros.policy.action_tokenizer import N_BINS
from vla_rl_ros.policy.tiny_vla import build_word_tokenizer
from vla_rl_ros.rl.config import GRPOConfig
from vla_rl_ros.rl.learner import GradientSteps, split_batch
from vla_rl_ros.rl.records import TrajectoryRecord

VOCAB = 32_000
IMAGE = 224
CHUNK, ACTION_DIM = 8, 7
PROMPT = "<image> what action should the robot take to {instruction}?"
INSTRUCTION = "put the blue cube on the plate"
SIZES = {  # vision (layers, hidden, heads, mlp, patch), text (layers, hidden, heads, kv heads, mlp)
    "small": ((2, 64, 2, 128, 16), (2, 128, 4, 4, 256)),
    "1b": ((12, 768, 12, 3072, 16), (22, 2048, 32, 4, 5632)),
    "7b": ((27, 1152, 16, 4304, 14), (32, 4096, 32, 32, 11008)),
}
BATCHES = (1, 8, 16)
CHUNKS_PER_TRAJECTORY = 4


def llava(size: str, directory: Path) -> None:
    """A random-init Llava of `size`'s shapes, saved with its processor (weights do not change speed)."""
    (v_layers, v_hidden, v_heads, v_mlp, patch), (t_layers, t_hidden, t_heads, t_kv, t_mlp) = SIZES[size]
    tok = build_word_tokenizer([PROMPT.format(instruction=INSTRUCTION)], num_slots=0, num_action_tokens=0,
                               vocab_size=VOCAB - N_BINS - 1)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    with torch.device("meta"):  # shapes first: 7b's random init on the CPU would take minutes
        model = tf.LlavaForConditionalGeneration(tf.LlavaConfig(
            vision_config=tf.SiglipVisionConfig(num_hidden_layers=v_layers, hidden_size=v_hidden,
                                                num_attention_heads=v_heads, intermediate_size=v_mlp,
                                                image_size=IMAGE, patch_size=patch),
            text_config=tf.LlamaConfig(vocab_size=len(tok) + N_BINS, num_hidden_layers=t_layers, hidden_size=t_hidden,
                                       num_attention_heads=t_heads, num_key_value_heads=t_kv, intermediate_size=t_mlp),
            image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="full",
            vision_feature_layer=-1))
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    model.save_pretrained(directory)
    tf.LlavaProcessor(image_processor=tf.SiglipImageProcessorPil(size={"height": IMAGE, "width": IMAGE}),
                      tokenizer=tok, patch_size=patch, vision_feature_select_strategy="full", image_token="<image>",
                      num_additional_image_tokens=0).save_pretrained(directory)
    config = PolicyConfig(chunk_size=CHUNK, action_dim=ACTION_DIM, image_size=IMAGE, prompt=PROMPT,
                          action_bounds=ActionTokenizer((-1.0,) * ACTION_DIM, (1.0,) * ACTION_DIM).to_json(),
                          placeholder_token_ids=[tok.pad_token_id] * (CHUNK * ACTION_DIM))
    (directory / "vla_policy.json").write_text(json.dumps(asdict(config)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latencies_ms(fn, device: torch.device, repeats: int) -> dict[str, float]:
    fn()  # warm-up: kernels, allocator
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def trajectories(policy: VLAPolicy, count: int) -> list[TrajectoryRecord]:
    rng = np.random.default_rng(0)
    n = CHUNKS_PER_TRAJECTORY
    return [TrajectoryRecord(
        episode_id=f"e{i}", arm="arm0", instruction=INSTRUCTION, policy_version=0, temperature=1.0,
        images=rng.integers(0, 256, (n, IMAGE, IMAGE, 3), dtype=np.uint8), state=np.zeros((n, 1), np.float32),
        token_ids=rng.integers(policy.action_token_offset, policy.vocab_size, (n, CHUNK * ACTION_DIM)),
        log_probs=np.zeros(n, np.float32), steps=np.arange(n) * CHUNK) for i in range(count)]


def update_figures(directory: Path, size: str, mode: str, args: argparse.Namespace) -> dict:
    """GRPO update samples/s and peak memory: GradientSteps (old log-probs, then one epoch of mini-batch
    steps) on synthetic trajectories of CHUNKS_PER_TRAJECTORY chunks."""
    device = torch.device(args.device)
    reset_peak(device)
    policy = VLAPolicy.load(directory, device=args.device, dtype=args.dtype)
    policy.configure_finetuning(FinetuneConfig(mode=mode, lora_rank=32, lora_alpha=64))
    batch = 8 if args.smoke else 32
    # forward passes of two trajectories, as before the budget was in tokens: comparable figures
    config = GRPOConfig(epochs=1, minibatch_size=8,
                        forward_tokens=2 * CHUNKS_PER_TRAJECTORY * policy.sequence_length(INSTRUCTION))
    steps = GradientSteps(policy, config)
    share = split_batch(trajectories(policy, batch), torch.linspace(-1, 1, batch), [list(range(batch))], 1)[0]
    steps.run(share)  # warm-up
    sync(device)
    start = time.perf_counter()
    steps.run(share)
    sync(device)
    seconds = time.perf_counter() - start
    return {"size": size, "figure": f"grpo_update_{mode}", "samples_per_s": batch * CHUNKS_PER_TRAJECTORY / seconds,
            "peak_gib": peak_gib(device)}


def forward(model: torch.nn.Module, inputs: dict) -> None:
    """The raw forward pass act() wraps (its inputs made beforehand)."""
    with torch.inference_mode():
        model(**inputs)


def act_figures(directory: Path, size: str, args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    policy = VLAPolicy.load(directory, device=args.device, dtype=args.dtype)
    generator = torch.Generator(policy.device).manual_seed(0)
    out = []
    for batch in BATCHES:
        images = np.random.default_rng(batch).integers(0, 256, (batch, IMAGE, IMAGE, 3), dtype=np.uint8)
        texts = [INSTRUCTION] * batch
        reset_peak(device)
        act = latencies_ms(functools.partial(policy.act, images, None, texts, greedy=False, generator=generator),
                           device, args.repeats)
        raw = latencies_ms(functools.partial(forward, policy.model, policy.model_inputs(images, None, texts)),
                           device, args.repeats)
        out.append({"size": size, "figure": "act_latency_ms", "batch": batch, "act": act, "raw_forward": raw,
                    "act_over_raw_p50": act["p50"] / raw["p50"], "peak_gib": peak_gib(device)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,1b,7b", help=f"comma-separated, of {list(SIZES)}")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--repeats", type=int, default=20, help="timed act()/forward calls per batch size")
    parser.add_argument("--smoke", action="store_true", help="small only, 3 repeats: under a minute")
    parser.add_argument("--json", default=None, help="also write every figure to this file (a JSON list)")
    args = parser.parse_args()
    sizes = ["small"] if args.smoke else args.sizes.split(",")
    if args.smoke:
        args.repeats = 3
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        parser.error(f"unknown size(s) {unknown}; choose from {list(SIZES)}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device; --device cpu runs the code path on the CPU"}))
        return 0
    name = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "cpu"
    figures = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            llava(size, Path(tmp))
            rows = act_figures(Path(tmp), size, args)
            for mode in ("full", "lora"):
                try:
                    rows.append(update_figures(Path(tmp), size, mode, args))
                except torch.OutOfMemoryError:
                    rows.append({"size": size, "figure": f"grpo_update_{mode}", "out_of_memory": True})
            for row in rows:
                row |= {"device": name, "dtype": args.dtype}
                print(json.dumps(row), flush=True)
            figures += rows
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
