"""The graph's QoS profiles, one definition each (sensor streams read for their newest message use rclpy's
qos_profile_sensor_data)."""

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

# Verdicts, e-stops, diagnostics, /clock; readers of the newest chunk or command (the manager, the bridge):
# every message matters, none is worth keeping for late joiners.
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# The per-step streams (joint states, joint commands, chunk requests, chunks) that a recorder or a
# monitor must get in full to rebuild every step: a history of 1000 (seconds of a fast sim; each
# message is a few hundred bytes) on both sides, so that a reader lagging behind (a writer thread
# encoding video, a loaded machine) does not lose the request of a chunk and record an episode cut short.
STEPS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
# State that a node joining later must still get: the running episode, the newest policy.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Episode starts for a reader that needs every one, not only the newest (the recorder records each
# episode; the other nodes act on the running one and take LATCHED): LATCHED with a history of 10, so
# that the starts of short episodes arriving while the reader is busy are queued, not replaced.
STARTS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Episode results and trajectories, published with a history of the last 100 so that a learner that
# starts late or restarts still receives the episodes that ended meanwhile (the buffer drops duplicates).
EPISODES = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# The same stream for nodes that only care about episodes from now on (no history on joining).
RESULTS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Camera images for a reader that keeps every frame (the recorder), not only the newest: sensor-data
# reliability and durability (so it matches any image publisher) with a queue of 30, a second of a
# 30 Hz camera while the reader is busy.
IMAGES = QoSProfile(depth=30, reliability=qos_profile_sensor_data.reliability,
                    durability=qos_profile_sensor_data.durability)
