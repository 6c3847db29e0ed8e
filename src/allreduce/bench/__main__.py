"""``python -m allreduce.bench``: the same as ``allreduce-bench``."""

from allreduce.bench.cli import main

raise SystemExit(main())
