"""Topic names shared by several nodes, defined once."""

# Each camera's image topic (relative to the arm's namespace): the sim bridge publishes its renders
# there, and a policy trained on a camera reads that camera's topic unless told otherwise.
CAMERA_TOPICS: dict[str, str] = {"front": "camera/image_raw", "wrist": "wrist_camera/image_raw"}


def camera_topic(camera: str) -> str:
    """The image topic of `camera`; a ValueError naming the known cameras otherwise."""
    try:
        return CAMERA_TOPICS[camera]
    except KeyError:
        raise ValueError(f"no default image topic for camera {camera!r} (known: {sorted(CAMERA_TOPICS)}); "
                         "set the node's image_topic parameter") from None
