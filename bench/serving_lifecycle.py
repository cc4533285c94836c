"""What the live holdout and the drift monitor cost the service (issue 15).

Two figures, each beside its peer measured in the same run:

* **drift fold**: microseconds per outcome of :class:`serving.drift.DriftMonitor.fold`
  (Page-Hinkley, CUSUM, windows only), against the policy's own fold of the same outcomes
  (:meth:`serving.policy.PolicyModel.fold`, Thompson Sampling): both run in each worker's
  refresher thread, off the request path, and in ``rebuild-state``;
* **holdout draw**: microseconds per request of :meth:`serving.holdout.Holdout.choose`
  (the holdout's draw, the arm's, the cached mixture, the decision's policy JSON with its
  holdout entry) against the plain draw of the arm
  from the policy's cdf that a request makes without a holdout.

Usage::

    .venv/bin/python bench/serving_lifecycle.py [--outcomes 20000] [--draws 100000] [--repeats 3]

Prints the load average before and after: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
from host import load_average

from serving.drift import DriftMonitor
from serving.holdout import Holdout
from serving.policy import PolicyModel
from serving.store.types import Outcome

ARMS = ["svd", "sequential", "autoencoder", "popularity"]


def _best(fn: Callable[[], None], repeats: int) -> float:
    """The least wall time of ``repeats`` calls of ``fn`` (the least disturbed)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the measurements and print them (``argv``: the options, see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outcomes", type=int, default=20_000, help="outcomes folded")
    parser.add_argument("--draws", type=int, default=100_000, help="arm draws timed")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the alarms' lines are not what is measured
    print(f"load average before: {load_average()}")
    rng = np.random.default_rng(0)
    outcomes = [Outcome(i + 1, "e", ARMS[i % 4], float(rng.random() < 0.5))
                for i in range(args.outcomes)]
    model = PolicyModel("ThompsonSampling", ARMS)
    per = 1e6 / args.outcomes
    policy_us = _best(lambda: model.fold(model.fresh(), outcomes), args.repeats) * per
    print(f"policy fold (ThompsonSampling): {policy_us:.1f} us per outcome")
    for name in ("PageHinkley", "CUSUM", "none"):
        us = _best(lambda n=name: DriftMonitor(ARMS, n).fold(outcomes), args.repeats) * per
        print(f"drift fold ({name}): {us:.1f} us per outcome, {us / policy_us:.2f} x the "
              "policy fold")
    pmf = np.array([0.4, 0.3, 0.2, 0.1])
    cdf = np.cumsum(pmf)
    holdout = Holdout(0.1, "uniform", ARMS)
    policy_json = json.dumps(model.describe_params())
    gen = np.random.default_rng(1)
    n = args.draws

    def plain() -> None:
        for _ in range(n):
            min(int(np.searchsorted(cdf, gen.random(), side="right")), 3)

    def held() -> None:
        for _ in range(n):
            holdout.choose(pmf, cdf, "key", gen, policy_json)

    plain_us = _best(plain, args.repeats) * 1e6 / n
    held_us = _best(held, args.repeats) * 1e6 / n
    print(f"arm draw without holdout: {plain_us:.2f} us per request; with a holdout: "
          f"{held_us:.2f} us ({held_us - plain_us:+.2f} us)")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
