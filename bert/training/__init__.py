"""Training machinery shared by every job: the device mesh and sharding rules, the optimizer and
schedule, the generic step (any Objective), the loop, the run skeleton, Orbax checkpoints and
reporting. It knows no objective, task or data format, and reads no config section."""
