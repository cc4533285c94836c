"""Every environment id of recbandits, registered in this one place when :mod:`envs` is imported.

=================================  ==========================================================
id                                 what
=================================  ==========================================================
``recbandits/FixedCTR-v0``         arm-level click rates, no data needed (seed story)
``recbandits/MovieLens-v0``        MovieLens 100K users replaying their held-out ratings
``recbandits/MovieLensSim-v0``     latent-factor simulated MovieLens users (boredom on)
``recbandits/MovieLensSimDrift-v0`` the simulator with tastes drifting within an episode
=================================  ==========================================================

All have ``max_episode_steps=1000`` (override it in ``gymnasium.make``) and a native vectorised
form: ``gymnasium.make_vec(id, num_envs=N)`` returns a
:class:`~envs.vector_env.RecommenderArmsVectorEnv`.
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


def register_envs() -> tuple[str, ...]:
    """Register the ids (idempotent); returns them fully qualified."""
    ids = []
    for name, builder in ENV_IDS.items():
        env_id = f"{NAMESPACE}/{name}"
        if env_id not in gymnasium.registry:
            gymnasium.register(
                id=env_id,
                entry_point=f"envs.factories:make_{builder}",
                vector_entry_point=f"envs.factories:make_{builder}_vector",
                max_episode_steps=MAX_EPISODE_STEPS,
            )
        ids.append(env_id)
    return tuple(ids)


ENV_ID_LIST = register_envs()
