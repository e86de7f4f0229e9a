"""XLA_FLAGS for the processes the tests run: fake CPU devices, and LLVM's cheap optimisation.

The tests' programs are tiny and run for seconds, so compiling them costs more than running
them; without LLVM's expensive passes the full suite takes about a third less time. The numbers
are the same up to float rounding (summation order): the golden runs' parameters differ by at
most 1.3e-6 of a tensor's largest entry, below every tolerance against a reference, and runs the
tests compare bitwise (resumed against uninterrupted, sharded against single-device) all compile
with these flags. tests/test_golden.py alone compiles as users' runs do (its record is bitwise).
"""

CHEAP = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def xla_flags(devices: int = 0) -> str:
    """XLA_FLAGS for a process of the tests, with `devices` fake CPU devices (0: the host's)."""
    return CHEAP + (f" --xla_force_host_platform_device_count={devices}" if devices else "")
