"""ament_python package vla_rl_ros: colcon builds it on a ROS 2 install, pip installs it in a venv."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "vla_rl_ros"

# One console entry point per node: `ros2 run vla_rl_ros <name>` and the launch files' `exec:`.
NODES: dict[str, str] = {
    "camera_node": "vla_rl_ros.nodes.camera_node",
    "episode_manager": "vla_rl_ros.nodes.episode_manager",
    "executor": "vla_rl_ros.nodes.executor",
    "learner": "vla_rl_ros.nodes.learner",
    "policy_node": "vla_rl_ros.nodes.policy_node",
    "recorder": "vla_rl_ros.nodes.recorder",
    "sim_arms": "vla_rl_ros.nodes.sim_arms",
    "sim_bridge": "vla_rl_ros.nodes.sim_bridge",
    "success_detector": "vla_rl_ros.nodes.success_detector",
}


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries installing `folder` under share/<package>/, keeping subfolders."""
    entries: dict[str, list[str]] = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            entries.setdefault(f"share/{PACKAGE}/{path.parent}", []).append(str(path))
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("launch"),
        *tree("config"),
        *tree("sim"),
        *tree("models"),
    ],
    python_requires=">=3.10",
    # torch is a range the pinned CPU build (2.13.0) satisfies; see requirements/torch.txt.
    install_requires=[
        "setuptools",
        "numpy>=1.24",
        "pyyaml>=6",
        "torch>=2.2",
        # 5.17 is the oldest checked (the policy and learner tests; the GPU image has it): the policy's
        # block hooks need GradientCheckpointingLayer (4.52 on); 4.x is not tested.
        "transformers>=5.17",
        "peft>=0.13",
        "safetensors>=0.4",
        "mujoco>=3.2",
        "pyarrow>=15",
        "av>=12",
        "rosbags>=0.10",
        "matplotlib>=3.8",
        "tqdm>=4.66",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "ruff>=0.6",
                 "colcon-common-extensions>=0.3",
                 "num2words>=0.5",  # SmolVLM's processor will not build without it (test_policy_architectures)
                 "tensorboard>=2.14"],  # the learner's TensorBoard logs across a resume (test_rl_learner)
    },
    zip_safe=False,
    maintainer="vla_rl_ros maintainers",
    maintainer_email="maintainers@vla-rl-ros.dev",
    description="GRPO fine-tuning of vision-language-action policies as a ROS 2 graph.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vla-rl = vla_rl_ros.cli:main",
            *(f"{name} = {module}:main" for name, module in NODES.items()),
        ],
    },
)
