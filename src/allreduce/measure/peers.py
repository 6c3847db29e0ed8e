"""The peers the library is measured against, in the same run and the same table.

* ``numpy``: chained ``np.add`` of the host copies of the inputs into one preallocated
  buffer: a floor on what summing the bytes costs here (it moves nothing between
  devices and leaves one result, so it is not an all-reduce).
* ``tf:ReductionToOneDevice``, ``tf:HierarchicalCopy``, ``tf:collective`` (and
  ``tf:NcclAllReduce`` on GPUs, paired with our ``nccl``): the
  ``tf.distribute`` cross-device ops, called with ``batch_reduce`` on ``PerReplica``
  values inside a ``tf.function`` (``tf:collective`` is what ``MirroredStrategy``
  uses by default).
* ``tf-v1:ring``, ``tf-v1:ring#2``, ``tf-v1:rechd``, ``tf-v1:shuffle``,
  ``tf-v1:shuffle#2``: TensorFlow's own builders of the same classic algorithms
  (``tensorflow.python.distribute.v1.all_reduce``, a private module), each paired with
  the spec of ours that runs the same algorithm.

Private TensorFlow modules are imported only when a peer is prepared; a TensorFlow
without them skips those peers with the import error as the reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from allreduce.measure.cases import Case
from allreduce.measure.contenders import FLOOR, Contender, Inputs, Setup, Step

__all__ = ["CrossDeviceOpsPeer", "NumpyFloor", "V1BuilderPeer", "default_peers", "peer_names"]

# Group keys far above those the library's own collectives take (they count from 1).
_group_keys = itertools.count(1_000_000, 1000)


class NumpyFloor(Contender):
    """Chained ``np.add`` of the host arrays into one preallocated buffer per tensor."""

    name = "numpy"
    kind = FLOOR
    graph = False

    def prepare(self, inputs: Inputs, setup: Setup) -> Step:
        host = inputs.host
        outs = [np.empty_like(h) for h in host[0]]

        def step() -> list[list[np.ndarray]]:
            for t, out in enumerate(outs):
                if len(host) == 1:
                    np.copyto(out, host[0][t])
                    continue
                np.add(host[0][t], host[1][t], out=out)
                for tower in host[2:]:
                    np.add(out, tower[t], out=out)
            return [outs]

        return step


class CrossDeviceOpsPeer(Contender):
    """A ``tf.distribute.CrossDeviceOps`` made by ``make(devices, device_type)``.

    ``halves``: the op sums two equal halves of the devices (TensorFlow's
    ``HierarchicalCopyAllReduce``, made for 8 GPUs), so with an odd device count it
    leaves one device out of every sum; it is skipped there. ``gpu_only``: the op runs
    on GPUs only (NCCL has no CPU kernel); ``same_as``: the spec of ours it is compared with.
    """

    def __init__(
        self,
        name: str,
        make: Callable[[Sequence[str], str], Any],
        *,
        halves: bool = False,
        gpu_only: bool = False,
        same_as: str | None = None,
    ) -> None:
        self.name = name
        self._make = make
        self._halves = halves
        self._gpu_only = gpu_only
        self.same_as = same_as

    def skip_reason(self, case: Case, setup: Setup) -> str | None:
        if setup.workers > 1:
            return "tf.distribute cross-device ops of MirroredStrategy are single-process"
        if self._gpu_only and setup.device_type != "GPU":
            return "runs on GPUs only (NCCL has no CPU kernel)"
        if self._halves and setup.num_devices % 2:
            return f"sums two equal halves of the devices: wrong for an odd count ({setup.num_devices})"
        return None

    def prepare(self, inputs: Inputs, setup: Setup) -> Step:
        from tensorflow.python.distribute import values as distribute_values

        from allreduce.core._tf import tf

        ops = self._make(inputs.devices, setup.device_type)
        towers = inputs.tensors
        count = len(towers[0])

        def step() -> list[list[Any]]:
            per_replica = [
                distribute_values.PerReplica(tuple(tower[t] for tower in towers)) for t in range(count)
            ]
            reduced = ops.batch_reduce(tf.distribute.ReduceOp.SUM, [(v, v) for v in per_replica])
            # One device: tf.distribute returns the plain tensor, not a Mirrored value.
            values = [getattr(r, "values", (r,)) for r in reduced]
            return [[values[t][d] for t in range(count)] for d in range(len(towers))]

        return step


def _reduction_to_one_device(devices: Sequence[str], device_type: str) -> Any:
    from allreduce.core._tf import tf

    return tf.distribute.ReductionToOneDevice()


def _hierarchical_copy(devices: Sequence[str], device_type: str) -> Any:
    from allreduce.core._tf import tf

    return tf.distribute.HierarchicalCopyAllReduce()


def _nccl(devices: Sequence[str], device_type: str) -> Any:
    from allreduce.core._tf import tf

    return tf.distribute.NcclAllReduce()


def _collective(devices: Sequence[str], device_type: str) -> Any:
    # What MirroredStrategy(devices) builds by default, with its own group keys.
    from tensorflow.python.distribute import collective_util, cross_device_utils
    from tensorflow.python.distribute import cross_device_ops as cdo

    implementation = collective_util.CommunicationImplementation.AUTO
    if device_type == "CPU":
        implementation = collective_util.CommunicationImplementation.RING
    return cdo.CollectiveAllReduce(
        devices=list(devices),
        group_size=len(devices),
        options=collective_util.Options(implementation=implementation),
        collective_keys=cross_device_utils.CollectiveKeys(group_key_start=next(_group_keys)),
    )


class V1BuilderPeer(Contender):
    """One of TensorFlow's v1 all-reduce builders, for one tensor per device."""

    def __init__(
        self,
        name: str,
        same_as: str,
        build: Callable[[Any, list[Any], Setup], list[Any]],
        *,
        power_of_two: bool = False,
    ) -> None:
        self.name = name
        self.same_as = same_as
        self._build = build
        self._power_of_two = power_of_two

    def skip_reason(self, case: Case, setup: Setup) -> str | None:
        if case.is_batch:
            return "builds one all-reduce per tensor: single-tensor workloads only"
        n = setup.num_devices
        if n < 2:
            return "needs at least two devices"
        if self._power_of_two and (n & (n - 1) or case.count % n):
            return f"needs a power-of-two device count dividing the element count ({n}, {case.count})"
        return None

    def prepare(self, inputs: Inputs, setup: Setup) -> Step:
        from tensorflow.python.distribute.v1 import all_reduce as v1

        values = [tower[0] for tower in inputs.tensors]

        def step() -> list[list[Any]]:
            return [[out] for out in self._build(v1, values, setup)]

        return step


def _ring(subchunks: int) -> Callable[[Any, list[Any], Setup], list[Any]]:
    def build(v1: Any, values: list[Any], setup: Setup) -> list[Any]:
        from allreduce.core._tf import tf

        per_worker = setup.num_devices // setup.workers
        return v1.build_ring_all_reduce(values, setup.workers, subchunks, list(range(per_worker)), tf.add)

    return build


def _recursive_hd(v1: Any, values: list[Any], setup: Setup) -> list[Any]:
    from allreduce.core._tf import tf

    return v1.build_recursive_hd_all_reduce(values, tf.add)


def _shuffle(gathers: int) -> Callable[[Any, list[Any], Setup], list[Any]]:
    def build(v1: Any, values: list[Any], setup: Setup) -> list[Any]:
        from allreduce.core._tf import tf

        return v1.build_shuffle_all_reduce(values, list(setup.devices[:gathers]), tf.add_n)

    return build


def default_peers(setup: Setup) -> list[Contender]:
    """The numpy floor, the ``tf.distribute`` cross-device ops (``NcclAllReduce`` on GPUs
    only) and TensorFlow's v1 builders, each paired with the spec of ours that runs the
    same algorithm."""
    shuffle = "pscpu" if setup.device_type == "CPU" else "psgpu"
    return [
        NumpyFloor(),
        CrossDeviceOpsPeer("tf:ReductionToOneDevice", _reduction_to_one_device),
        CrossDeviceOpsPeer("tf:HierarchicalCopy", _hierarchical_copy, halves=True),
        CrossDeviceOpsPeer("tf:collective", _collective),
        CrossDeviceOpsPeer("tf:NcclAllReduce", _nccl, gpu_only=True, same_as="nccl"),
        V1BuilderPeer("tf-v1:ring", "xring", _ring(1)),
        V1BuilderPeer("tf-v1:ring#2", "xring#2", _ring(2)),
        V1BuilderPeer("tf-v1:rechd", "rechd", _recursive_hd, power_of_two=True),
        V1BuilderPeer("tf-v1:shuffle", shuffle, _shuffle(1)),
        V1BuilderPeer("tf-v1:shuffle#2", f"{shuffle}#2", _shuffle(2)),
    ]


def peer_names() -> list[str]:
    """The names of :func:`default_peers`, in order (they do not depend on the setup)."""
    return [peer.name for peer in default_peers(Setup(devices=(), device_type="CPU"))]
