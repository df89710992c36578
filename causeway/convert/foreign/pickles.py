"""Reading other trainers' pickled checkpoints without running their code.

Megatron-LM's and DeepSpeed's files are Python pickles, and unpickling an arbitrary file
can run arbitrary code. The importers refuse them unless the user says they trust the
source (`--trust-pickle`); even then every file goes through `torch.load(weights_only=
True)` (or, for a `torch.distributed.checkpoint` .metadata, an unpickler with the same
rule), which builds only tensors, containers and the classes a format's reader lists.
Anything else is refused with the class named.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

TRUST_FLAG = "--trust-pickle"


class PickleRefused(ValueError):
    """A pickle asked for a class its format's allow-list does not hold."""


def require_trust(trusted: bool, source: Path, fmt: str) -> None:
    if not trusted:
        raise ValueError(
            f"{source}: {fmt} checkpoints are Python pickles, and unpickling can run code "
            f"that a file carries; pass {TRUST_FLAG} if you trust where it came from (even "
            "then only tensors and the classes the format needs are built)"
        )


class StandIn:
    """What an allowed class of a package that is not installed unpickles to: its name
    and arguments, kept for reading (an enum member of Megatron's args, say)."""

    def __init__(self, name: str, args: tuple):
        self.name, self.args = name, args

    def __repr__(self) -> str:
        return f"{self.name}{self.args!r}"


def stand_in(name: str):
    return lambda *args: StandIn(name, args)


# Globals `allowed` may hold: a class or function, or (callable, "module.Name") to build
# `module.Name` from a stand-in without importing its package.
Allowed = Sequence[Any]


def load_pickle(path: Path, allowed: Allowed = (), mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU with `allowed` added for this call;
    `mmap` maps the tensors instead of reading them (for a file read only for its other
    entries)."""
    with torch.serialization.safe_globals(list(allowed)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as err:
            raise refused(path, str(err)) from None


def refused(path: Path, message: str) -> PickleRefused:
    found = re.search(r"GLOBAL ([\w.]+)", message)
    what = f"the class {found.group(1)}" if found else " ".join(message.split()[:30])
    return PickleRefused(
        f"{path}: refused to unpickle {what}: it is not among the classes this format "
        "needs, and building it could run code"
    )


@contextlib.contextmanager
def weights_only_loads(allowed: Allowed = ()) -> Iterator[None]:
    """Every `torch.load` inside runs with weights_only=True and `allowed`: for a library
    reader (DeepSpeed's zero_to_fp32) that asks for weights_only=False."""
    original = torch.load

    def load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        try:
            return original(f, *args, **kwargs)
        except pickle.UnpicklingError as err:
            raise refused(Path(str(f)), str(err)) from None

    with torch.serialization.safe_globals(list(allowed)):
        torch.load = load
        try:
            yield
        finally:
            torch.load = original


# The classes a torch.distributed.checkpoint .metadata file is made of.
DCP_METADATA_MODULES = (
    "torch.distributed.checkpoint.metadata",
    "torch.distributed.checkpoint.planner",
)
DCP_METADATA_GLOBALS = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # torch.strided by name
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class MetadataUnpickler(pickle.Unpickler):
    """A DCP .metadata holds DCP's own dataclasses, torch.Size and dtypes: nothing else."""

    def find_class(self, module: str, name: str):
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if module in DCP_METADATA_MODULES or (module, name) in DCP_METADATA_GLOBALS or dtype:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not allowed")


def load_dcp_metadata(path: Path):
    with open(path, "rb") as f:
        try:
            return MetadataUnpickler(f).load()
        except pickle.UnpicklingError as err:
            raise refused(path, str(err)) from None
