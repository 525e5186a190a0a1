"""The graph's topic and service names, defined once: nodes, the operator tool and the tests import them.

Names without a leading slash are relative to the arm's namespace (e.g. /arm0/episode_start); the
strings are the wire names, so they stay as they are. Launch files (YAML) name some of them in
remappings too. The robot config's default command_topic (control/robot.py, a floor below) is
JOINT_TRAJECTORY_TOPIC's name, the sim bridge's command input.
"""

# -- topics ------------------------------------------------------------------------------------------
# Each camera's image topic: the sim bridge publishes its renders there, camera_node the front one, and
# a policy trained on a camera reads that camera's topic unless told otherwise.
CAMERA_TOPICS: dict[str, str] = {"front": "camera/image_raw", "wrist": "wrist_camera/image_raw"}
CAMERA_INFO_TOPIC = "camera/camera_info"  # CameraInfo of camera_node's image (with a calibration file)
JOINT_STATES_TOPIC = "joint_states"  # JointState: sim bridge / ros2_control -> executor, policy node, recorder
JOINT_TRAJECTORY_TOPIC = "joint_trajectory"  # JointTrajectory commands: executor -> sim bridge
TASK_STATE_TOPIC = "task_state"  # TaskState, the sim's privileged state: sim bridge -> success detector
CLOCK_TOPIC = "/clock"  # Clock, lockstep sim time: sim bridge -> the arm's sim-time nodes
EPISODE_START_TOPIC = "episode_start"  # EpisodeStart: episode manager -> executor, policy node, detector, recorder
EPISODE_RESULT_TOPIC = "episode_result"  # EpisodeResult: episode manager -> learner, policy node, executor, recorder
CHUNK_REQUEST_TOPIC = "chunk_request"  # ChunkRequest: executor -> policy node (and recorder)
ACTION_CHUNK_TOPIC = "action_chunk"  # ActionChunk: policy node -> executor, episode manager (and recorder)
TRAJECTORY_TOPIC = "trajectory"  # Trajectory of a training episode: policy node -> learner
POLICY_UPDATE_TOPIC = "/policy_update"  # PolicyUpdate, new weights: learner -> policy nodes, episode managers
SUCCESS_TOPIC = "success"  # SuccessSignal, the verdicts: success detector -> episode manager
ESTOP_TOPIC = "estop"  # Bool, true latches the e-stop: anyone -> executor, episode manager
OPERATOR_PROMPT_TOPIC = "operator_prompt"  # String, what the manager waits for: episode manager -> operator tool
DIAGNOSTICS_TOPIC = "/diagnostics"  # DiagnosticArray: executor, camera_node -> episode manager, users
DRY_RUN_TRAJECTORY_TOPIC = "executor/dry_run_trajectory"  # the executor's commands with dry_run (none to the arm)

# -- services ----------------------------------------------------------------------------------------
RESET_EPISODE_SERVICE = "reset_episode"  # ResetEpisode: episode manager -> sim bridge
LABEL_EPISODE_SERVICE = "label_episode"  # LabelEpisode, relabel a written episode: operator -> recorder
DETECTOR_LABEL_SERVICE = "success_detector/label_episode"  # LabelEpisode, the running episode's verdict: operator
RELEASE_ESTOP_SERVICE = "executor/release_estop"  # Trigger, the only release of a latched e-stop: operator
GO_HOME_SERVICE = "executor/go_home"  # Trigger, step the arm home between episodes: episode manager -> executor
MANAGER_READY_SERVICE = "episode_manager/ready"  # Trigger, the layout is restored: operator -> episode manager
MANAGER_ABORT_SERVICE = "episode_manager/abort"  # Trigger, end the running episode as abort: operator


def camera_topic(camera: str) -> str:
    """The image topic of `camera`; a ValueError naming the known cameras otherwise."""
    try:
        return CAMERA_TOPICS[camera]
    except KeyError:
        raise ValueError(f"no default image topic for camera {camera!r} (known: {sorted(CAMERA_TOPICS)}); "
                         "set the node's image_topic parameter") from None
