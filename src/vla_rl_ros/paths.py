"""Where a package's installed data (launch/, config/, sim/) lives, with or without a ROS 2 install."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ament_index_python.packages import get_package_share_directory


class PackageNotFoundError(LookupError):
    """A package named in a launch file or config is neither a source checkout nor in the ament index."""


def package_share(package: str) -> Path:
    """The share directory of `package`.

    A source checkout wins over the ament index: an editable pip install copies launch/ and config/
    into the venv's share/ once at install time, and those copies would go stale as the tree changes.
    A checkout is recognised by `<root>/src/<package>/` next to `<root>/package.xml`.
    """
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin is not None:
        root = Path(spec.origin).resolve().parents[2]
        if (root / "package.xml").is_file() and (root / "src" / package).is_dir():
            return root
    try:
        return Path(get_package_share_directory(package))
    except (LookupError, OSError, ValueError) as exc:
        raise PackageNotFoundError(
            f"package {package!r} not found: it is not a source checkout and not in the ament index "
            "(AMENT_PREFIX_PATH); source your workspace's install/setup.bash or run scripts/setup.sh"
        ) from exc



def default_checkpoint() -> Path:
    """The embedded default policy shipped with the package (made by `vla-rl sft`, see README)."""
    path = package_share("vla_rl_ros") / "models" / "default_policy"
    if not (path / "vla_policy.json").is_file():
        raise FileNotFoundError(
            f"no embedded default policy at {path} yet: make one with `vla-rl demos` and `vla-rl sft --out {path}` "
            "(README, 'The default policy'), or pass checkpoint:=DIR with your own")
    return path
