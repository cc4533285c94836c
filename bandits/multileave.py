"""Team-draft multileaving: several arms share one slate, and each click credits the arm that
contributed the clicked item (Radlinski, Kurup & Joachims 2008; Schuth et al., CIKM 2014).

Pure functions on arrays, batched over runs like the rest of :mod:`bandits`:

* :func:`draft_order` - which of the ``m`` multileaved rankers fills each of the ``k`` positions:
  in every round of ``m`` picks the rankers pick once each, in a uniformly random order (the last
  round may be partial). The order depends on no item, so it can be drawn before the lists are
  known, and every ranker's share of each position is the same (team-draft fairness).
* :func:`fill_slate` - the items: position ``j`` shows its ranker's highest-ranked item that is
  not already in the slate.
* :func:`team_draft` - both at once, on ``m`` ranked lists.
* :func:`credit` - clicks and shown positions per arm, from the contributing arm of every position.

:class:`MultileaveThompsonSampling` chooses which ``m`` of ``K`` arms to multileave (the ``m``
largest of one Beta sample per arm) and learns from credited clicks. It is not a
:class:`~bandits.base.Policy` (its action is a set of arms and a slate composition, not one arm),
so it is not in :func:`~bandits.base.registered_policies`; it has the same persistence
(``state_dict``/``from_state_dict``, plain JSON) and the same batched layout.

What a log needs (propensities)
-------------------------------
A decision is a *set* ``S`` of ``m`` arms and a *draft order* (the arm of every position). Its
probability factorises: ``P(S) * P(order | S)``.

* ``P(order | S)`` is the same for every order: ``1 / (m!^(k // m) * m! / (m - k % m)!)``
  (:func:`order_probability`), exact.
* ``P(S)``, the probability that ``S`` holds the ``m`` largest Beta samples, is computed by
  quadrature (:meth:`MultileaveThompsonSampling.set_probabilities`, over every set in
  lexicographic order of arm positions, summing to one); the inclusion probability of each arm,
  ``pi_a = P(a in S)``, follows (:meth:`~MultileaveThompsonSampling.inclusion_probabilities`,
  summing to ``m``).

Log per decision: the set (arm positions, ascending), the arm of every position, ``P(S)``,
``P(order | S)`` and the inclusion probabilities ``pi`` of every arm. An unbiased comparison of
arms across decisions taken under changing posteriors weighs each arm's credited clicks and shown
positions by ``1 / pi_a`` (Horvitz-Thompson); within one decision the draft order is uniform, so
the arms of ``S`` are compared fairly without weights.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
from scipy import special

from bandits.base import (
    Draws,
    FixedOnceBuilt,
    RandomState,
    RunRandom,
    _json_value,
    build_from_state,
    init_param_names,
    make_generator,
    quadrature_grid,
    restore_generator,
)
from bandits.errors import (
    MAX_COUNT,
    check_arm_names,
    check_int,
    check_propensity_grid,
    check_rewards,
    check_stat,
    check_state_layout,
    check_state_type,
    short_repr,
)
from bandits.thompson import check_beta_prior, gamma_pair_draws

STATE_FORMAT = 1
#: Above this many sets of ``m`` arms, :meth:`MultileaveThompsonSampling.set_probabilities`
#: refuses (its cost is linear in the number of sets).
MAX_SETS = 10_000


def _check_index_array(value: Any, name: str, ndim: int) -> np.ndarray:
    """``value`` as an int64 array of ``ndim`` dimensions; TypeError/ValueError otherwise."""
    array = np.asarray(value)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    return array.astype(np.int64, copy=False)


def order_probability(m: int, k: int) -> float:
    """Probability of any one draft order of ``k`` positions among ``m`` rankers, given the set.

    ``k // m`` full rounds, each a uniform permutation of the ``m`` rankers, then a partial
    round: the first ``k % m`` rankers of one more uniform permutation.

    Raises
    ------
    TypeError, ValueError
        ``m`` or ``k`` not an int >= 1.
    """
    m, k = check_int(m, "m"), check_int(k, "k")
    check_order_probability(m, k)
    return 1.0 / float(math.factorial(m) ** (k // m) * math.perm(m, k % m))


#: Smallest ``P(draft order | set)`` a slate may have: float64's smallest normal number. Past
#: it the logged propensity would be 0 (or a subnormal), and its exact integer took unbounded
#: time: ``slate_size=10**12`` never returned, ``m=200`` (of 300 arms) neither (found while
#: bounding the sizes the attack found). About 2,000 positions for ``m = 2``, 1,000 for
#: ``m = 3``, 170 rankers for ``m = slate_size``.
MIN_ORDER_PROBABILITY = float(np.finfo(np.float64).tiny)


def check_order_probability(m: int, k: int) -> None:
    """Refuse ``m`` rankers on ``k`` positions whose ``P(draft order | set)`` is below
    :data:`MIN_ORDER_PROBABILITY` (computed in logs first, never as the integer): the one
    check of ``slate_size`` and ``m``.

    Raises
    ------
    ValueError
        Naming ``m``, ``slate_size`` and the floor.
    """
    log_p = -(k // m) * math.lgamma(m + 1) - (math.lgamma(m + 1) - math.lgamma(m - k % m + 1))
    if log_p < math.log(MIN_ORDER_PROBABILITY):
        exponent = log_p / math.log(10)
        raise ValueError(f"m={m} rankers on slate_size={k} positions: P(draft order | set) "
                         f"= 1 / (m!^(k // m) * perm(m, k % m)) would be 1e{exponent:.0f}, "
                         f"below float64's {MIN_ORDER_PROBABILITY:.3g} "
                         "(MIN_ORDER_PROBABILITY); use fewer positions or rankers")


def draft_order(n_runs: int, m: int, k: int, rng: RunRandom) -> np.ndarray:
    """Which of ``m`` rankers fills each of ``k`` slate positions, for ``n_runs`` runs.

    Parameters
    ----------
    n_runs, m, k : int
        Runs ``R``, rankers per slate and slate size (each >= 1).
    rng : Generator or sequence of R Generators
        As in :meth:`bandits.base.BatchedPolicy.select_batch`; draws ``(R, ceil(k / m), m)``
        uniforms.

    Returns
    -------
    ndarray of int64, shape (R, k)
        Ranker index in ``[0, m)`` of every position; every run's rankers fill
        ``k // m`` or ``k // m + 1`` positions each.
    """
    n_runs, m, k = check_int(n_runs, "n_runs"), check_int(m, "m"), check_int(k, "k")
    return _draft_order(Draws(rng, n_runs), m, k)


def _draft_order(draws: Draws, m: int, k: int) -> np.ndarray:
    rounds = -(-k // m)
    # argsort of iid uniforms is a uniform permutation (ties have probability ~0)
    keys = draws.random((rounds, m))
    order = np.argsort(keys, axis=2).reshape(draws.n_runs, rounds * m)[:, :k]
    return order.astype(np.int64)


def fill_slate(rankings: Any, order: Any) -> tuple[np.ndarray, np.ndarray]:
    """The items of a slate whose position ``j`` is filled by ranker ``order[:, j]``.

    Each position takes its ranker's highest-ranked item not already in the slate. A ranker
    whose list has nothing left leaves its position empty (item ``-1``); with every list holding
    at least ``k`` distinct items this cannot happen.

    One Python step per position (``k`` steps, each vectorised over runs): with ``L``-long lists
    the work is ``O(R L k^2)`` comparisons, which at ``k = 10`` costs far less than the rest of
    a simulation step (``bench/multileave.py`` prints the share).

    Parameters
    ----------
    rankings : array of int, shape (R, n_rankers, L)
        Each ranker's list, best first; ``-1`` pads short lists.
    order : array of int, shape (R, k)
        Ranker of every position, in ``[0, n_rankers)``.

    Returns
    -------
    items : ndarray of int64, shape (R, k)
        Items shown, no duplicates within a run (``-1`` for an empty position).
    ranks : ndarray of int64, shape (R, k)
        Rank of each item in its ranker's list (``-1`` for an empty position).

    Raises
    ------
    TypeError
        Non-integer arrays.
    ValueError
        Wrong dimensions, mismatched runs, or a ranker index out of range.
    """
    lists = _check_index_array(rankings, "rankings", 3)
    order = _check_index_array(order, "order", 2)
    R, n_rankers, L = lists.shape
    if order.shape[0] != R:
        raise ValueError(f"order has {order.shape[0]} runs but rankings {R}")
    if order.size and (order.min() < 0 or order.max() >= n_rankers):
        raise ValueError(f"order must hold ranker indices in [0, {n_rankers}), got values in "
                         f"[{order.min()}, {order.max()}]")
    k = order.shape[1]
    if R == 1:  # one request (the service): a plain walk, ~20x cheaper than k numpy steps
        return _fill_one(lists[0], order[0])
    items = np.full((R, k), -1, dtype=np.int64)
    ranks = np.full((R, k), -1, dtype=np.int64)
    flat = lists.reshape(R * n_rankers, L)
    offsets = np.arange(R) * n_rankers
    for j in range(k):
        own = np.take(flat, offsets + order[:, j], axis=0)  # (R, L)
        free = own >= 0
        if j:
            free &= ~(own[:, :, None] == items[:, None, :j]).any(axis=2)
        first = free.argmax(axis=1)
        found = free[np.arange(R), first]
        items[:, j] = np.where(found, own[np.arange(R), first], -1)
        ranks[:, j] = np.where(found, first, -1)
    return items, ranks


def _fill_one(lists: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fill_slate` of one run: ``lists`` (n_rankers, L), ``order`` (k,); (1, k) each.

    The same rule, walked in Python: each ranker keeps a pointer past the items it has passed
    (shown or padding), which can only be shown again by no one.
    """
    rows = lists.tolist()
    pointer = [0] * len(rows)
    shown: set[int] = set()
    items, ranks = [], []
    for ranker in order.tolist():
        row, p = rows[ranker], pointer[ranker]
        while p < len(row) and (row[p] < 0 or row[p] in shown):
            p += 1
        if p < len(row):
            shown.add(row[p])
            items.append(row[p])
            ranks.append(p)
            p += 1
        else:
            items.append(-1)
            ranks.append(-1)
        pointer[ranker] = p
    return np.array([items], dtype=np.int64), np.array([ranks], dtype=np.int64)


def team_draft(rankings: Any, k: int, rng: RunRandom) -> tuple[np.ndarray, np.ndarray]:
    """Team-draft multileave of ``m`` ranked lists into slates of ``k``, for every run.

    Parameters
    ----------
    rankings : array of int, shape (R, m, L)
        The ``m`` rankers' lists, best first (``-1`` pads short lists).
    k : int
        Slate size, >= 1.
    rng : Generator or sequence of R Generators
        Source of the draft order (:func:`draft_order`).

    Returns
    -------
    items : ndarray of int64, shape (R, k)
        The slates (:func:`fill_slate`).
    teams : ndarray of int64, shape (R, k)
        The ranker, in ``[0, m)``, that contributed each position.

    Raises
    ------
    TypeError, ValueError
        As :func:`fill_slate` and :func:`draft_order`.
    """
    lists = _check_index_array(rankings, "rankings", 3)
    teams = draft_order(lists.shape[0], lists.shape[1], k, rng)
    items, _ = fill_slate(lists, teams)
    return items, teams


def credit(teams: Any, clicks: Any, n_arms: int) -> tuple[np.ndarray, np.ndarray]:
    """Clicks and shown positions per arm, from the arm that contributed each position.

    Parameters
    ----------
    teams : array of int, shape (R, k)
        Arm of every position, in ``[0, n_arms)``; ``-1`` for an empty position (not counted).
    clicks : array of float, shape (R, k)
        Clicks (0/1, or fractional rewards within [0, 1]) per position.
    n_arms : int
        ``K``.

    Returns
    -------
    clicks_per_arm, shown_per_arm : ndarray of float64, shape (R, K)
        Sum of the clicks on each arm's positions, and how many positions each arm filled.

    Raises
    ------
    TypeError
        ``teams`` not integer; ``clicks`` neither real numbers nor booleans.
    ValueError
        Mismatched shapes, an arm outside ``[-1, n_arms)``, clicks outside [0, 1] or NaN.
    """
    n_arms = check_int(n_arms, "n_arms")
    teams = _check_index_array(teams, "teams", 2)
    clicks = check_rewards(clicks, "clicks", 0.0, 1.0, allow_bool=True)
    if clicks.shape != teams.shape:
        raise ValueError(f"clicks has shape {clicks.shape}; expected the teams' {teams.shape}")
    if teams.size and (teams.min() < -1 or teams.max() >= n_arms):
        raise ValueError(f"teams must hold arm positions in [0, {n_arms}) or -1, got values in "
                         f"[{teams.min()}, {teams.max()}]")
    R = teams.shape[0]
    shown = teams >= 0
    # one flat bincount per statistic: cell r * K + arm, empty positions dropped
    cells = (np.arange(R)[:, None] * n_arms + teams)[shown]
    clicked = np.bincount(cells, clicks[shown], minlength=R * n_arms).reshape(R, n_arms)
    filled = np.bincount(cells, minlength=R * n_arms).reshape(R, n_arms).astype(np.float64)
    return clicked, filled


def set_probabilities(alpha: np.ndarray, beta: np.ndarray, sets: np.ndarray, n_grid: int
                      ) -> np.ndarray:
    """P(set ``S`` holds the ``m`` largest of independent Beta samples), (R, n_sets).

    ``P(S) = sum_{a in S} P(a is the smallest of S and every arm outside S is below it)``; in arm
    ``a``'s quantile space that is ``int_0^1 prod_{b in S - a} (1 - F_b(x)) prod_{c not in S}
    F_c(x) du`` with ``x = F_a^{-1}(u)``, integrated by the trapezoid rule on
    :func:`bandits.base.quadrature_grid` (the grid of Thompson Sampling's propensities; for
    ``m = 1`` this is exactly :func:`bandits.thompson.beta_probability_of_max`'s integral).
    Rows are renormalised to sum to one.

    Parameters
    ----------
    alpha, beta : ndarray of float, shape (R, K)
        Beta posteriors.
    sets : ndarray of int, shape (n_sets, m)
        Every set of ``m`` arm positions, each row ascending.
    n_grid : int
        Quadrature intervals.
    """
    a = np.asarray(alpha, dtype=np.float64)
    b = np.asarray(beta, dtype=np.float64)
    R, K = a.shape
    u, du = quadrature_grid(n_grid)
    member = np.zeros((len(sets), K), dtype=bool)
    member[np.arange(len(sets))[:, None], sets] = True
    probs = np.zeros((R, len(sets)))
    for arm in range(K):
        x = special.betaincinv(a[:, arm, None], b[:, arm, None], u[None, :])  # (R, G + 1)
        F = special.betainc(a[:, :, None], b[:, :, None], x[:, None, :])  # (R, K, G + 1)
        for s in np.flatnonzero(member[:, arm]):
            inside = member[s].copy()
            inside[arm] = False
            g = (1.0 - F[:, inside]).prod(axis=1) * F[:, ~member[s]].prod(axis=1)
            probs[:, s] += 0.5 * (g[:, :-1] + g[:, 1:]) @ du
    probs = np.clip(probs, 0.0, None)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


@dataclass
class MultileaveState:
    """Credited statistics of ``R`` independent runs (see :meth:`MultileaveThompsonSampling.
    init_batch`).

    Attributes
    ----------
    successes : ndarray of float, shape (R, K)
        Clicks credited to each arm.
    failures : ndarray of float, shape (R, K)
        Positions each arm filled minus its credited clicks.
    """

    successes: np.ndarray
    failures: np.ndarray

    @property
    def n_runs(self) -> int:
        """Number of runs ``R``."""
        return int(self.successes.shape[0])


@dataclass
class MultileaveChoice:
    """What :meth:`MultileaveThompsonSampling.select_batch` chose, for every run.

    Attributes
    ----------
    arms : ndarray of int64, shape (R, m)
        The multileaved set, arm positions ascending.
    teams : ndarray of int64, shape (R, k)
        The arm (position in ``policy.arms``) that fills each slate position.
    """

    arms: np.ndarray
    teams: np.ndarray


class MultileaveThompsonSampling(FixedOnceBuilt):
    """Thompson Sampling over which ``m`` arms to multileave, learning from credited clicks.

    Each arm has a Beta posterior on the click rate of the positions it fills:
    ``Beta(prior_alpha + credited clicks, prior_beta + filled positions - credited clicks)``.
    A decision draws one sample per arm, multileaves the ``m`` arms with the largest samples
    (team draft, :func:`draft_order`) and, once the user has responded, credits each position's
    click to the arm that filled it (:func:`credit`). Every multileaved arm shows ``k // m`` or
    more items per impression, so each impression informs ``m`` arms instead of one. With
    ``m = 1`` this is Beta Thompson Sampling whose reward is the click rate per position.

    Parameters
    ----------
    arms : list of str or int
        Arm names, or their number ``K``.
    m : int, default 2
        Arms per slate, within ``[1, min(K, slate_size)]``.
    slate_size : int, default 10
        Positions ``k`` per slate; with ``m``, ``P(draft order | set)`` must be at least
        :data:`MIN_ORDER_PROBABILITY` (float64's smallest normal: about 2,000 positions for
        ``m = 2``).
    prior_alpha, prior_beta : float or list of float, default 1.0
        Beta prior, one value for all arms or one per arm, in ``[0.1, 1e9]``
        (:func:`bandits.thompson.check_beta_prior`).
    propensity_grid : int, default 512
        Quadrature intervals of :meth:`set_probabilities` (>= 2).
    random_state : int, SeedSequence, Generator or None
        Source of the single-run draws.

    Attributes
    ----------
    arms : list of str
    sets : ndarray of int64, shape (C(K, m), m)
        Every set of ``m`` arm positions, lexicographic; the columns of :meth:`set_probabilities`.
    state_ : MultileaveState
        The one-run state behind :meth:`select` and :meth:`update`.

    Raises
    ------
    TypeError, ValueError
        Invalid arms or hyper-parameters (the message names the parameter and the value).

    Examples
    --------
    >>> policy = MultileaveThompsonSampling(["svd", "ease", "popularity"], m=2, slate_size=4,
    ...                                     random_state=0)
    >>> decision = policy.select()
    >>> len(decision["teams"]), len(decision["arms"])
    (4, 2)
    >>> policy.update(decision["teams"], [1, 0, 0, 0])
    >>> round(float(policy.set_probabilities().sum()), 6)
    1.0
    """

    name: ClassVar[str] = "MultileaveThompsonSampling"

    def __init__(self, arms: Sequence[str] | int, *, m: int = 2, slate_size: int = 10,
                 prior_alpha: float | Sequence[float] = 1.0,
                 prior_beta: float | Sequence[float] = 1.0, propensity_grid: int = 512,
                 random_state: RandomState = None) -> None:
        self.m = m
        self.slate_size = slate_size
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.propensity_grid = propensity_grid
        self.random_state = random_state
        self.arms = check_arm_names(arms)
        K = len(self.arms)
        check_int(slate_size, "slate_size")
        check_int(m, "m")
        if m > min(K, slate_size):
            raise ValueError(f"m={m} must be within [1, min(n_arms={K}, slate_size={slate_size})]"
                             " so that every multileaved arm fills a position")
        check_order_probability(m, slate_size)
        check_propensity_grid(propensity_grid)
        self.alpha0_ = check_beta_prior(prior_alpha, "prior_alpha", K)
        self.beta0_ = check_beta_prior(prior_beta, "prior_beta", K)
        self._rng = make_generator(random_state)
        self.state_ = self.init_batch(1)
        self._built = True  # its parameters are fixed now (FixedOnceBuilt)

    @property
    def n_arms(self) -> int:
        """Number of arms ``K``."""
        return len(self.arms)

    @functools.cached_property
    def sets(self) -> np.ndarray:
        """Every set of ``m`` arm positions, ascending, shape ``(n_sets, m)`` int64: built when
        first asked (by the probabilities), never past :data:`MAX_SETS` (``C(300, 20)`` sets,
        built in the constructor, never returned; found while bounding the attack's sizes).

        Raises
        ------
        ValueError
            More than :data:`MAX_SETS` sets.
        """
        n_sets = math.comb(self.n_arms, self.m)
        if n_sets > MAX_SETS:
            raise ValueError(f"{n_sets:,} sets of m={self.m} among {self.n_arms} arms; "
                             f"set probabilities are computed for at most {MAX_SETS:,}")
        return np.array(list(itertools.combinations(range(self.n_arms), self.m)),
                        dtype=np.int64).reshape(n_sets, self.m)

    @property
    def order_probability(self) -> float:
        """``P(draft order | set)``, the same for every order (:func:`order_probability`)."""
        return order_probability(self.m, self.slate_size)

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as given (priors as per-arm lists), JSON-safe."""
        return {"m": self.m, "slate_size": self.slate_size,
                "prior_alpha": self.alpha0_.tolist(), "prior_beta": self.beta0_.tolist(),
                "propensity_grid": self.propensity_grid}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}(arms={self.arms!r}, {params})"

    # ----------------------------------------------------------------- batched core
    def init_batch(self, n_runs: int, *, dtype: Any = np.float64) -> MultileaveState:
        """A state of ``n_runs`` runs at the prior (float32 or float64 statistics).

        Raises
        ------
        TypeError, ValueError
            ``n_runs`` not an int >= 1, or another dtype.
        """
        check_int(n_runs, "n_runs")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype={dtype} is not allowed; use float32 or float64")
        zeros = np.zeros((n_runs, self.n_arms), dtype=dtype)
        return MultileaveState(zeros, zeros.copy())

    def _check_state(self, state: Any) -> None:
        """Refuse a state that is not one of this policy's (:func:`~bandits.errors.
        check_state_layout`): a 3-arm state read by a 5-arm policy chose among 3 arms.
        """
        check_state_type(state, MultileaveState, type(self).__name__)
        check_state_layout({"successes": state.successes, "failures": state.failures},
                           {"successes": (self.n_arms,), "failures": (self.n_arms,)},
                           f"{type(self).__name__} with {self.n_arms} arms")

    def posterior_batch(self, state: MultileaveState) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters ``(alpha, beta)`` of every run and arm, each (R, K)."""
        self._check_state(state)
        return (state.successes + self.alpha0_.astype(state.successes.dtype),
                state.failures + self.beta0_.astype(state.failures.dtype))

    def select_batch(self, state: MultileaveState, rng: RunRandom) -> MultileaveChoice:
        """The multileaved set and the draft order of every run.

        Parameters
        ----------
        state : MultileaveState
        rng : Generator or sequence of R Generators
            Run ``r`` with ``rng[r]`` draws what a single policy seeded with it draws.

        Returns
        -------
        MultileaveChoice
            ``arms`` (R, m) and ``teams`` (R, k), both arm positions.
        """
        alpha, beta = self.posterior_batch(state)  # checks the state first
        draws = Draws(rng, state.n_runs)
        ga, gb = gamma_pair_draws(alpha, beta, draws)
        with np.errstate(divide="ignore"):  # G_a / G_b is increasing in the Beta sample
            ga /= gb
        # the m largest samples; sorted so a set has one spelling (the log's and sets' order)
        chosen = np.sort(np.argsort(-ga, axis=1, kind="stable")[:, :self.m], axis=1)
        order = _draft_order(draws, self.m, self.slate_size)
        return MultileaveChoice(chosen.astype(np.int64), np.take_along_axis(chosen, order, 1))

    def update_batch(self, state: MultileaveState, teams: Any, clicks: Any) -> None:
        """Credit one slate's clicks per run, in place.

        Parameters
        ----------
        state : MultileaveState
        teams : array of int, shape (R, k)
            Arm of every position (``MultileaveChoice.teams``); ``-1`` for an empty position.
        clicks : array of float, shape (R, k)
            Click (0/1) or a reward in [0, 1] per position.

        Raises
        ------
        TypeError, ValueError
            As :func:`credit`, or a batch of the wrong number of runs; the state is unchanged.
        """
        self._check_state(state)
        clicked, filled = credit(teams, clicks, self.n_arms)
        if clicked.shape[0] != state.n_runs:
            raise ValueError(f"teams has {clicked.shape[0]} runs; the state has {state.n_runs}")
        state.successes += clicked
        state.failures += filled - clicked

    def set_probabilities_batch(self, state: MultileaveState) -> np.ndarray:
        """``P(S)`` of every set of :attr:`sets`, (R, n_sets), rows summing to one.

        Raises
        ------
        ValueError
            More than :data:`MAX_SETS` sets.
        """
        sets = self.sets  # refused past MAX_SETS
        alpha, beta = self.posterior_batch(state)
        return set_probabilities(alpha, beta, sets, self.propensity_grid)

    def inclusion_probabilities_batch(self, state: MultileaveState) -> np.ndarray:
        """``P(arm in S)`` of every arm, (R, K), rows summing to ``m``."""
        member = np.zeros((len(self.sets), self.n_arms))
        member[np.arange(len(self.sets))[:, None], self.sets] = 1.0
        return self.set_probabilities_batch(state) @ member

    # ----------------------------------------------------------------- single run
    def select(self) -> dict[str, Any]:
        """One decision from the policy's own generator, with what its log row needs.

        Returns
        -------
        dict
            ``arms`` (list of m arm positions, ascending), ``teams`` (list of k arm positions,
            one per slate position), ``set_probability`` (``P(S)``), ``order_probability``
            (``P(teams | S)``) and ``inclusion_probabilities`` (list of K).

        Raises
        ------
        ValueError
            More than :data:`MAX_SETS` sets, before anything is drawn (review: a refused
            select advanced the generator; ``select_batch``, which needs no set
            probabilities, runs with any number of sets).
        """
        sets = self.sets  # refused past MAX_SETS: the set probabilities below need them
        choice = self.select_batch(self.state_, self._rng)
        probs = self.set_probabilities()
        arms = choice.arms[0].tolist()
        index = next(i for i, s in enumerate(sets.tolist()) if s == arms)
        member = np.zeros((len(sets), self.n_arms))
        member[np.arange(len(sets))[:, None], sets] = 1.0
        return {"arms": arms, "teams": choice.teams[0].tolist(),
                "set_probability": float(probs[index]),
                "order_probability": self.order_probability,
                "inclusion_probabilities": (probs @ member).tolist()}

    def multileave(self, rankings: Any, teams: Any) -> list[int]:
        """The slate of one decision: ``rankings`` (K, L), every arm's list; ``teams`` (k,).

        Raises
        ------
        TypeError, ValueError
            As :func:`fill_slate`.
        """
        lists = _check_index_array(rankings, "rankings", 2)
        if lists.shape[0] != self.n_arms:
            raise ValueError(f"rankings has {lists.shape[0]} lists; expected one per arm "
                             f"({self.n_arms})")
        items, _ = fill_slate(lists[None], _check_index_array(teams, "teams", 1)[None])
        return cast(list[int], items[0].tolist())

    def update(self, teams: Any, clicks: Any) -> None:
        """Credit one slate's clicks: ``teams`` (k,) arm per position, ``clicks`` (k,).

        Raises
        ------
        TypeError, ValueError
            As :meth:`update_batch`; the state is unchanged.
        """
        self.update_batch(self.state_, np.asarray(teams)[None], np.asarray(clicks)[None])

    def set_probabilities(self) -> np.ndarray:
        """``P(S)`` of every set of :attr:`sets` under the current state, (n_sets,)."""
        return cast(np.ndarray, self.set_probabilities_batch(self.state_)[0])

    def inclusion_probabilities(self) -> np.ndarray:
        """``P(arm in S)`` of every arm, (K,), summing to ``m``."""
        return cast(np.ndarray, self.inclusion_probabilities_batch(self.state_)[0])

    def posterior(self) -> dict[str, dict[str, float]]:
        """Per-arm ``{"alpha", "beta", "mean", "clicks", "shown"}`` of the single-run state."""
        a, b = (x[0] for x in self.posterior_batch(self.state_))
        s, f = self.state_.successes[0], self.state_.failures[0]
        return {arm: {"alpha": float(a[i]), "beta": float(b[i]),
                      "mean": float(a[i] / (a[i] + b[i])),
                      "clicks": float(s[i]), "shown": float(s[i] + f[i])}
                for i, arm in enumerate(self.arms)}

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this policy, as plain JSON data.

        Keys: ``policy``, ``format``, ``arms``, ``params``, ``stats`` (``successes`` and
        ``failures`` per arm) and ``rng`` (the generator's state: a rebuilt policy continues the
        same random stream).
        """
        return {"policy": self.name, "format": STATE_FORMAT, "arms": list(self.arms),
                "params": self.get_params(),
                "stats": {"successes": self.state_.successes[0].tolist(),
                          "failures": self.state_.failures[0].tolist()},
                "rng": _json_value(self._rng.bit_generator.state)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *, random_state: RandomState = None
                        ) -> MultileaveThompsonSampling:
        """Rebuild the policy :meth:`state_dict` described.

        Raises
        ------
        ValueError
            Not such a state (wrong ``policy`` or ``format``, statistics of the wrong length).
        """
        if not isinstance(state, dict) or state.get("policy") != cls.name:
            raise ValueError(f"state must be a {cls.name} state_dict(); got policy="
                             f"{state.get('policy') if isinstance(state, dict) else state!r}")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state['format']={state.get('format')!r}; this version reads "
                             f"format {STATE_FORMAT}")
        policy = cast(MultileaveThompsonSampling,
                      build_from_state(cls, init_param_names(cls), state, random_state))
        saved = state.get("stats")
        if not isinstance(saved, dict) or sorted(saved) != ["failures", "successes"]:
            raise ValueError(f"state['stats']={short_repr(saved)} must be a dict of "
                             "'successes' and 'failures'")
        values = {key: check_stat(saved[key], f"state['stats'][{key!r}]", (policy.n_arms,),
                                  low=0.0, high=MAX_COUNT, why="a count")
                  for key in ("successes", "failures")}
        for key, value in values.items():
            getattr(policy.state_, key)[0] = value
        if random_state is None and state.get("rng"):
            # as BatchedPolicy.from_state_dict: continue the saved bit generator's stream
            policy._rng = restore_generator(state["rng"])
        return policy
