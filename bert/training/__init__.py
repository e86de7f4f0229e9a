"""Training machinery shared by every job: the device mesh and sharding rules, the optimizer and
schedule, the objectives and the generic step, the loop, the run skeleton, Orbax checkpoints and
reporting."""
