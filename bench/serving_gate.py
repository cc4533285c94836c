"""What the evaluation gate costs a retrain, and what it finds, on MovieLens 100K (issue 15).

Setup: a fresh SQLite store and state folder (a temporary one unless ``--state-dir``), the served
arms fitted once on MovieLens 100K (``recbandits serve``'s first start), then in the same
process and on the same data, one after the other:

1. a retrain with the gate off (``gate_enabled=false``): fit and publish only;
2. a gated retrain with the settings' hyper-parameters (an honest refit): the gate fits the
   candidate and the serving arm sets on the events before the cut (the most recent
   ``--holdout`` of the events held out), scores both with full-catalogue HR@10 / NDCG@10
   (``--bootstrap`` resamples of users for the intervals), then, accepted, fits and publishes;
3. with ``--broken``, a gated retrain of a broken candidate (its ``svd`` ranks at random): it
   must be rejected, and costs the gate alone.

Before each of the first two, one view of a known item by a known user is logged (a simulated
row, as the service would fold it): a retrain on the served version's data with its
hyper-parameters publishes nothing (status ``unchanged``), and a refit with another seed is
not a fair honest refit (SVD's seed alone can move its HR@10 by more than the margin).

Figures: seconds of each, the gate's share, the ratio gated / ungated, and the gate's report
(per arm: candidate and serving HR@10 / NDCG@10 with 95% intervals, the decision and why).

Usage::

    RECBANDITS_DATA=/path/to/data .venv/bin/python bench/serving_gate.py
    ... --arms svd,sequential,autoencoder,popularity --bootstrap 200 --holdout 0.1 --broken

Prints the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from host import load_average

from arms.data.dataset import Dataset
from serving import versions
from serving.commands import prepare
from serving.settings import DEFAULT_ARMS, Settings
from serving.store import Store


def log_a_view(store: Store, catalog: Dataset) -> None:
    """Log one view (a simulated row) so the next retrain has new data to fit."""
    seq = store.log_seq() + 1
    store.insert_simulated([], [{
        "created_at": time.time(), "user_id": int(catalog.user_ids[seq % catalog.n_users]),
        "movie_id": int(catalog.item_ids[seq % catalog.n_items]), "feedback_type": "view",
        "value": None, "event_id": None, "event_key": f"gate-bench-{seq}", "arm": None,
        "reward": None, "rating": 3.0, "counted": False, "note": "", "seq": seq}])


def main(argv: list[str] | None = None) -> int:
    """Run the three retrains and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("RECBANDITS_DATA"),
                        help="folder holding ml-100k/ (default: RECBANDITS_DATA)")
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS),
                        help=f"served arms (default {','.join(DEFAULT_ARMS)})")
    parser.add_argument("--bootstrap", type=int, default=200, help="gate_bootstrap (200)")
    parser.add_argument("--holdout", type=float, default=0.1, help="gate_holdout (0.1)")
    parser.add_argument("--broken", action="store_true",
                        help="also gate a broken candidate (svd ranking at random)")
    parser.add_argument("--state-dir", help="state folder (default: a temporary one)")
    args = parser.parse_args(argv)
    print(f"load average at start: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="recbandits-gate-") as tmp:
        settings = Settings(state_dir=Path(args.state_dir or tmp), data=args.data,
                            arms=args.arms.split(","), seed=0, gate_bootstrap=args.bootstrap,
                            gate_holdout=args.holdout)
        start = time.perf_counter()
        resources = prepare(settings)
        print(f"first fit of {args.arms} on {resources.catalog}: "
              f"{time.perf_counter() - start:.1f} s")
        models = resources.arm_set.models
        log_a_view(resources.store, resources.catalog)
        plain = versions.retrain(settings.model_copy(update={"gate_enabled": False}),
                                 resources.store, resources.catalog, models)
        log_a_view(resources.store, resources.catalog)
        gated = versions.retrain(settings, resources.store, resources.catalog, models)
        print(f"retrain without the gate: {plain.seconds:.1f} s (version {plain.version} "
              f"{plain.status})")
        print(f"gated retrain: {gated.seconds:.1f} s, of which the gate {gated.gate_seconds:.1f}"
              f" s (version {gated.version} {gated.status}); gated / ungated "
              f"{gated.seconds / plain.seconds:.2f}")
        print(versions.format_gate(gated.gate, gated.reason))
        if args.broken and "svd" in settings.arms:
            broken = versions.retrain(settings, resources.store, resources.catalog, models,
                                      candidate={"svd": {"arm": "random"}})
            print(f"broken candidate (svd at random): {broken.seconds:.1f} s, version "
                  f"{broken.version} {broken.status}")
            print(versions.format_gate(broken.gate, broken.reason))
        resources.store.dispose()
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
