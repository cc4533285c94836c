"""What a shadow policy costs a request (issue 15): ``recommend`` with and without one.

Times ``RecommendationService.recommend`` in process (the request path's domain work: context,
policy, rankings, slate, the decision row with its shadow record; the write is a no-op so that
the store's noise stays out) for a live policy alone and with a shadow policy beside it:
Thompson Sampling live with LinTS in shadow, and LinTS live with Thompson Sampling in shadow, on
the synthetic catalogue (or MovieLens 100K), every configuration in its own subprocess,
alternated ``--rounds`` times. ``warm``: 200 users asked in turn, so a contextual policy's
probabilities come from its per-context cache after a user's first request; ``cold``: every
cache of contextual probabilities emptied before each request (each request pays a LinTS
computation for each contextual policy): the worst case. Prints the median CPU microseconds
per request (``time.process_time``: other processes' load counts less than in wall time), the
ratio to the same live policy without a shadow, and the load average::

    python bench/serving_shadow.py [--requests 1500] [--rounds 3] [--dataset synthetic]
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
#: (label, live policy, shadow policy or "").
CONFIGS = [("TS", "ThompsonSampling", ""), ("TS + LinTS shadow", "ThompsonSampling", "LinTS"),
           ("LinTS", "LinTS", ""), ("LinTS + TS shadow", "LinTS", "ThompsonSampling")]


def _child(live: str, shadow: str, cold: bool, requests: int, dataset: str) -> None:
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
        extra = {"shadow_policy": shadow} if shadow else {}
        settings = Settings(state_dir=Path(tmp), arms=["svd", "autoencoder", "popularity"],
                            seed=0, dataset=dataset, policy=live, **extra)
        catalog = (make_synthetic(300, 500, 20_000, random_state=0) if dataset == "synthetic"
                   else load_catalog(settings))
        resources = prepare(settings, catalog=catalog)
        service = RecommendationService(settings, resources.store, resources.catalog,
                                        resources.arm_set)
        service.writer = NoWrite()  # type: ignore[assignment]
        service.refresh()
        users = list(resources.arm_set.user_index)[:200]

        def clear() -> None:
            service.snapshot.cache.clear()
            if service._shadow is not None:
                service._shadow[1].cache.clear()

        async def run(n: int) -> float:
            # CPU time of this process, not wall time: the machine is shared and loaded.
            spent = 0.0
            for i in range(n):
                if cold:
                    clear()
                start = time.process_time()
                await service.recommend(int(users[i % len(users)]), 10)
                spent += time.process_time() - start
            return spent / n * 1e6

        asyncio.run(run(400))  # warm the ranking cache
        print(json.dumps(asyncio.run(run(requests))))
        resources.store.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", default="synthetic", choices=["synthetic", "movielens"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        live, shadow, cache = args.child
        _child(live, "" if shadow == "-" else shadow, cache == "cold", args.requests,
               args.dataset)
        return
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for cache in ("warm", "cold"):
            for label, live, shadow in CONFIGS:
                out = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--child", live,
                     shadow or "-", cache, "--requests", str(args.requests), "--dataset",
                     args.dataset],
                    env={**os.environ, "PYTHONPATH": str(HERE)}, cwd=HERE,
                    capture_output=True, text=True, check=True)
                times.setdefault((cache, label), []).append(
                    json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"recommend() in process, CPU time, {args.dataset}, {args.requests} requests x "
          f"{args.rounds} rounds (load average {load_average()})")
    for (cache, label), values in times.items():
        median = statistics.median(values)
        alone = statistics.median(times[cache, label.split(" + ")[0]])
        print(f"{cache:<5} {label:<20}{median:>9.1f} us/request  ({median / alone:.2f} of "
              f"{label.split(' + ')[0]} alone; rounds {', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
