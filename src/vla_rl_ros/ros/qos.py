"""The graph's QoS profiles, one definition each (sensor streams use rclpy's qos_profile_sensor_data)."""

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

# Commands, requests, chunks, verdicts: every message matters, none is worth keeping for late joiners.
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# The per-step streams (joint states, chunk requests, chunks) that a recorder must get in full to
# rebuild every frame: a history of 1000 (seconds of a fast sim; each message is a few hundred bytes)
# on both sides, so that a reader lagging behind (a writer thread encoding video, a loaded machine)
# does not lose the request of a chunk and record an episode cut short.
STEPS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
# State that a node joining later must still get: the running episode, the newest policy.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Episode results and trajectories, published with a history of the last 100 so that a learner that
# starts late or restarts still receives the episodes that ended meanwhile (the buffer drops duplicates).
EPISODES = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The same stream for nodes that only care about episodes from now on (no history on joining).
RESULTS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
