"""The digest a PolicyUpdate carries, and the check a policy node makes before serving the update.

The digest must cover everything loading can read, not just the weights: swapping two colour words in
tokenizer.json (or editing config.json, a processor file or vla_policy.json) changes what the policy
does as surely as new weights. It is therefore the sha256 over every regular file under the
checkpoint directory, each by its relative path and size, in path order: there is no list of loader
files to keep in step with transformers, and a file added or removed changes the digest too. Logs
count as well (`vla-rl sft` rewrites sft_log.jsonl in its output while it trains), so a directory is
announced only once nothing writes into it any more; the learner's are complete when announced
(`VLAPolicy.save` writes under a temporary name and renames). A symlinked directory inside a
checkpoint is refused: the loader could read its files, but they would escape the digest.

The one definition: the learner announces with `checkpoint_digest`, the policy node checks with
`verify_checkpoint`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20  # bytes read at a time


class DigestMismatchError(ValueError):
    """A checkpoint directory whose files are not the ones a PolicyUpdate announced."""


def checkpoint_digest(path: str | Path) -> str:
    """sha256 (hex) over every regular file under the checkpoint directory `path`."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; a policy checkpoint is the folder VLAPolicy.save wrote")
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*")):
        if file.is_symlink() and file.is_dir():
            raise ValueError(f"{file} is a symlinked directory: the checkpoint digest would not cover its files")
        if not file.is_file():
            continue
        # The name (no NUL in a path) and the size delimit each file's bytes: no two checkpoints hash alike.
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(path: str | Path, announced: str) -> None:
    """Raise DigestMismatchError unless the directory holds exactly the files whose digest was announced."""
    digest = checkpoint_digest(path)
    if digest != announced:
        raise DigestMismatchError(f"digest {digest[:12]}... of {path} does not match the announced "
                                  f"{announced[:12]}...: some file (weights, config, tokenizer, processor, "
                                  "vla_policy.json) differs")
