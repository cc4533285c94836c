"""What a multileaved slate costs the service, and that the single-arm path costs no more.

Times ``RecommendationService.recommend`` in process (the request path's domain work: context,
policy, rankings, slate, the decision row; the write is a no-op so that the store's noise stays
out) for ``slate_mode = "single"`` and ``"multileave"`` with ``m = 2`` and ``3``, on the
synthetic catalogue (or MovieLens 100K), every configuration in its own subprocess, alternated
``--rounds`` times. ``--baseline-tree DIR`` also times the single path of another checkout (for
example the main branch) in the same run: the ratio is the cost of this tree's single path
against it. Prints the median microseconds per request of each configuration, the ratios, and
the load average. CPU time of the process (``time.process_time``), so that other processes'
load counts less than in wall time::

    python bench/serving_multileave.py --baseline-tree /work/main
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host import load_average

HERE = Path(__file__).resolve().parent.parent


def _child(mode: str, m: int, requests: int, dataset: str) -> None:
    """Time ``requests`` recommendations of one configuration; print µs per request (JSON)."""
    from arms.data import make_synthetic
    from serving.commands import load_catalog, prepare
    from serving.service import RecommendationService
    from serving.settings import Settings

    class NoWrite:
        reader = None

        async def write_decision(self, row: object) -> None:
            return None

    with tempfile.TemporaryDirectory() as tmp:
        extra = {} if mode == "single" else {"slate_mode": mode, "multileave_arms": m}
        settings = Settings(state_dir=Path(tmp), arms=["svd", "autoencoder", "popularity"],
                            seed=0, dataset=dataset, **extra)
        catalog = (make_synthetic(300, 500, 20_000, random_state=0) if dataset == "synthetic"
                   else load_catalog(settings))
        resources = prepare(settings, catalog=catalog)
        service = RecommendationService(settings, resources.store, resources.catalog,
                                        resources.arm_set)
        service.writer = NoWrite()  # type: ignore[assignment]
        service.refresh()
        users = list(resources.arm_set.user_index)[:200]

        async def run(n: int) -> float:
            # CPU time of this process, not wall time: the machine is shared and loaded.
            start = time.process_time()
            for i in range(n):
                await service.recommend(int(users[i % len(users)]), 10)
            return (time.process_time() - start) / n * 1e6

        asyncio.run(run(400))  # warm the ranking cache
        print(json.dumps(asyncio.run(run(requests))))
        resources.store.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", default="synthetic", choices=["synthetic", "movielens"])
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="another checkout whose single path is timed alongside")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), args.requests, args.dataset)
        return
    configs = [("single", 0, HERE), ("multileave", 2, HERE), ("multileave", 3, HERE)]
    if args.baseline_tree is not None:
        configs.insert(0, ("baseline single", 0, args.baseline_tree.resolve()))
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for label, m, tree in configs:
            mode = "single" if label.endswith("single") else "multileave"
            env = {**os.environ, "PYTHONPATH": str(tree)}
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child", mode, str(m),
                 "--requests", str(args.requests), "--dataset", args.dataset],
                env=env, cwd=tree, capture_output=True, text=True, check=True)
            name = label if m == 0 else f"{label} m={m}"
            times.setdefault(name, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    single = statistics.median(times["single"])
    print(f"recommend() in process, CPU time, {args.dataset}, {args.requests} requests x "
          f"{args.rounds} rounds (load average {load_average()})")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<22}{median:>9.1f} us/request  ({median / single:.2f} of single; min "
              f"{min(values):.1f}; rounds {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
