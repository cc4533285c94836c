"""Bandit policies: which arm (recommender) answers each request.

Imports numpy and scipy only (DESIGN.md). Stable interface, relied on by envs/experiments/serving:

Single run (the service)
    ``policy = ThompsonSampling(["SVD", "Sequential", "Autoencoder"], random_state=0)``
    ``k = policy.select(context=None)`` -> arm position (``policy.arms[k]`` is its name);
    ``policy.update(arm, reward, context=None)`` with ``arm`` a name or a position;
    ``policy.action_probabilities(context=None)`` -> ``(K,)`` propensities summing to one
    (exact for epsilon-greedy, UCB1, KL-UCB, LinUCB, Random; numerical quadrature with a
    guaranteed error bound ``<= pi / (4 * propensity_grid)`` for the Thompson samplers, see
    ``action_probabilities_with_error``; LinTS where its arms' scales are within 10x: the
    tanh-sinh rule, error <= 1e-6, its guaranteed bound looser);
    ``policy.state_dict()`` -> plain JSON (``json.dumps`` works) and
    ``policy_from_state_dict(state)`` / ``ThompsonSampling.from_state_dict(state)`` rebuild an
    identical policy, including its random stream;
    ``policy.add_arm(name, warm_start_from=None)`` / ``policy.remove_arm(name)``.
    ``ThompsonSampling.posterior()`` gives per-arm alpha/beta/mean/successes/failures/pulls.
    Invalid input (unknown arm, reward outside the support, NaN, wrong context shape) raises
    ``ValueError`` (``UnknownArmError`` for arms) naming it; the state is left unchanged.
    Every policy takes ``random_state`` (int, SeedSequence or Generator) and ``batch_size``
    (delayed updates: the statistics are refreshed every B observations).

Batched core (simulations): ``R`` independent runs on ``(R, K)`` arrays
    ``state = policy.init_batch(R, dtype=np.float64)``;
    ``arms = policy.select_batch(state, rng, contexts=None)`` -> ``(R,)``;
    ``policy.update_batch(state, arms, rewards, contexts=None)``;
    ``policy.probabilities_batch(state)`` -> ``(R, K)``.
    ``rng`` is one Generator (fast) or ``R`` Generators (run r then equals a single policy seeded
    with ``rng[r]`` exactly). Contextual policies (LinUCB, LinTS) are batched the same way with
    ``contexts`` of shape ``(R, d)``.

Simulation and regret (:mod:`bandits.simulate`)
    ``simulate_bernoulli(policy_or_factory_or_spec, means, horizon, runs, seed,
    checkpoints=None, snapshot=False)`` and ``simulate_gaussian`` -> :class:`SimulationResult`
    (per-step arms/rewards/pseudo-regret, or cumulative figures and posterior snapshots at
    checkpoints); ``lai_robbins_constant(means)``, ``cumulative_pseudo_regret(means, arms)``.

Multileaved slates (:mod:`bandits.multileave`)
    ``team_draft(rankings, k, rng)`` -> ``(items, teams)`` for ``(R, m, L)`` lists;
    ``draft_order`` / ``fill_slate`` (its two halves), ``credit(teams, clicks, K)`` -> clicks
    and filled positions per arm; ``MultileaveThompsonSampling(arms, m=2, slate_size=10)``
    picks the ``m`` arms to multileave and learns from credited clicks (``select`` ->
    arms, teams and the propensities a log needs; ``update(teams, clicks)``; JSON
    ``state_dict``). Not a ``Policy``: its action is a set of arms and a slate composition.

Off-policy evaluation (:mod:`bandits.ope`, plain arrays)
    ``ope.estimate("ips" | "snips" | "dr", rewards, actions, logging_propensities,
    target_probabilities, reward_model=None, n_bootstrap=1000, random_state=None)`` ->
    ``OPEEstimate`` (value, bootstrap CI, effective sample size); ``ope.evaluate(...)`` runs all.
    ``evaluate_policies(rewards, actions, logging_propensities, {name: (n, K)}, reward_model)``
    -> ``{name: PolicyReport}`` (all policies on shared bootstrap resamples, with flags for tiny
    propensities, low effective sample size and missing support).

Exploration floor (:mod:`bandits.exploration`)
    ``ExplorationFloor(policy, floor=0.01, random_state=None).choose(context)`` ->
    ``FlooredChoice(arm, propensity, probabilities, error)``: with probability ``K * floor`` a
    uniform arm, else the policy's own choice, so every propensity is at least ``floor``
    (``0 <= floor <= 1 / K``) and the logged one is ``floor + (1 - K * floor) * p[arm]``;
    ``floored_select_batch(policy, state, rng, floor)`` -> ``(arms, propensities)`` for ``R``
    runs; ``floor_probabilities(p, floor)``.

Change detectors (:mod:`bandits.drift`)
    ``PageHinkley(arms, threshold=..., delta=..., min_samples=30)`` and ``CUSUM(...)``, one
    detector per arm: ``state = det.init_batch(R)``; ``det.update_batch(state, arms, rewards)``
    -> ``(R,)`` alarms (an alarming arm restarts from scratch); single run ``det.update(arm,
    reward)`` -> bool; ``state_dict()`` / ``detector_from_state_dict``; ``delay_bound(shift,
    n_before)``.
"""

from bandits import ope
from bandits.base import (
    BatchedPolicy,
    BatchState,
    Policy,
    policy_from_state_dict,
    registered_policies,
    spawn_generators,
)
from bandits.drift import (
    CUSUM,
    ChangeDetector,
    DetectorState,
    PageHinkley,
    detector_from_state_dict,
)
from bandits.epsilon_greedy import EpsilonGreedy
from bandits.errors import UnknownArmError
from bandits.exploration import (
    ExplorationFloor,
    FlooredChoice,
    check_floor,
    floor_probabilities,
    floored_select_batch,
)
from bandits.gaussian import GaussianThompsonSampling
from bandits.linear import LinTS, LinUCB
from bandits.multileave import (
    MultileaveChoice,
    MultileaveState,
    MultileaveThompsonSampling,
    credit,
    draft_order,
    fill_slate,
    order_probability,
    team_draft,
)
from bandits.nonstationary import DiscountedThompsonSampling, SlidingWindowThompsonSampling
from bandits.ope import OPEEstimate, PolicyReport, evaluate_policies
from bandits.random_policy import RandomPolicy
from bandits.simulate import (
    SimulationResult,
    cumulative_pseudo_regret,
    lai_robbins_constant,
    simulate_bernoulli,
    simulate_gaussian,
)
from bandits.thompson import ThompsonSampling
from bandits.ucb import KLUCB, UCB1, bernoulli_kl, kl_ucb_upper

__all__ = [
    "CUSUM",
    "KLUCB",
    "UCB1",
    "BatchState",
    "BatchedPolicy",
    "ChangeDetector",
    "DetectorState",
    "DiscountedThompsonSampling",
    "EpsilonGreedy",
    "ExplorationFloor",
    "FlooredChoice",
    "GaussianThompsonSampling",
    "LinTS",
    "LinUCB",
    "MultileaveChoice",
    "MultileaveState",
    "MultileaveThompsonSampling",
    "OPEEstimate",
    "PageHinkley",
    "Policy",
    "PolicyReport",
    "RandomPolicy",
    "SimulationResult",
    "SlidingWindowThompsonSampling",
    "ThompsonSampling",
    "UnknownArmError",
    "bernoulli_kl",
    "check_floor",
    "credit",
    "cumulative_pseudo_regret",
    "detector_from_state_dict",
    "draft_order",
    "evaluate_policies",
    "fill_slate",
    "floor_probabilities",
    "floored_select_batch",
    "kl_ucb_upper",
    "lai_robbins_constant",
    "ope",
    "order_probability",
    "policy_from_state_dict",
    "registered_policies",
    "simulate_bernoulli",
    "simulate_gaussian",
    "spawn_generators",
    "team_draft",
]
