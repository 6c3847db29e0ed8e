"""Training one model across Ray actors, driven by one client, in a custom loop.

The step of ``multiworker_training.py`` on ``ray_cluster`` instead of ``local_cluster``:
every device of every worker (a Ray actor running a TensorFlow server) holds a replica
of a small network; ``allreduce.batch_all_reduce`` sums the replicas' gradients with a
hierarchical spec (``pscpu/pscpu``: within each worker, then across workers) and every
replica applies the same sums. Nothing in the loop knows which kind of cluster it runs on.

Each device reads its slice of every batch from an input pipeline on its worker
(``worker_pipelines`` of ``multiworker_training.py``).

    python examples/ray_training.py                      # a local Ray, 2 workers x 2 CPUs
    python examples/ray_training.py --address auto       # an existing Ray cluster
    python examples/ray_training.py --workers 4 --devices 1 --spec xring --steps 50
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the loop lives beside this file

from multiworker_training import (
    PER_DEVICE_BATCH,
    History,
    initial_weights,
    make_batches,
    print_report,
    train,
    train_single_device,
    worker_pipelines,
)

from allreduce.cluster import ray_cluster

__all__ = ["History", "main", "train", "train_single_device", "worker_pipelines"]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=None, help="Ray address (default: start a local Ray)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (default %(default)s)")
    parser.add_argument("--devices", type=int, default=2, help="CPUs per worker (default %(default)s)")
    parser.add_argument("--spec", default="pscpu/pscpu", help="all-reduce spec (default %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="training steps (default %(default)s)")
    args = parser.parse_args(argv)
    replicas = args.workers * args.devices
    batches = make_batches(args.steps, PER_DEVICE_BATCH * replicas, seed=0)
    initial = initial_weights(seed=1)
    start = time.perf_counter()
    with ray_cluster(args.workers, args.devices, address=args.address) as cluster:
        hosts = sorted({node.ip for node in cluster.nodes})
        print(f"{replicas} replicas on {args.workers} Ray workers ({', '.join(hosts)}), spec {args.spec!r}")
        history = train(cluster, batches, initial, args.spec)
    print_report(history, train_single_device(batches, initial), time.perf_counter() - start)


if __name__ == "__main__":
    main()
