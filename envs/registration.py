"""Every environment id of recbandits, registered in this one place when :mod:`envs` is imported.

=================================  ==========================================================
id                                 what
=================================  ==========================================================
``recbandits/FixedCTR-v0``         arm-level click rates, no data needed (seed story)
``recbandits/MovieLens-v0``        MovieLens 100K users replaying their held-out ratings
``recbandits/MovieLensSim-v0``     latent-factor simulated MovieLens users (boredom on)
``recbandits/MovieLensSimDrift-v0`` the simulator with tastes drifting within an episode
``recbandits/MovieLensSlate-v0``   simulated users, a slate composed from several arms
``recbandits/SyntheticSlate-v0``   the same on synthetic ratings, arms svd, popularity, random
=================================  ==========================================================

All have ``max_episode_steps=1000`` (override it in ``gymnasium.make``) and a native vectorised
form: ``gymnasium.make_vec(id, num_envs=N)`` returns a
:class:`~envs.vector_env.RecommenderArmsVectorEnv` (:class:`~envs.slate.SlateVectorEnv` for the
slate ids).
"""

from __future__ import annotations

import gymnasium

NAMESPACE = "recbandits"
MAX_EPISODE_STEPS = 1000
ENV_IDS = {
    "FixedCTR-v0": "fixed_ctr",
    "MovieLens-v0": "movielens",
    "MovieLensSim-v0": "movielens_sim",
    "MovieLensSimDrift-v0": "movielens_sim_drift",
}
#: Slate ids (action: the arm of every position), built in :mod:`envs.slate`.
SLATE_ENV_IDS = {
    "MovieLensSlate-v0": "movielens_slate",
    "SyntheticSlate-v0": "synthetic_slate",
}


def register_envs() -> tuple[str, ...]:
    """Register the ids (idempotent); returns them fully qualified."""
    ids = []
    entries = [("factories", n, b) for n, b in ENV_IDS.items()]
    entries += [("slate", n, b) for n, b in SLATE_ENV_IDS.items()]
    for module, name, builder in entries:
        env_id = f"{NAMESPACE}/{name}"
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point=f"envs.{module}:make_{builder}",
                vector_entry_point=f"envs.{module}:make_{builder}_vector",
                max_episode_steps=MAX_EPISODE_STEPS,
            )
        ids.append(env_id)
    return tuple(ids)


ENV_ID_LIST = register_envs()
