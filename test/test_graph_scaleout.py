"""Scale-out (README, "Scaling out"): arms and learner on two hosts, and arms split across two policy
servers, each end to end with a tiny policy that trains for real.

The two hosts are two network namespaces joined by a veth pair on a private /30: each runs its own
launch, and DDS discovery can only cross the veth (the namespaces share no loopback). Fast DDS is held
to UDP (`FASTDDS_BUILTIN_TRANSPORTS=UDPv4`): its shared-memory transport would otherwise carry the
data through this machine's /dev/shm, which two real hosts do not share. The learner's run_dir is on
the one filesystem both namespaces see, as a shared filesystem would be across real hosts.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from rosgraph import RosGraph, wait_until
from test_graph_train import RUN_TIMEOUT_S, metrics, train_config
from vla_rl_interfaces.msg import Trajectory

from vla_rl_ros.launcher.description import describe, resolve_launch_file
from vla_rl_ros.ros.names import TRAJECTORY_TOPIC
from vla_rl_ros.ros.qos import EPISODES


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def hosts() -> Iterator[dict[str, str]]:
    """Two network namespaces `a` and `b` joined by a veth pair, with their addresses (`a_ip`, `b_ip`);
    deleted at the end, whatever happened (their veth ends go with them)."""
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2): cannot make network namespaces")
    tag = f"vr{os.getpid() % 10**5}{random.randrange(16**3):03x}"  # unique per run; interface names <= 15 chars
    a, b = f"{tag}a", f"{tag}b"
    net = f"10.{random.randrange(256)}.{random.randrange(256)}.{4 * random.randrange(64)}"
    base = net.rsplit(".", 1)
    a_ip, b_ip = f"{base[0]}.{int(base[1]) + 1}", f"{base[0]}.{int(base[1]) + 2}"
    made: list[str] = []
    try:
        try:
            for ns in (a, b):
                ip("netns", "add", ns)
                made.append(ns)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot make network namespaces here (`ip netns add` needs root or CAP_SYS_ADMIN): "
                        f"{exc.stderr.strip()}")
        ip("link", "add", f"{tag}x", "type", "veth", "peer", "name", f"{tag}y")
        for ns, end, addr in ((a, f"{tag}x", a_ip), (b, f"{tag}y", b_ip)):
            ip("link", "set", end, "netns", ns)
            ip("-n", ns, "addr", "add", f"{addr}/30", "dev", end)
            ip("-n", ns, "link", "set", end, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield {"a": a, "b": b, "a_ip": a_ip, "b_ip": b_ip}
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def nodes(name: str, tmp: Path, **args: str) -> dict[str, dict]:
    """Fully qualified node name -> its inline launch parameters, of launch file `name` with `args`."""
    out = {}
    for proc in describe(resolve_launch_file(name), args, tmp).processes:
        ros = proc.cmd[proc.cmd.index("--ros-args") + 1:]
        remaps = dict(ros[i + 1].split(":=") for i, w in enumerate(ros) if w == "-r")
        params = {k: v for i, w in enumerate(ros) if w == "--params-file" and Path(ros[i + 1]).parent == tmp
                  for k, v in yaml.safe_load(Path(ros[i + 1]).read_text())["/**"]["ros__parameters"].items()}
        out[f"{remaps.get('__ns', '').rstrip('/')}/{remaps['__node']}"] = params
    return out


def test_rollout_hosts_prefix_their_arms_and_split_them_across_policy_servers(tmp_path: Path) -> None:
    host = nodes("rollout_host", tmp_path, host_prefix="h1", num_arms="4", policy_servers="2", device_1="cuda:1",
                 schedule_seed="3", host_index="1", num_hosts="3")
    assert sorted(host) == ["/h1/arm0/sim_arms", "/h1/arm1/sim_arms", "/h1/arm2/sim_arms", "/h1/arm3/sim_arms",
                            "/h1/policy_0/policy_node", "/h1/policy_1/policy_node"]
    assert host["/h1/policy_0/policy_node"].items() >= {"arms": ["/h1/arm0", "/h1/arm2"], "device": "cpu"}.items()
    assert host["/h1/policy_1/policy_node"].items() >= {"arms": ["/h1/arm1", "/h1/arm3"], "device": "cuda:1"}.items()
    assert {host[f"/h1/arm{i}/sim_arms"]["episode_manager"]["seed"] for i in range(4)} == {3}
    assert [tuple(host[f"/h1/arm{i}/sim_arms"]["episode_manager"][k] for k in ("arm_index", "num_arms", "host_index",
                                                                               "num_hosts")) for i in range(4)] == \
        [(i, 4, 1, 3) for i in range(4)]
    # One server (train_sim's default): every arm, no prefix; two servers with one arm: only the first.
    sim = nodes("train_sim", tmp_path)
    assert sim["/policy_node"]["arms"] == ["/arm0", "/arm1"] and sim["/learner"]["arms"] == ["arm0", "arm1"]
    # What an included file sets stays in its group (an include alone leaks it, in ros2 launch as in
    # vla-rl launch): the second policy server's arms and device do not reach the learner.
    split = nodes("train_sim", tmp_path, num_arms="4", policy_servers="2", device_1="cuda:1")
    assert split["/learner"]["arms"] == ["arm0", "arm1", "arm2", "arm3"] and split["/learner"]["device"] == "cpu"
    assert split["/policy_1/policy_node"]["device"] == "cuda:1"
    assert sorted(nodes("train_sim", tmp_path, num_arms="1", policy_servers="2")) == [
        "/arm0/sim_arms", "/learner", "/policy_0/policy_node"]
    # A learner host for arms elsewhere, optionally with their policy node.
    learner = nodes("learner_host", tmp_path, arms="[h1/arm0, h2/arm0]", policy="true", policy_device="cuda:1")
    assert learner["/learner"]["arms"] == learner["/policy_node"]["arms"] == ["h1/arm0", "h2/arm0"]
    assert learner["/policy_node"]["device"] == "cuda:1" and learner["/learner"]["device"] == "cpu"
    assert sorted(nodes("rollout_host", tmp_path, host_prefix="h2", policy_servers="0")) == [
        "/h2/arm0/sim_arms", "/h2/arm1/sim_arms"]


def host_launch(graph: RosGraph, ns: str, label: str, *args: str) -> subprocess.Popen[bytes]:
    """`vla-rl launch ...` inside network namespace `ns`, discovering peers on its subnet (the veth)."""
    cmd = ["ip", "netns", "exec", ns, *graph.launch_command(*args)]
    return graph.start(label, cmd, env={"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET",
                                        "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"})


@pytest.mark.graph
def test_a_learner_host_trains_on_a_rollout_hosts_arms_and_its_policy_reaches_them(
        hosts: dict[str, str], ros_graph: RosGraph, tiny_checkpoint: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # Strictly on-policy: update 2 needs episodes of v1, which only a policy node on host a that
    # loaded update 1 from host b can produce.
    config = train_config(tmp_path, max_policy_lag=0)
    common = (f"checkpoint:={tiny_checkpoint}", f"config_dir:={config}")
    host_launch(ros_graph, hosts["a"], "rollout", "rollout_host", "host_prefix:=h1", "num_arms:=1", "tasks:=[reach]",
                "eval_seeds_per_task:=0", *common)
    learner = host_launch(ros_graph, hosts["b"], "learner", "learner_host", "arms:=[h1/arm0]", "max_updates:=2",
                          f"run_dir:={run_dir}", *common)
    assert learner.wait(timeout=RUN_TIMEOUT_S) == 0, ros_graph.log("learner")[-5000:]
    assert [int(float(r["update"])) for r in metrics(run_dir)] == [1, 2]
    assert "learning from ['h1/arm0']" in ros_graph.log("learner")
    rollout = ros_graph.log("rollout")
    assert "to 1 arm(s)" in rollout and "now serving policy v1" in rollout


@pytest.mark.graph
def test_two_policy_servers_each_serve_their_arms_and_both_load_each_update(
        ros_graph: RosGraph, tiny_checkpoint: Path, tmp_path: Path) -> None:
    trajectories = {arm: ros_graph.probe.collect(Trajectory, f"/{arm}/{TRAJECTORY_TOPIC}", EPISODES)
                    for arm in ("arm0", "arm1")}
    run_dir = tmp_path / "run"
    ros_graph.launch("train_sim", "num_arms:=2", "policy_servers:=2", "tasks:=[reach]", f"run_dir:={run_dir}",
                     f"checkpoint:={tiny_checkpoint}", f"config_dir:={train_config(tmp_path, max_policy_lag=0)}",
                     "eval_seeds_per_task:=0")

    def versions(arm: str) -> set[int]:
        return {t.policy_version for t in trajectories[arm]}

    # Episodes reach the learner's topics on the old weights and, once both servers have loaded an
    # update, each arm's on new ones: each trajectory carries the version of the server that served it.
    # Update 1 may come from one arm's group before the other arm's first episode has stepped (that
    # episode is then served v1 from its start), so v0 is certain from one arm only; and with updates
    # every fraction of a second an arm may see no whole episode of v1, only of later versions.
    wait_until(lambda: all(max(versions(arm), default=0) >= 1 for arm in trajectories)
               and 0 in versions("arm0") | versions("arm1"), RUN_TIMEOUT_S,
               "trajectories of an update from both arms, and of v0")
    lines = ros_graph.log("launch").splitlines()
    for server in ("policy_0.policy_node", "policy_1.policy_node"):  # their loggers: namespace.name
        assert any(f"[{server}]" in line and "to 1 arm(s)" in line for line in lines), server
        assert any(f"[{server}]" in line and re.search(r"now serving policy v[1-9]", line) for line in lines), server
    assert {t.arm for t in trajectories["arm0"]} == {"/arm0"} and {t.arm for t in trajectories["arm1"]} == {"/arm1"}
    assert metrics(run_dir), "the learner made no update from these episodes"
