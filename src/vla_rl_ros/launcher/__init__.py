"""A launcher for ROS 2 YAML launch files on machines without `ros2 launch` (pip-only installs).

It reads the same `*.launch.yaml` files `ros2 launch` runs, expands them into a list of processes
(`description`), and runs them (`runner`); `arguments` reads a file's own arguments and includes
without running it (`--show-args`). Constructs it does not implement are refused by name.
"""
