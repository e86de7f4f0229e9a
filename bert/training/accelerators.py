"""An accelerator the system has but JAX does not use: `requirements.txt` installs the CPU-only
`jax`, and a GPU or TPU user who follows it would train on the CPU without being told.

Detection follows what jax itself checks (jax/_src/hardware_utils.py): NVIDIA device nodes for
GPUs, and PCI devices with Google's vendor id and a TPU device id for TPUs (with /dev/accel* and
/dev/vfio/* as the device nodes TPU VMs expose). Everything reads under a `root` folder so a test
can hand it a fake file tree."""

import importlib.util
import pathlib
import re

# Device nodes or driver folders that exist where an NVIDIA driver is loaded (bare metal, Docker).
NVIDIA_PATHS = ("dev/nvidia0", "dev/nvidiactl", "proc/driver/nvidia")
NVIDIA_DRIVER_VERSION = "proc/driver/nvidia/version"
GOOGLE_PCI_VENDOR = "0x1ae0"
# PCI device ids of TPU chips (v3, v4, v5p, v5e, v6e, 7x and one without a public name), as jax
# lists them.
TPU_PCI_DEVICES = ("0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076")
# CUDA 13 wheels need an NVIDIA driver of this major version or newer; older drivers take CUDA 12.
CUDA13_MIN_DRIVER = 580


def _read(path: pathlib.Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _google_pci(root: pathlib.Path) -> list[pathlib.Path]:
    """The vendor files of the PCI devices made by Google."""
    vendors = sorted((root / "sys/bus/pci/devices").glob("*/vendor"))
    return [v for v in vendors if _read(v) == GOOGLE_PCI_VENDOR]


def visible_accelerator(root: pathlib.Path = pathlib.Path("/")) -> str | None:
    """The accelerator the system under `root` shows: "gpu" (NVIDIA), "tpu" or None."""
    if any((root / p).exists() for p in NVIDIA_PATHS):
        return "gpu"
    google = _google_pci(root)
    if any(_read(vendor.parent / "device") in TPU_PCI_DEVICES for vendor in google):
        return "tpu"
    # A TPU whose device id is newer than the table: Google PCI devices and TPU device nodes.
    nodes = [*(root / "dev").glob("accel[0-9]*"), *(root / "dev/vfio").glob("[0-9]*")]
    if nodes and google:
        return "tpu"
    return None


def nvidia_driver_major(root: pathlib.Path = pathlib.Path("/")) -> int | None:
    """The NVIDIA kernel driver's major version, from /proc/driver/nvidia/version."""
    text = _read(root / NVIDIA_DRIVER_VERSION)  # "... Kernel Module  550.54.14  ..."
    found = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+)\.", text)
    return int(found.group(1)) if found else None


def install_hint(
    accelerator: str | None,
    backend: str,
    jax_version: str,
    driver_major: int | None = None,
    plugin_installed: bool = False,
) -> str | None:
    """One warning line when `accelerator` is visible but JAX runs on `backend` "cpu": the
    install that makes JAX use it (the same jax version), or, where JAX's plugin for it is
    installed (`plugin_installed`) and failed, where to look; None otherwise."""
    if accelerator is None or backend != "cpu":
        return None
    name = "an NVIDIA GPU" if accelerator == "gpu" else "a TPU"
    if plugin_installed:
        return (
            f"{name} is visible and JAX's {accelerator.upper()} plugin is installed, but JAX "
            "runs on the CPU: the plugin failed to start (see JAX's warning above; --verbose "
            "shows XLA's log)"
        )
    if accelerator == "gpu":
        old_driver = driver_major is not None and driver_major < CUDA13_MIN_DRIVER
        extra = "cuda12" if old_driver else "cuda13"
    else:
        extra = "tpu"
    return (
        f"{name} is visible but JAX runs on the CPU: install JAX's {accelerator.upper()} build "
        f"with pip install 'jax[{extra}]=={jax_version}' (README: Accelerators)"
    )


# The packages JAX's accelerator builds add (jax[cuda12], jax[cuda13], jax[tpu]).
PLUGINS = {"gpu": ("jax_cuda12_plugin", "jax_cuda13_plugin"), "tpu": ("libtpu",)}


def startup_warning(backend: str, jax_version: str, root: pathlib.Path = pathlib.Path("/")):
    """install_hint for the system under `root` (the real one by default)."""
    accelerator = visible_accelerator(root)
    plugins = PLUGINS.get(accelerator or "", ())
    installed = any(importlib.util.find_spec(p) is not None for p in plugins)
    return install_hint(accelerator, backend, jax_version, nvidia_driver_major(root), installed)
