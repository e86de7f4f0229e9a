"""The device mesh, the logical-axis rules, and host batches -> global arrays.

One mesh with axes ('data', 'fsdp', 'tensor'):
  data    pure data parallelism (parameters replicated),
  fsdp    data parallelism with parameters and optimizer state sharded (ZeRO-3 style),
  tensor  Megatron-style tensor parallelism over heads, feed-forward and vocabulary.
"""

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from util.errors import UserError

DATA, FSDP, TENSOR = "data", "fsdp", "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)
BATCH_AXES = (DATA, FSDP)

# Logical axis name -> mesh axis. Flax skips a rule whose mesh axis is already taken by an
# earlier dimension of the same array, so activations ('batch', 'length', 'embed') shard only
# the batch while parameters ('vocab', 'embed') shard both axes.
LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("embed", FSDP),
    ("vocab", TENSOR),
    ("heads", TENSOR),
    ("mlp", TENSOR),
    ("embed_out", TENSOR),
    ("length", None),
    ("position", None),
    ("token_type", None),
    ("classes", None),
    ("layers", None),  # the leading axis of scanned layers' parameters (model.scan_layers)
)


def mesh_shape(requested: Sequence[int], num_devices: int) -> tuple[int, int, int]:
    """Resolves a (data, fsdp, tensor) request, where one -1 takes the remaining devices.

    Raises:
      ValueError: naming the mesh config when the sizes do not multiply to `num_devices`.
    """
    shape = [int(s) for s in requested]
    if len(shape) != 3:
        raise UserError(f"config.mesh needs 3 sizes (data, fsdp, tensor), got {shape}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise UserError(f"config.mesh {shape}: sizes must be positive, with at most one -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise UserError(f"config.mesh {shape}: {num_devices} devices not divisible by {known}")
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise UserError(
            f"config.mesh {shape} needs {math.prod(shape)} devices but {num_devices} are present"
        )
    return tuple(shape)


def make_mesh(requested: Sequence[int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all) with Auto axes, as Flax partitioning needs."""
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(requested, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data and fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_shardings(mesh: Mesh, keys: Sequence[str]) -> dict[str, NamedSharding]:
    """batch_sharding for each key of a batch dict."""
    return {k: batch_sharding(mesh) for k in keys}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def logical_shardings(abstract_tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a tree of (possibly) logically partitioned abstract values.

    A dimension that the mesh axes do not divide (e.g. a 30,522-token vocabulary over 4-way
    tensor parallelism) is replicated instead of failing.
    """
    specs = nn.get_partition_spec(abstract_tree)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)
    shapes = nn.meta.unbox(abstract_tree)
    return jax.tree.map(lambda s, x: _divisible(s, x.shape, mesh), shardings, shapes)


def _divisible(named: NamedSharding, shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    spec = list(named.spec) + [None] * (len(shape) - len(named.spec))
    for dim, axes in enumerate(spec):
        if axes is None:
            continue
        size = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
        if shape[dim] % size:
            spec[dim] = None
    return NamedSharding(mesh, PartitionSpec(*spec))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each host's slice of the batch into global arrays sharded over the batch axes.

    Every host passes its own `local_batch` (its 1/process_count share of the global batch).
    """
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }


def abstract_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, Any]:
    """What `global_batch` assembles from every host's `local_batch`, as ShapeDtypeStructs."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.ShapeDtypeStruct(
            (v.shape[0] * jax.process_count(), *v.shape[1:]),
            jax.dtypes.canonicalize_dtype(v.dtype),
            sharding=sharding,
        )
        for k, v in local_batch.items()
    }


def batch_divisor(mesh: Mesh) -> int:
    """The global batch must be a multiple of this (devices along the batch axes)."""
    return mesh.shape[DATA] * mesh.shape[FSDP]


def per_host_batch(batch_size: int, accumulation_steps: int, mesh: Mesh) -> int:
    """This host's share of the global `batch_size`; errors name the config fields.

    The global batch must split evenly into `accumulation_steps` micro-batches, each over the
    data x fsdp devices, and over the hosts.
    """
    batch, accum = batch_size, accumulation_steps
    if accum < 1 or batch % accum:
        raise UserError(
            f"config.train.batch_size={batch} is not a multiple of accumulation {accum}"
        )
    divisor = batch_divisor(mesh) * accum
    if batch % divisor:
        raise UserError(
            f"config.train.batch_size={batch} must be a multiple of {divisor} "
            f"(data x fsdp devices x accumulation steps)"
        )
    if batch % jax.process_count():
        raise UserError(f"config.train.batch_size={batch} does not split over the hosts")
    return batch // jax.process_count()
