"""The interface every policy implements (see DESIGN.md, "Policy"), and the shared machinery.

Arms are identified by name (``policy.arms``) and by position; ``select`` returns the position,
``update`` accepts either. Everything a policy learned is in ``state_dict()``, plain JSON data from
which ``Policy.from_state_dict`` rebuilds an identical policy, so the service can persist it and
rebuild it from its decision log.

Two layers
----------
:class:`Policy` is the abstract contract. :class:`BatchedPolicy` implements it once for every
policy of this package on top of a *batched core*: the learned statistics live in a
:class:`BatchState` of arrays whose first two axes are ``(runs, arms)``, and three methods advance
all runs in one numpy step::

    state = policy.init_batch(n_runs)                 # every run starts from the prior
    arms = policy.select_batch(state, rng)            # (R,) positions
    policy.update_batch(state, arms, rewards)         # (R,) observations, one per run

The single-run methods (``select``/``update``/``action_probabilities``) are the same calls on a
one-run state (``policy.state_``), so the single and the batched paths share one implementation of
the maths (each policy supplies ``_init_stats``, ``_choose``, ``_learn`` and ``_probabilities``,
thin wrappers around pure module-level functions).

Randomness
----------
``rng`` in ``select_batch`` is either one ``numpy.random.Generator`` shared by all runs (fastest;
runs are independent but their draws interleave in one stream) or a sequence of ``R`` Generators,
one per run. In the second form run ``r`` draws exactly what a single policy with
``random_state=rngs[r]`` draws, so ``R`` single runs and one batched run give identical results
(``spawn_generators(seed, R)`` makes the children from one seed).

Delayed updates
---------------
Every policy takes ``batch_size`` (B, default 1). Observations are buffered and the statistics are
refreshed only when B observations have arrived (Chapelle & Li 2011, section 4); selections and
propensities between refreshes use the last refreshed statistics. The buffer is part of the state.
"""

from __future__ import annotations

import functools
import inspect
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import numpy as np

from bandits.errors import (
    MAX_COUNT,
    MAX_STATE_BYTES,
    UnknownArmError,
    arm_index,
    check_arm_names,
    check_int,
    check_real,
    check_reward_value,
    check_rewards,
    check_stat,
    check_state_layout,
    check_state_type,
    format_bytes,
    real_array,
    reward_bounds,
    short_repr,
)

RandomState = int | np.random.Generator | np.random.SeedSequence | None
RunRandom = np.random.Generator | Sequence[np.random.Generator]

STATE_FORMAT = 1


@functools.cache
def _init_parameters(cls: type) -> frozenset[str]:
    """The parameter names of ``cls.__init__`` (cached: ``inspect.signature`` took ~20 us, at
    every attribute set of a built policy).
    """
    return frozenset(inspect.signature(cls.__init__).parameters)  # type: ignore[misc]


class FixedOnceBuilt:
    """What its ``__init__`` takes (hyper-parameters, arms, seed) is fixed once the object is
    built (``self._built = True`` at the end of ``__init__``): checked there, with the state
    made from it. Found by attack: ``p.epsilon = -5`` gave probabilities of -1.67,
    ``p.exploration = nan`` NaN ones, ``p.arms = ["x"]`` one arm over three columns of
    state, each a state :func:`policy_from_state_dict` then refused; ``p.prior_alpha = -1``
    was ignored without a word; and a multileaving policy and the drift detectors took the
    same. Arms change through ``add_arm`` / ``remove_arm``; another hyper-parameter is
    another object.
    """

    _built = False

    def _fixed(self, name: str, verb: str) -> None:
        if self._built and name in _init_parameters(type(self)):  # type: ignore[arg-type]  # a class is hashable
            raise AttributeError(
                f"cannot {verb} {type(self).__name__}.{name}: fixed once built (checked there, "
                "and the state made from it); build another with the value, e.g. "
                f"type(obj)(obj.arms, **{{**obj.get_params(), {name!r}: ...}})")

    def __setattr__(self, name: str, value: Any) -> None:
        """Refuse to set what ``__init__`` took, once built (see the class doc).

        Raises
        ------
        AttributeError
            ``name`` is a parameter of ``__init__`` and the object is built.
        """
        self._fixed(name, "set")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        """Refuse to delete what ``__init__`` took, once built (see the class doc).

        Raises
        ------
        AttributeError
            ``name`` is a parameter of ``__init__`` and the object is built.
        """
        self._fixed(name, "delete")
        super().__delattr__(name)


class Policy(ABC):
    """Base class of the bandit policies.

    Attributes
    ----------
    arms : list of str
        Arm names in position order.
    """

    arms: list[str]

    @abstractmethod
    def select(self, context: np.ndarray | None = None) -> int:
        """Position of the arm to pull (draws from the policy's own generator)."""

    @abstractmethod
    def update(self, arm: int | str, reward: float, context: np.ndarray | None = None) -> None:
        """Learn from one observed ``reward`` of ``arm``.

        Raises
        ------
        ValueError
            Unknown arm, reward outside the policy's support or NaN, wrong context shape; the
            state is left unchanged.
        """

    @abstractmethod
    def action_probabilities(self, context: np.ndarray | None = None) -> np.ndarray:
        """Propensity of every arm under the current state, shape ``(n_arms,)``, summing to one."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters and learned state as JSON-serialisable data (no numpy types)."""

    @classmethod
    @abstractmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Policy:
        """Rebuild the policy :meth:`state_dict` described."""


def seed_sequence(seed: int | np.random.SeedSequence | None, name: str = "seed"
                  ) -> np.random.SeedSequence:
    """The ``SeedSequence`` of a seed: the one place this package turns a seed into entropy.

    Parameters
    ----------
    seed : int, SeedSequence or None
        A non-negative int, a SeedSequence (used as given) or None (OS entropy).
    name : str, default "seed"
        The parameter's name, for the messages.

    Returns
    -------
    numpy.random.SeedSequence

    Raises
    ------
    TypeError
        Anything but an int, a SeedSequence or None.
    ValueError
        A negative int (numpy's own message, "expected non-negative integer", named neither the
        value nor the parameter).
    """
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"{name}={int(seed)} is outside the allowed range [0, inf): a seed "
                             "is a non-negative int")
        return np.random.SeedSequence(int(seed))
    raise TypeError(f"{name} must be None, a non-negative int or a SeedSequence, got "
                    f"{seed!r} ({type(seed).__name__})")


def make_generator(random_state: RandomState) -> np.random.Generator:
    """A ``numpy.random.Generator`` from an int seed, a SeedSequence, a Generator or None.

    A Generator is used as given (not copied), so the caller can share or inspect it.

    Raises
    ------
    TypeError
        Anything else.
    ValueError
        A negative int seed (see :func:`seed_sequence`).
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (isinstance(random_state, np.random.SeedSequence | int | np.integer)
                                and not isinstance(random_state, bool)):
        return np.random.default_rng(seed_sequence(random_state, "random_state"))
    raise TypeError(
        "random_state must be None, an int, a SeedSequence or a numpy Generator, "
        f"got {type(random_state).__name__}"
    )


def spawn_generators(seed: int | np.random.SeedSequence, n: int) -> list[np.random.Generator]:
    """``n`` independent Generators spawned from one seed (one per run)."""
    return [np.random.default_rng(child) for child in seed_sequence(seed).spawn(n)]


#: Smallest shape of a Gamma draw a policy's prior may ask for (Beta priors are two Gamma
#: draws, a Student-t posterior one): P(Gamma(a) < tiny) ~ tiny^a, so smaller shapes underflow
#: to 0 (0.47 at a = 1e-3 in float64, 0.36 at a = 0.01 in float32) and the samples tie, which
#: the argmax resolves to the first arm: the picks then disagree with the propensities
#: (measurements at :data:`bandits.thompson.BETA_PRIOR_MIN`; GaussianThompsonSampling's
#: ``prior_shape`` 1e-3: 0.39 / 0.33 / 0.28 of 20,000 picks against 1/3 each, 0.1: agrees).
MIN_GAMMA_SHAPE = 0.1


#: Below this many entries :func:`standard_gamma` calls numpy's sampler: the vectorised one
#: makes about 40 numpy calls per block, which only pay off over many entries (CPU time per
#: call, shapes 1..19: 2,048 entries 48 us numpy / 67 us vectorised, 4,096 89 / 84 us,
#: 16,384 340 / 206 us).
FAST_GAMMA_MIN_SIZE = 4096
#: Entries per block of the vectorised sampler: its ten or so float32 temporaries then stay in
#: a core's L2 cache. CPU time of one Thompson Sampling choice over 200,000 runs x 3 arms at load
#: ~6 (two Gamma arrays of 600,000): blocks of 16,384 15.9 ms (call overhead), 32,768 14.5,
#: 65,536 14.0, 131,072 14.6, the whole array at once 27.5 ms.
GAMMA_BLOCK = 65_536


def standard_gamma(rng: np.random.Generator, shape: np.ndarray,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Exact Gamma(shape, 1) draws of the float array ``shape``, same shape and dtype.

    float32 arrays of at least :data:`FAST_GAMMA_MIN_SIZE` entries take one vectorised round of
    Marsaglia & Tsang's (2000) rejection method (:func:`_marsaglia_tsang_float32` block by
    block, then one :func:`_full_test` for the entries no block's squeeze settled); the entries
    it rejects (0.03-5%, depending on the shape) are drawn again by this function (vectorised
    again if there are enough of them), every other array by ``rng.standard_gamma``. Exact: an
    accepted proposal has exactly the Gamma law, whatever the other entries did, and a rejected
    entry gets a fresh exact draw (up to float32 resolution: Box-Muller's uniforms lie on a
    grid of step 2^-23, so the normal proposals stop at 5.65 sigma, a tail of 1.6e-8). Which
    path runs depends only on the array's dtype and size, so a run drawn on its own and the
    same run inside a per-run batch draw identically (see :class:`Draws`).

    Why: numpy's loop calls the bit generator and its float ziggurat entry by entry (18 ns per
    float32 draw on a quiet machine), while uniforms from raw bits cost 0.9 ns in bulk and
    float32 log, sin, cos and sqrt a fraction of a ns each under SIMD. 600,000 shapes (a third
    1, the rest 1..59, as in a simulation), same process, CPU time: 4.3 ms against numpy's
    11.4 ms at load 7 (the version before the per-shape squeeze and the spare bits: 4.9 ms;
    5.4 against 8.8 in an older, quieter measurement). The full test once over all blocks
    instead of once per block (its numpy calls on a few thousand entries are mostly call
    overhead), the squeeze and the result from ``d w`` (one pass less each) and the rejected
    entries redrawn by this function: the two Gamma calls of a Thompson Sampling step (the
    throughput benchmark's state after 30 steps) 8.32 ms against 8.64 before, same process,
    load 5. In float64
    numpy's sampler is kept: float64 ``sin``/``cos`` have no SIMD loop here (7 ms per
    600,000) and a float64 version of this sampler took 29.5 ms against numpy's 17.8 ms.

    Also measured and dropped (600,000 Beta draws, same load): ``Generator.beta`` 27.9 ms,
    no faster than two float32 ``standard_gamma`` calls (28.0 ms); Cheng's (1978) BB/BC Beta
    algorithms vectorised: one uniform pair per Beta, but 6-31% rejections at the small counts
    of a simulation and sums like ``a + r - w`` that cancel in float32 once the counts are
    large, so the tests need float64 arithmetic: 33 ms for one round (a prototype in
    ``/tmp``, not blocked). Tried again with Cheng's BA (BB's squeezes in float32, a float64
    full test for the rest, every round on the rejected entries): it passes the KS tests,
    but accepts only 68-89% of proposals at the shapes of a simulation (34% at (0.1, 3)) and
    BB's squeeze settles 39-52% in float32, so 600,000 Beta draws took 64 ms against 9.1 ms
    for two calls of this sampler. Drawing only for the
    arms that could still win does not help where it matters: early in a run every arm can.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the draws.
    shape : ndarray of float32 or float64
        Gamma shapes (> 0), any array shape.
    out : ndarray, optional
        Same shape and dtype as ``shape``, C-contiguous; filled and returned.

    Returns
    -------
    ndarray
        The draws (``out`` when given).
    """
    if shape.dtype != np.float32 or shape.size < FAST_GAMMA_MIN_SIZE:
        return rng.standard_gamma(shape, dtype=shape.dtype, out=out)
    if out is None:
        out = np.empty(shape.shape, dtype=np.float32)
    elif not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous (its flat view is written); got an array "
                         f"of shape {out.shape} with strides {out.strides}")
    flat_shape = np.ascontiguousarray(shape).reshape(-1)
    flat_out = out.reshape(-1)
    small = flat_shape < 1 if flat_shape.min() < 1 else None
    unsure = [_marsaglia_tsang_float32(rng, flat_shape[start:start + GAMMA_BLOCK],
                                       flat_out[start:start + GAMMA_BLOCK], small is not None,
                                       start)
              for start in range(0, flat_shape.size, GAMMA_BLOCK)]
    # One full test for the entries no block's squeeze settled: its dozen numpy calls on a few
    # thousand entries cost mostly call overhead, once per call instead of once per block.
    where, spare, z2, w = (np.concatenate(part) for part in zip(*unsure, strict=True))
    rejected = where[~_full_test(rng, flat_shape[where], spare, z2, w)]
    if small is not None:
        # Gamma(a) = Gamma(a + 1) * U^(1/a) for the accepted shapes below 1 (float64: the
        # power is tiny for small a); the rejected ones are redrawn with their own shape below
        small[rejected] = False
        boost = np.flatnonzero(small)
        uu = rng.random(boost.size)
        flat_out[boost] *= np.exp(np.log1p(-uu) / flat_shape[boost]).astype(np.float32)
    if rejected.size:
        # a fresh exact draw: vectorised again when there are enough of them, else numpy's
        flat_out[rejected] = standard_gamma(rng, flat_shape[rejected])
    return out


def uniforms_float32(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniforms on [1, 2) in float32 (add -1 for [0, 1), take 2 - u for (0, 1]).

    Each 64-bit output of the bit generator gives two: 23 random bits as the mantissa of a
    float in [1, 2), i.e. a uniform on the grid of step 2^-23 (numpy's float32 ``random``
    uses 24 bits through a multiply; this needs only integer shifts). 0.9 ns per uniform
    against 1.8 ns for ``rng.random(dtype=np.float32)`` (blocks of 65,536, CPU time).
    """
    bits = rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]
    bits >>= np.uint32(9)
    bits |= np.uint32(0x3F800000)
    return bits.view(np.float32)


#: Low bits of each 32-bit word that the [1, 2) mantissa trick of :func:`uniforms_float32`
#: drops; :func:`_marsaglia_tsang_float32` reads them as the top bits of its acceptance uniform.
_SPARE_BITS = 9
#: ``k = (2^9 / (108 (1 - 2^-20)))^(1/4)``: the sampler draws ``z = k x`` instead of the normal
#: ``x`` (the factor rides on Box-Muller's radius for free), so that
#: ``z^4 = 2^9 x^4 / (108 (1 - 2^-20))``, the squeeze's left side, comes out of two squarings.
_Z_SCALE = (2.0**_SPARE_BITS / (108.0 * (1.0 - 2.0**-20))) ** 0.25
#: Per-thread work buffers of :func:`_marsaglia_tsang_float32`, one :data:`GAMMA_BLOCK` each.
_GAMMA_WORK = threading.local()


def _gamma_work() -> dict[str, np.ndarray]:
    """The calling thread's work buffers (created once): every block reuses them, no allocation."""
    work: dict[str, np.ndarray] | None = getattr(_GAMMA_WORK, "buffers", None)
    if work is None:
        work = {name: np.empty(GAMMA_BLOCK + 1, dtype=np.float32)
                for name in ("d", "c", "z", "w", "s", "g")}
        work["bits"] = np.empty(GAMMA_BLOCK, dtype=np.uint32)
        work["mask"] = np.empty(GAMMA_BLOCK, dtype=bool)
        _GAMMA_WORK.buffers = work
    return work


def _marsaglia_tsang_float32(rng: np.random.Generator, shape: np.ndarray, out: np.ndarray,
                             has_small: bool, offset: int
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One round of Marsaglia & Tsang (2000) on one block of flat float32 shapes.

    For a >= 1, with d = a - 1/3 and c = 1 / sqrt(9 d): propose ``d v`` with
    ``v = (1 + c x)^3``, x standard normal (Box & Muller 1958 on two uniforms: the pair
    ``r cos t, r sin t`` with ``r = sqrt(-2 log u1)``, u1 in (0, 1], t = 2 pi u2), and accept it
    when ``v > 0`` and ``log U < h = x^2 / 2 + d (1 - v + log v)``, U uniform on [0, 1).
    Shapes below 1 use Gamma(a) = Gamma(a + 1) U^(1/a) (the same paper; ``has_small``: the
    block may hold some, the caller applies the power). ``out`` is filled with every
    proposal ``d v``; the entries the squeeze below does not settle are returned, as positions
    (plus ``offset``, the block's start) and their ``511 - H``, ``z^2`` and ``w``, for
    :func:`_full_test` (run once over all blocks by :func:`standard_gamma`).

    The squeeze. With ``y = c x`` (so ``x^2 / 2 = 9 d y^2 / 2``), ``h = -3 d S(y)`` where
    ``S(y) = y - y^2/2 + y^3/3 - log(1 + y) = sum_{j>=4} (-y)^j / j``. For ``y >= 0``,
    ``S(y) <= y^4 / 4`` (``y^4/4 - S`` is 0 at 0 with derivative ``y^4 / (1 + y) >= 0``); for
    ``-1 < y < 0`` every term is positive and ``S(y) <= (y^4/4) sum_j |y|^j = y^4 / (4 (1 + y))``.
    So ``h >= -(3/4) d y^4 / min(1, 1 + y) = -x^4 / (108 d min(1, w))`` with ``w = 1 + c x``,
    and ``e^h >= 1 + h``: ``x^4 / 108 < (1 - U) d min(1, w)`` implies acceptance (``w <= 0``
    never passes it). Unlike the textbook squeeze ``U < 1 - 0.0331 x^4`` (fixed, tuned to the
    worst d, it leaves 8.5% of proposals to the full test at every shape), it tightens as d
    grows: 7.0% at a = 1, 2.5% at a = 2, 0.3% at a = 10, 0.03% at a = 100 (most of those
    at a = 1 are true rejections, 4.9%). The full test runs in float64 on those few (in float32
    ``d (1 - v + log v)`` loses its digits to cancellation once d is large).

    The acceptance uniform costs no random bits of its own. Each 32-bit word gives Box-Muller
    23 bits and drops the low :data:`_SPARE_BITS` (9); those are the top bits ``H`` of U, so
    ``U = (H + L) / 512`` with L uniform on [0, 1) and not drawn yet. The squeeze is checked for
    the worst L, ``x^4 / 108 < (511 - H) / 512 * d min(1, w)``, in float32 with ``x^4``
    inflated by ``1 / (1 - 2^-20)``, four times the rounding of those few float32 products, so
    rounding cannot make it accept what the exact inequality refuses. Every entry it does not
    settle (at most 2^-9, 0.2%, more than the full-precision squeeze would leave) draws its L
    from ``rng.random`` and takes the full test with ``U = (H + L) / 512``: given H, that U is
    exactly uniform on H's interval, so every decision is the one a full-precision U would
    give. This halves the
    bits drawn per Gamma (one 64-bit output of the bit generator per two draws).

    Temporaries live in per-thread buffers (:func:`_gamma_work`).
    """
    n = shape.size
    m = (n + 1) // 2
    work = _gamma_work()
    d, c, w, s, g = (work[name][:n] for name in ("d", "c", "w", "s", "g"))
    np.subtract(shape, np.float32(1.0 / 3.0), out=d)
    if has_small:
        d[shape < 1] += np.float32(1.0)
    np.sqrt(d, out=c)
    np.divide(np.float32(1.0 / (3.0 * _Z_SCALE)), c, out=c)  # c / k: w = 1 + (c / k) z
    words = rng.bit_generator.random_raw(m).view(np.uint32)  # 2m >= n words
    spare = work["bits"][:n]
    np.invert(words[:n], out=spare)
    top = (1 << _SPARE_BITS) - 1  # 511
    spare &= np.uint32(top)  # 511 - H
    np.copyto(g, spare, casting="unsafe")
    words >>= np.uint32(_SPARE_BITS)  # 23 random bits as the mantissa of a float in [1, 2)
    words |= np.uint32(0x3F800000)
    uni = words.view(np.float32)
    r, t = uni[:m], uni[m:2 * m]
    np.subtract(np.float32(2.0), r, out=r)  # (0, 1]: the log below is finite
    np.log(r, out=r)
    r *= np.float32(-2.0 * _Z_SCALE**2)  # the radius of z = k x
    np.sqrt(r, out=r)
    t *= np.float32(2.0 * np.pi)  # cos and sin have period 2 pi: t in [1, 2) serves as t - 1
    z = work["z"][:2 * m]
    np.cos(t, out=z[:m])
    np.sin(t, out=z[m:])
    z[:m] *= r
    z[m:] *= r
    z = z[:n]
    np.multiply(c, z, out=w)
    w += np.float32(1.0)
    dw = c  # c is spent: d w from here on, so min(d, d w) = d min(1, w) and d w^3 = w^2 (d w)
    np.multiply(d, w, out=dw)  # save a pass each on the squeeze and on the result
    np.minimum(dw, d, out=s)
    s *= g  # s = (511 - H) d min(1, w)
    np.multiply(z, z, out=z)  # z^2
    np.multiply(z, z, out=out)  # z^4 = 512 x^4 / (108 (1 - 2^-20)); out is free until the cube
    unsure = np.flatnonzero(np.greater_equal(out, s, out=work["mask"][:n]))  # z finite
    np.multiply(w, w, out=out)
    out *= dw  # d v
    return unsure + offset, g[unsure], z[unsure], w[unsure]


def _full_test(rng: np.random.Generator, shape: np.ndarray, spare: np.ndarray,
               z2: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Marsaglia & Tsang's acceptance test, in float64, for the entries the squeeze left.

    Parameters
    ----------
    rng : numpy.random.Generator
        Draws the low part ``L`` of each acceptance uniform.
    shape : ndarray of float32, shape (u,)
        Their Gamma shapes (below 1: the boosted shape + 1 is tested).
    spare, z2, w : ndarray of float32, shape (u,)
        ``511 - H`` (H: the uniform's top bits), ``z^2`` and ``w = 1 + c x`` of each proposal,
        as :func:`_marsaglia_tsang_float32` left them.

    Returns
    -------
    ndarray of bool, shape (u,)
        True where the proposal is accepted.
    """
    top = (1 << _SPARE_BITS) - 1
    a = shape.astype(np.float64)
    d = a - 1.0 / 3.0
    d[a < 1] += 1.0
    v = w.astype(np.float64) ** 3
    low = rng.random(a.size)  # L of the unsettled entries
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0 = -inf: accepted as it should;
        log_u = np.log((top - spare + low) / (top + 1.0))  # v <= 0: NaN, rejected below
        x2 = z2.astype(np.float64) * _Z_SCALE**-2
        ok: np.ndarray = log_u < 0.5 * x2 + d * (1.0 - v + np.log(v))
    ok &= v > 0
    return ok


class Draws:
    """Random draws for ``R`` runs from one shared Generator or from one Generator per run.

    Every method returns an array whose first axis is the run. With one Generator per run, row
    ``r`` is drawn by ``rngs[r]`` with exactly the call a one-run state makes, which is what makes
    batched and single runs identical.

    Parameters
    ----------
    rng : Generator or sequence of Generator
        Shared generator, or ``n_runs`` generators.
    n_runs : int
        Number of runs ``R``.

    Raises
    ------
    TypeError, ValueError
        ``rng`` is not a Generator / has the wrong number of Generators.
    """

    def __init__(self, rng: RunRandom, n_runs: int) -> None:
        self.n_runs = n_runs
        if isinstance(rng, np.random.Generator):
            self._shared: np.random.Generator | None = rng
            self._runs: list[np.random.Generator] = []
            return
        if not isinstance(rng, Sequence) or not all(
            isinstance(g, np.random.Generator) for g in rng
        ):
            raise TypeError("rng must be a numpy Generator or a sequence of Generators "
                            "(one per run)")
        if len(rng) != n_runs:
            raise ValueError(f"rng has {len(rng)} Generators; expected one per run ({n_runs})")
        self._shared = None
        self._runs = list(rng)

    @property
    def shared(self) -> np.random.Generator | None:
        """The one Generator shared by all runs, or None with one Generator per run (then a
        sampler that draws a run's entries differently depending on the other runs' must not
        be used).
        """
        return self._shared

    def _each(self, draw: Callable[[np.random.Generator, slice, int], np.ndarray]
              ) -> np.ndarray:
        if self._shared is not None:
            return draw(self._shared, slice(None), self.n_runs)
        return np.concatenate([draw(g, slice(r, r + 1), 1) for r, g in enumerate(self._runs)])

    def random(self, tail: tuple[int, ...] = (), dtype: Any = np.float64) -> np.ndarray:
        """Uniforms on [0, 1), shape ``(R, *tail)``."""
        return self._each(lambda g, s, n: g.random((n, *tail), dtype=dtype))

    def integers(self, high: int, tail: tuple[int, ...] = ()) -> np.ndarray:
        """Integers in ``[0, high)``, shape ``(R, *tail)``."""
        return self._each(lambda g, s, n: g.integers(high, size=(n, *tail)))

    def standard_normal(self, tail: tuple[int, ...] = (), dtype: Any = np.float64) -> np.ndarray:
        """Standard normals, shape ``(R, *tail)``."""
        return self._each(lambda g, s, n: g.standard_normal((n, *tail), dtype=dtype))

    def standard_gamma(self, shape: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Gamma(shape, 1) draws of the float array ``shape`` (first axis = run), same dtype.

        Exact (see :func:`standard_gamma`). ``out`` (same shape and dtype) avoids an allocation
        on the shared-generator path.
        """
        if self._shared is not None:
            return standard_gamma(self._shared, shape, out=out)
        return self._each(lambda g, s, n: standard_gamma(g, shape[s]))


@functools.lru_cache(maxsize=32)
def row_starts(n_rows: int, n_cols: int) -> np.ndarray:
    """Flat offsets ``0, n_cols, 2 n_cols, ...`` of the rows of a C-contiguous array (cached,
    read-only: the per-step scatters and gathers of a simulation reuse it).
    """
    out = np.arange(0, n_rows * n_cols, n_cols)
    out.flags.writeable = False
    return out


def add_to_pulled(arr: np.ndarray, arms: np.ndarray, values: np.ndarray | float) -> None:
    """``arr[r, arms[r]] += values[r]`` for every run r, in place; ``arr`` is (R, K).

    A 1-d scatter on the flat view is markedly faster than 2-d fancy indexing; each run adds to
    one cell, so there are no repeated indices.
    """
    R, K = arr.shape[0], arr.shape[1]
    if arr.ndim == 2 and arr.flags.c_contiguous:
        arr.reshape(-1)[row_starts(R, K) + arms] += values
    else:
        arr[np.arange(R), arms] += values


def row_sums(counts: np.ndarray) -> np.ndarray:
    """Row sums ``(R,)`` of (R, K) counts as a matrix-vector product (several times faster than
    ``sum(axis=1)`` on a short last axis; exact for integer-valued counts below 2**53, or
    2**24 in float32).
    """
    return counts @ np.ones(counts.shape[1], dtype=counts.dtype)


def row_max(scores: np.ndarray) -> np.ndarray:
    """``scores.max(axis=1, keepdims=True)`` for (R, K) scores, as a gather at the row-wise
    argmax (a reduction along a short last axis is several times slower).
    """
    if scores.ndim != 2 or not scores.flags.c_contiguous:
        return cast(np.ndarray, scores.max(axis=1, keepdims=True))
    R, K = scores.shape
    return cast(np.ndarray, scores.reshape(-1)[row_starts(R, K) + scores.argmax(axis=1)][:, None])


def row_argmax(scores: np.ndarray) -> np.ndarray:
    """``scores.argmax(axis=1)`` for (R, K) scores, the first maximum of each row; (R,) intp.

    With many rows and at most 8 columns, one comparison per column over contiguous copies of
    the columns: numpy's argmax along a short last axis pays a call per row. The running choice
    is updated by integer arithmetic, ``choice += wins * (k - choice)``, into reused int8
    buffers: ``np.where`` with a scalar branch took 0.68 ms per 200,000 rows, four times the
    rest of the function. CPU time, R = 200,000 float32, K = 3: 0.35 ms, against 1.52 ms with
    ``np.where`` and 2.5-3.2 ms for ``argmax(axis=1)``. (A NaN is not picked as the maximum,
    unlike argmax.)
    """
    R, K = scores.shape
    if K > 8 or R < 4096:
        return cast(np.ndarray, scores.argmax(axis=1))
    cols = scores.T.copy()
    best = cols[0]
    choice = np.zeros(R, dtype=np.int8)
    wins = np.empty(R, dtype=bool)
    step = np.empty(R, dtype=np.int8)
    for k in range(1, K):
        np.greater(cols[k], best, out=wins)  # strict: the first of equal maxima keeps the row
        np.maximum(best, cols[k], out=best)
        np.subtract(np.int8(k), choice, out=step)
        step *= wins
        choice += step
    return choice.astype(np.intp)


def argmax_random_ties(scores: np.ndarray, draws: Draws) -> np.ndarray:
    """Row-wise argmax of ``scores`` (R, K), ties broken uniformly at random.

    Always draws ``(R, K)`` uniforms so every step consumes the same amount of randomness.
    """
    u = draws.random((scores.shape[1],))
    return cast(np.ndarray, np.where(scores >= row_max(scores), u, -1.0).argmax(axis=1))


def argmax_set_probabilities(scores: np.ndarray) -> np.ndarray:
    """Exact propensities of :func:`argmax_random_ties`: uniform over each row's maxima."""
    is_max = scores >= row_max(scores)
    return cast(np.ndarray, is_max / is_max.sum(axis=1, keepdims=True))


@functools.lru_cache(maxsize=16)
def quadrature_grid(n_grid: int) -> tuple[np.ndarray, np.ndarray]:
    """The cosine-spaced grid of :func:`probability_of_max` and its spacings (read-only,
    computed once per size: the service asks for a contextual policy's probabilities on
    every request).
    """
    u = 0.5 * (1.0 - np.cos(np.pi * np.arange(n_grid + 1) / n_grid))
    u[0], u[-1] = 0.0, 1.0
    du = np.diff(u)
    u.flags.writeable = False
    du.flags.writeable = False
    return u, du


@functools.lru_cache(maxsize=16)
def other_arms(n_arms: int) -> np.ndarray:
    """Row k: the positions of the arms other than k, in order, shape ``(K, K - 1)``
    (read-only, computed once per ``K``: building it was 7 of a LinTS request's ~115 us).
    """
    arms = np.arange(n_arms)
    others = np.array([arms[arms != k] for k in arms], dtype=np.intp).reshape(n_arms,
                                                                             n_arms - 1)
    others.flags.writeable = False
    return others


#: Most CDF values :func:`probability_of_max` evaluates in one block (``r K (K - 1) (G + 1)``
#: for a block of runs, ``k (K - 1) (G + 1)`` for a block of arms of one run): 8 MB of float64,
#: whatever the numbers of runs and arms. One arm of one run, ``(K - 1) (G + 1)`` values, must
#: fit (:func:`check_quadrature_size`).
QUADRATURE_BLOCK_VALUES = 1 << 20
#: Most CDF values the propensities of one run may take, ``K (K - 1) (G + 1)``: about 10 s (Beta
#: CDFs); 512 arms at the default 2,048 intervals, 1,445 at 256. ``ThompsonSampling`` with
#: 10,000 arms asked for 1.49 TiB at once (found by attack), and would take hours in blocks.
MAX_QUADRATURE_VALUES = 1 << 29


def _quadrature_fits(n_arms: int, n_nodes: int) -> bool:
    pairs = n_arms * max(n_arms - 1, 1)
    return (pairs * n_nodes <= MAX_QUADRATURE_VALUES
            and max(n_arms - 1, 1) * n_nodes <= QUADRATURE_BLOCK_VALUES)


def check_quadrature_size(n_arms: int, n_nodes: int, n_grid: int | None) -> None:
    """Refuse propensities of one run over :data:`MAX_QUADRATURE_VALUES` CDF values, or whose
    one arm is over :data:`QUADRATURE_BLOCK_VALUES`: the one size check of
    :func:`probability_of_max`.

    Parameters
    ----------
    n_arms : int
    n_nodes : int
        Nodes of the rule (``n_grid + 1`` for the grid).
    n_grid : int or None
        The grid's intervals (``propensity_grid``), None for another rule (tanh-sinh).

    Raises
    ------
    ValueError
        Naming the arms, the rule, the most arms it allows (and the largest grid for these
        arms) and the ceilings.
    """
    if _quadrature_fits(n_arms, n_nodes):
        return
    rule = "the tanh-sinh rule" if n_grid is None else f"propensity_grid={n_grid}"
    most = next(k for k in range(n_arms - 1, 0, -1) if _quadrature_fits(k, n_nodes))
    grid = next((g for g in range(n_grid or 0, 1, -1) if _quadrature_fits(n_arms, g + 1)), 0)
    fix = f" or a propensity_grid of at most {grid:,} for {n_arms:,} arms" if grid else ""
    raise ValueError(
        f"propensities of {n_arms:,} arms by quadrature ({rule}, {n_nodes:,} nodes) are "
        f"computed for at most {most:,} arms: arms x (arms - 1) x nodes <= "
        f"{MAX_QUADRATURE_VALUES:,} (MAX_QUADRATURE_VALUES) and (arms - 1) x nodes <= "
        f"{QUADRATURE_BLOCK_VALUES:,} (QUADRATURE_BLOCK_VALUES); use fewer arms{fix}")


def probability_of_max(
    ppf: Callable[[slice, np.ndarray], np.ndarray],
    cdf: Callable[[slice, np.ndarray, np.ndarray], np.ndarray],
    n_runs: int,
    n_arms: int,
    n_grid: int,
    nodes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """P(arm k has the largest of independent continuous draws), by quadrature with a bound.

    P(k is max) = ∫_0^1 g_k(u) du with g_k(u) = Π_{j≠k} F_j(F_k^{-1}(u)). Each g_k is
    non-decreasing in u, so on any grid ``0 = u_0 < ... < u_G = 1`` the left and right Riemann
    sums bracket the integral; the estimate is their mean (the trapezoid rule) and half their gap,
    ``sum_i (g(u_{i+1}) - g(u_i)) (u_{i+1} - u_i) / 2 <= max_i (u_{i+1} - u_i) / 2
    <= pi / (4 n_grid)``, is a guaranteed bound on its error. The grid is cosine-spaced
    (``u_i = (1 - cos(pi i / G)) / 2``), dense near 0 and 1 where g has its power-law
    singularities: the actual error is typically 1e-7 with the default 2048 intervals, far below
    the bound. Integrating in each arm's own quantile space keeps this accurate however
    concentrated the posteriors are.

    Every arm is integrated at once (one special-function call per block of runs instead of
    one per arm: LinTS with five arms, 256 intervals, one context: ~1.5-2x faster), and arm
    k's own CDF is never evaluated (its factor is 1). Runs go in blocks of at most
    :data:`QUADRATURE_BLOCK_VALUES` CDF values, and where one run is more, its arms do (each
    value is computed as in one block: the same numbers).

    Parameters
    ----------
    ppf : callable
        ``ppf(rows, u)``: ``rows`` a slice of the runs, ``u`` of shape ``(G + 1,)``; returns
        every arm's quantiles at ``u``, shape ``(r, K, G + 1)``.
    cdf : callable
        ``cdf(rows, x, others)``: ``x`` of shape ``(r, K, G + 1)`` (row k: arm k's quantiles),
        ``others`` of shape ``(K, K - 1)`` (row k: the positions of the arms other than k, in
        order); returns the CDF of arm ``others[k, j]`` at ``x[:, k]``, shape
        ``(r, K, K - 1, G + 1)``.
    n_runs, n_arms, n_grid : int
        ``R``, ``K`` and the number of grid intervals ``G``.
    nodes : (u, du, weights) of ndarrays, optional
        Another rule instead of the cosine grid: increasing nodes ``u`` in ``(0, 1)``, shape
        ``(N,)`` (``ppf`` is then called with them), their spacings ``du = diff(u)`` and the
        weights of the estimate ``g @ weights`` (:func:`bandits.gaussian.tanh_sinh_nodes`).
        The bound is then the bracket of the left and right Riemann sums on the nodes, the two
        end pieces taken at ``g``'s extremes (``0 <= g <= 1``): as guaranteed, looser than the
        grid's (about ``max du``).

    Returns
    -------
    probabilities : ndarray, shape (R, K)
        Estimates renormalised to sum to one per run.
    error_bound : ndarray, shape (R, K)
        Guaranteed bound on each (pre-normalisation) estimate's absolute error.

    Raises
    ------
    ValueError
        One arm of one run over :data:`QUADRATURE_BLOCK_VALUES` values
        (:func:`check_quadrature_size`).
    """
    if nodes is None:
        u, du = quadrature_grid(n_grid)
        weights = None
    else:
        u, du, weights = nodes
    check_quadrature_size(n_arms, u.size, n_grid if nodes is None else None)
    probs = np.empty((n_runs, n_arms))
    bound = np.empty((n_runs, n_arms))
    others = other_arms(n_arms)
    per_arm = max(n_arms - 1, 1) * u.size
    # Blocks of runs with every arm; past one run, one run at a time in blocks of arms.
    run_block = max(1, QUADRATURE_BLOCK_VALUES // (n_arms * per_arm))
    arm_block = n_arms if run_block > 1 else max(1, QUADRATURE_BLOCK_VALUES // per_arm)
    for start in range(0, n_runs, run_block):
        rows = slice(start, min(start + run_block, n_runs))
        x = ppf(rows, u)
        # The product over the other arms, in arm order (the same factors as a product over
        # all arms with arm k's set to 1); an empty product (one arm) is 1.
        parts = [cdf(rows, x[:, first:first + arm_block], others[first:first + arm_block])
                 .prod(axis=2) for first in range(0, n_arms, arm_block)]
        g = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        lower = g[..., :-1] @ du
        upper = g[..., 1:] @ du
        if weights is None:
            probs[rows] = 0.5 * (lower + upper)
            bound[rows] = 0.5 * (upper - lower)
        else:
            # g is in [0, g(u_0)] left of the first node and in [g(u_N), 1] right of the last.
            lower += g[..., -1] * (1.0 - u[-1])
            upper += g[..., 0] * u[0] + (1.0 - u[-1])
            estimate = g @ weights
            probs[rows] = estimate
            bound[rows] = np.maximum(upper - estimate, estimate - lower)
    probs = np.clip(probs, 0.0, None)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs, bound


#: Largest feature magnitude a contextual policy accepts in a context. With the ridge at least
#: :data:`bandits.linear.MIN_RIDGE` (1e-50) the products ``x^T A^-1 x <= d |x|^2 / ridge`` and
#: the Sherman-Morrison terms stay far from overflow; a context of 1e200 made LinUCB's and
#: LinTS's propensities NaN (found by attack). Accuracy is lost long before (see LinTS).
MAX_ABS_CONTEXT = 1e50


@dataclass
class BatchState:
    """Learned statistics of ``R`` independent runs (see :meth:`BatchedPolicy.init_batch`).

    Attributes
    ----------
    stats : dict of str to ndarray
        The policy's statistics; arrays named in the policy's ``per_arm_stats`` have shape
        ``(R, K, ...)``, the others ``(R, ...)``.
    pending_arms : ndarray of int, shape (R, B)
        Buffered arm positions not yet learned (delayed updates).
    pending_rewards : ndarray of float, shape (R, B)
        Buffered rewards.
    pending_contexts : ndarray of float, shape (R, B, d), or None
        Buffered contexts (contextual policies only).
    n_pending : int
        Number of buffered observations per run (all runs advance in lockstep).
    scratch : dict
        Work buffers reused between steps; never persisted.
    """

    stats: dict[str, np.ndarray]
    pending_arms: np.ndarray
    pending_rewards: np.ndarray
    pending_contexts: np.ndarray | None = None
    n_pending: int = 0
    scratch: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_runs(self) -> int:
        """Number of runs ``R``."""
        return cast(int, self.pending_arms.shape[0])

    def copy(self) -> BatchState:
        """Deep copy of the arrays (scratch buffers are not copied)."""
        return BatchState(
            stats={k: v.copy() for k, v in self.stats.items()},
            pending_arms=self.pending_arms.copy(),
            pending_rewards=self.pending_rewards.copy(),
            pending_contexts=None if self.pending_contexts is None
            else self.pending_contexts.copy(),
            n_pending=self.n_pending,
        )


_REGISTRY: dict[str, type[BatchedPolicy]] = {}


def init_param_names(cls: type) -> list[str]:
    """The hyper-parameters ``cls.__init__`` takes (all but ``arms`` and ``random_state``)."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    return [n for n in sig.parameters if n not in ("self", "arms", "random_state")]


def _json_value(value: Any) -> Any:
    """``value`` as plain JSON data: arrays and numpy scalars to lists and Python numbers, also
    inside dicts (an SFC64 state holds its words as a uint64 array).
    """
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    return value


class BatchedPolicy(FixedOnceBuilt, Policy):
    """A policy built on the batched core; the base of every policy in this package.

    Subclasses store their keyword-only hyper-parameters unchanged, then call
    ``super().__init__(arms, batch_size=..., random_state=...)``, and implement
    ``_init_stats``, ``_choose``, ``_learn`` and ``_probabilities`` (and ``_check_params`` /
    ``_check_arm_params`` if they have hyper-parameters to validate).

    Parameters
    ----------
    arms : list of str or int
        Arm names (unique, non-empty), or a number of arms named ``arm0``, ``arm1``, ...
    batch_size : int, default 1
        Delayed updates: statistics are refreshed every ``batch_size`` observations.
    random_state : int, SeedSequence, Generator or None, default None
        Source of every random draw of the single-run methods.

    Attributes
    ----------
    arms : list of str
        Arm names in position order.
    state_ : BatchState
        The one-run state behind ``select``/``update``.
    arm_params_ : dict of str to ndarray
        Hyper-parameters that can differ per arm (e.g. Beta priors), shape ``(K,)`` each.
    """

    #: Closed support of a reward (None = unbounded).
    reward_low: ClassVar[float | None] = None
    reward_high: ClassVar[float | None] = None
    #: Whether ``select``/``update`` need a context vector.
    contextual: ClassVar[bool] = False
    #: Whether the model is a Beta posterior per arm (``successes``/``failures`` statistics,
    #: ``prior_alpha``/``prior_beta`` per arm): the one answer to "is this a Beta policy?" for
    #: the service's ``GET /policy``, multileaving and the lab's posterior figure.
    beta_posterior: ClassVar[bool] = False
    #: Names of the statistics whose axis 1 is the arm axis.
    per_arm_stats: ClassVar[tuple[str, ...]] = ()
    #: Names of the statistics that count observations (restored within ``[0, MAX_COUNT]``).
    count_stats: ClassVar[tuple[str, ...]] = ()
    #: Statistics that sum rewards (power 1) or squared rewards (2) over the arm's ``pulls``.
    sum_stats: ClassVar[tuple[tuple[str, int], ...]] = ()
    #: "exact" or "quadrature" (see :func:`probability_of_max`).
    propensity_method: ClassVar[str] = "exact"
    #: Hyper-parameters that size the state (with the arms), named when it is too large
    #: (:meth:`check_state_size`).
    size_params: ClassVar[tuple[str, ...]] = ("batch_size",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    def __init__(
        self,
        arms: Sequence[str] | int,
        *,
        batch_size: int = 1,
        random_state: RandomState = None,
    ) -> None:
        self.batch_size = batch_size
        self.random_state = random_state
        self.arms = check_arm_names(arms)
        check_int(batch_size, "batch_size", low=1)
        self._check_params()
        self.arm_params_ = self._check_arm_params(
            {name: getattr(self, name) for name in self._arm_param_names()}, len(self.arms)
        )
        self._rng = make_generator(random_state)
        self.state_ = self.init_batch(1)
        #: (n_arms, {statistic: shape past the run axis}): what :meth:`_check_state` expects.
        self._state_shapes: tuple[int, dict[str, tuple[int, ...]]] = (
            self.n_arms, {k: v.shape[1:] for k, v in self.state_.stats.items()})
        self._built = True

    # ----------------------------------------------------------------- subclass hooks
    def _check_params(self) -> None:
        """Validate the scalar hyper-parameters (raise TypeError/ValueError naming them)."""

    def _arm_param_names(self) -> tuple[str, ...]:
        """Hyper-parameters that may be given per arm (stored in ``arm_params_``)."""
        return ()

    def _check_arm_params(self, values: dict[str, Any], n_arms: int) -> dict[str, np.ndarray]:
        """Validate per-arm hyper-parameters; return ``(n_arms,)`` arrays."""
        return {}

    def _default_arm_params(self) -> dict[str, float]:
        """Per-arm hyper-parameters of an arm added without warm start or overrides."""
        return {}

    @abstractmethod
    def _init_stats(self, n_runs: int, n_arms: int, dtype: Any) -> dict[str, np.ndarray]:
        """Statistics of ``n_runs`` runs before any observation."""

    @abstractmethod
    def _choose(self, state: BatchState, draws: Draws, contexts: np.ndarray | None
                ) -> np.ndarray:
        """Arm positions, shape (R,), from the refreshed statistics."""

    @abstractmethod
    def _learn(self, stats: dict[str, np.ndarray], arms: np.ndarray, rewards: np.ndarray,
               contexts: np.ndarray | None) -> None:
        """Fold one observation per run into ``stats`` in place."""

    @abstractmethod
    def _probabilities(self, state: BatchState, contexts: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Propensities (R, K) and an error bound (R, K) (zeros where exact)."""

    def _propensity_grid(self) -> int | None:
        """The grid intervals every propensity call integrates on, where the hyper-parameters
        alone fix them; None for exact propensities and for a rule that depends on the
        context (LinTS).
        """
        return None

    def check_propensity_size(self) -> None:
        """Refuse now propensities that every call would refuse for the policy's arms, as
        :func:`check_quadrature_size` does at each call, where the quadrature's size is known
        without a context (the grid's; a context-dependent rule, LinTS's, is checked at each
        call only).

        Not asked by the constructor: the batched core (``select_batch``/``update_batch``, a
        simulation) never computes propensities, so a policy of more arms than they allow
        still runs there (``ThompsonSampling(10_000)``). A caller that needs them on every
        decision asks it when built (:class:`~bandits.exploration.ExplorationFloor`).

        Raises
        ------
        ValueError
            As :func:`check_quadrature_size`.
        """
        grid = self._propensity_grid()
        if grid is not None:
            check_quadrature_size(self.n_arms, grid + 1, grid)

    def _check_stats(self, stats: dict[str, np.ndarray]) -> None:
        """Refuse restored statistics the policy's own updates cannot produce.

        ``stats`` holds one run's statistics (no run axis), already of the right shapes and
        finite (:func:`_restore_arrays`). The default checks the :attr:`count_stats` in
        ``[0, MAX_COUNT]`` and the :attr:`sum_stats` against ``pulls`` and the reward support
        (:func:`check_sum_stat`); policies with matrices or ring buffers extend it.

        Raises
        ------
        ValueError
            A statistic out of range, naming its key, the value and the range.
        """
        for key in self.count_stats:
            check_stat(stats[key], f"state['stats'][{key!r}]", stats[key].shape, low=0.0,
                       high=MAX_COUNT, why="a count")
        for key, power in self.sum_stats:
            check_sum_stat(stats[key], stats["pulls"], key, self.reward_low, self.reward_high,
                           power=power)

    def _on_remove_arm(self, stats: dict[str, np.ndarray], position: int) -> None:
        """Fix statistics that refer to arm positions after ``position`` is removed."""

    def _discount_stats(self, stats: dict[str, np.ndarray], positions: np.ndarray,
                        gamma: float) -> None:
        """Shrink the evidence of the arms at ``positions`` towards the prior, in place.

        The default suits every policy whose per-arm statistics are sums of observations with
        the prior kept apart (Beta successes/failures, pulls and reward sums): each is
        multiplied by ``gamma``, so a Beta posterior ``(alpha, beta)`` becomes
        ``prior + gamma * (alpha - prior_alpha, beta - prior_beta)``. Policies whose statistics
        hold the prior (the ridge models) or refer to arms by position (a window) override it.
        """
        for key in self.per_arm_stats:
            stats[key][:, positions] *= gamma

    # ----------------------------------------------------------------- parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        return init_param_names(cls)

    @classmethod
    def check_param_names(cls, names: Iterable[str], *,
                          set_by_caller: Mapping[str, str] | None = None) -> None:
        """Refuse hyper-parameter ``names`` the class does not take, before building it.

        The one message of an unknown hyper-parameter for every policy built from names a
        user wrote (a lab config, a spec dict, the service's settings, ``ope --linear``):
        Python's own, ``ThompsonSampling.__init__() got an unexpected keyword argument
        'bogus'``, said neither what is taken nor, in a config, where. ``random_state`` is
        taken (every policy's seed), though not listed among the hyper-parameters.

        Parameters
        ----------
        names : iterable of str
        set_by_caller : mapping of str to str, optional
            Parameters the caller sets itself, with who sets them (the service's
            ``n_features``, "the service (the context's dimension)"): refused when given
            (Python said "got multiple values for keyword argument"), not offered.

        Raises
        ------
        TypeError
            ``<Policy> has no hyper-parameter 'x'; allowed: [...]``, or ``<Policy>: 'x' is
            set by <who>; allowed: [...]``.
        """
        fixed = dict(set_by_caller or {})
        allowed = [p for p in cls._param_names() if p not in fixed]
        given = set(names)
        if clash := sorted(given & fixed.keys()):
            raise TypeError(f"{cls.__name__}: " + "; ".join(f"{p!r} is set by {fixed[p]}"
                                                            for p in clash)
                            + f"; allowed: {allowed}")
        if unknown := sorted(given - set(allowed) - {"random_state"}):
            raise TypeError(f"{cls.__name__} has no hyper-parameter "
                            f"{', '.join(repr(p) for p in unknown)}; allowed: {allowed}")

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as given (per-arm ones as the current per-arm lists), JSON-safe."""
        params = {name: _json_value(getattr(self, name)) for name in self._param_names()}
        for name, values in self.arm_params_.items():
            params[name] = values.tolist()
        return params

    @property
    def n_arms(self) -> int:
        """Number of arms ``K``."""
        return len(self.arms)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}(arms={self.arms!r}, {params})"

    # ----------------------------------------------------------------- batched core
    def init_batch(self, n_runs: int, *, dtype: Any = np.float64) -> BatchState:
        """A state of ``n_runs`` independent runs, each at the prior.

        Parameters
        ----------
        n_runs : int
            Number of runs ``R``.
        dtype : float32 or float64, default float64
            Float type of the statistics (float32 is faster and fine for Beta counts < 2**24).
        """
        check_int(n_runs, "n_runs", low=1)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype={dtype} is not allowed; use float32 or float64")
        self.check_state_size(n_runs, dtype=dtype)
        B = self.batch_size
        d = getattr(self, "n_features", None)
        return BatchState(
            stats=self._init_stats(n_runs, self.n_arms, dtype),
            pending_arms=np.zeros((n_runs, B), dtype=np.int64),
            pending_rewards=np.zeros((n_runs, B), dtype=np.float64),
            pending_contexts=np.zeros((n_runs, B, d)) if self.contextual else None,  # type: ignore[arg-type]  # d is an int when contextual
        )

    def state_bytes(self, n_runs: int, *, dtype: Any = np.float64,
                    n_arms: int | None = None) -> int:
        """Bytes of a state of ``n_runs`` runs (:meth:`init_batch`'s arrays), computed without
        building it.

        Parameters
        ----------
        n_runs : int
        dtype : float32 or float64, default float64
            Float type of the statistics.
        n_arms : int, optional
            Number of arms (default: the policy's own).
        """
        K = self.n_arms if n_arms is None else n_arms
        # The statistics of zero runs are empty arrays of the right shapes: their sizes per run
        # without allocating anything (so _init_stats must allocate nothing else).
        per_run = sum(int(np.prod(a.shape[1:], dtype=object)) * a.itemsize
                      for a in self._init_stats(0, K, np.dtype(dtype)).values())
        d = int(getattr(self, "n_features", 0)) if self.contextual else 0
        per_run += int(self.batch_size) * (8 + 8 + 8 * d)  # the buffer: arms, rewards, contexts
        return int(n_runs) * per_run

    def check_state_size(self, n_runs: int = 1, *, dtype: Any = np.float64,
                         n_arms: int | None = None) -> None:
        """Refuse a state of ``n_runs`` runs (and ``n_arms`` arms) over
        :data:`~bandits.errors.MAX_STATE_BYTES`: the one check of :meth:`init_batch` (so the
        constructor), :meth:`add_arm` and a simulation's blocks of runs.

        Raises
        ------
        ValueError
            Naming the policy, its :attr:`size_params`, the arms, the runs, the size and the
            ceiling.
        """
        need = self.state_bytes(n_runs, dtype=dtype, n_arms=n_arms)
        if need > MAX_STATE_BYTES:
            K = self.n_arms if n_arms is None else n_arms
            sizes = ", ".join(f"{p}={getattr(self, p)!r}" for p in self.size_params)
            runs = "one run" if n_runs == 1 else f"{n_runs:,} runs"
            # (simulate: the runs of one task, runs_per_task; review)
            lower = [*self.size_params, "the arms"] + (
                [] if n_runs == 1 else ["the runs of one batch (simulate's runs_per_task)"])
            raise ValueError(
                f"{type(self).__name__}({sizes}) with {K:,} arms: the state of {runs} would "
                f"take {format_bytes(need)}; at most {format_bytes(MAX_STATE_BYTES)} "
                f"(MAX_STATE_BYTES): lower {', '.join(lower[:-1])} or {lower[-1]}")

    def _check_state(self, state: Any) -> None:
        """Refuse a state that is not one of this policy's (:meth:`init_batch`'s layout).

        A state built by another policy, or before an arm was added or removed, would be
        read with this policy's arm count: a 3-arm state given to a 5-arm policy chose only
        among the first three arms, silently, and an update raised numpy's ``IndexError``
        (found by review): :func:`~bandits.errors.check_state_layout`, then the buffer.

        Raises
        ------
        TypeError
            ``state`` is not a :class:`BatchState`.
        ValueError
            Its statistics, buffer or contexts do not match this policy's arms, batch size or
            features, naming what differs.
        """
        check_state_type(state, BatchState, type(self).__name__)
        shapes = self._state_shapes
        if shapes[0] != self.n_arms:  # arms added or removed since the layout was computed
            stats = self._init_stats(1, self.n_arms, np.float64)
            shapes = (self.n_arms, {k: v.shape[1:] for k, v in stats.items()})
            self._state_shapes = shapes
        R = check_state_layout(state.stats, shapes[1], f"{type(self).__name__} with "
                               f"{self.n_arms} arms")
        if state.pending_arms.shape != (R, self.batch_size):
            raise ValueError(f"state's buffer has shape {state.pending_arms.shape}; this policy "
                             f"(batch_size={self.batch_size}) expects {(R, self.batch_size)}")
        want = (R, self.batch_size, getattr(self, "n_features", 0)) if self.contextual else None
        got_ctx = None if state.pending_contexts is None else state.pending_contexts.shape
        if got_ctx != want:
            raise ValueError(f"state's buffered contexts have shape {got_ctx}; this policy "
                             f"expects {want}")

    def _check_contexts(self, contexts: Any, n_runs: int, name: str = "context"
                        ) -> np.ndarray | None:
        if not self.contextual:
            return None  # context-free policies ignore the context (serving may send one)
        d = self.n_features  # type: ignore[attr-defined]
        if contexts is None:
            raise ValueError(f"{name}=None: {type(self).__name__} needs a context of {d} features")
        try:
            # Booleans are features (one-hot); strings and complex numbers are refused (numpy
            # read "1" as 1.0 and dropped imaginary parts with a warning: found by attack).
            x = real_array(contexts, name, allow_bool=True)
        except (TypeError, ValueError) as exc:  # (ValueError: ragged nested lists)
            raise ValueError(f"{name} must be numeric (real numbers or booleans), got "
                             f"{short_repr(contexts)}") from exc
        given = x.shape
        if n_runs == 1 and x.ndim == 1:
            x = x[None, :]
        if x.shape != (n_runs, d):
            want = f"({d},) or (1, {d})" if n_runs == 1 else f"({n_runs}, {d})"
            raise ValueError(f"{name} has shape {given}; expected {want}")
        # One pass on the hot path (every contextual step): NaN fails the comparison too.
        if not (np.abs(x) <= MAX_ABS_CONTEXT).all():
            if not np.isfinite(x).all():
                raise ValueError(f"{name} contains NaN or infinite values")
            big = np.abs(x) > MAX_ABS_CONTEXT
            raise ValueError(f"{name} contains {float(x[big][0])!r}, outside the allowed range "
                             f"[-{MAX_ABS_CONTEXT:g}, {MAX_ABS_CONTEXT:g}] of a feature")
        return x

    def select_batch(self, state: BatchState, rng: RunRandom, contexts: Any = None
                     ) -> np.ndarray:
        """One arm position per run, shape ``(R,)``.

        Parameters
        ----------
        state : BatchState
        rng : Generator or sequence of R Generators
            See the module docstring ("Randomness").
        contexts : array of shape (R, d), optional
            Required by contextual policies.
        """
        self._check_state(state)
        x = self._check_contexts(contexts, state.n_runs, "contexts")
        return self._choose(state, Draws(rng, state.n_runs), x)

    def update_batch(self, state: BatchState, arms: Any, rewards: Any, contexts: Any = None,
                     *, validate: bool = True) -> None:
        """Learn one observation per run (buffered when ``batch_size > 1``).

        Parameters
        ----------
        state : BatchState
            Updated in place.
        arms : array of int, shape (R,)
            Arm positions pulled.
        rewards : array of float, shape (R,)
            Observed rewards (inside the policy's support).
        contexts : array of shape (R, d), optional
            Required by contextual policies.
        validate : bool, default True
            Check shapes, arm range and reward support first (the state is untouched on error).

        Raises
        ------
        TypeError
            Rewards that are not real numbers (strings, complex numbers, booleans).
        ValueError
            Wrong shapes, arm positions out of range, rewards outside the support or NaN,
            contexts that are not numeric ("must be numeric": strings, complex numbers).
        """
        if validate:
            self._check_state(state)
        R = state.n_runs
        if validate:
            arms = np.asarray(arms)
            if arms.shape != (R,) or not np.issubdtype(arms.dtype, np.integer):
                raise ValueError(f"arms must be an int array of shape ({R},), got "
                                 f"{arms.dtype} {arms.shape}")
            if arms.size and (arms.min() < 0 or arms.max() >= self.n_arms):
                bad = arms[(arms < 0) | (arms >= self.n_arms)][0]
                raise UnknownArmError(f"arms contains {int(bad)}; positions are "
                                      f"0..{self.n_arms - 1}")
            rewards = check_rewards(rewards, "reward", self.reward_low, self.reward_high)
            if rewards.shape != (R,):
                raise ValueError(f"rewards has shape {rewards.shape}; expected ({R},)")
        x = self._check_contexts(contexts, R, "contexts") if validate else contexts
        if self.batch_size == 1:
            self._learn(state.stats, arms, rewards, x)
            return
        n = state.n_pending
        state.pending_arms[:, n] = arms
        state.pending_rewards[:, n] = rewards
        if x is not None:
            state.pending_contexts[:, n] = x  # type: ignore[index]
        state.n_pending = n + 1
        if state.n_pending == self.batch_size:
            self.flush_batch(state)

    def flush_batch(self, state: BatchState) -> None:
        """Learn every buffered observation now (in arrival order) and empty the buffer."""
        self._check_state(state)
        for j in range(state.n_pending):
            ctx = None if state.pending_contexts is None else state.pending_contexts[:, j]
            self._learn(state.stats, state.pending_arms[:, j], state.pending_rewards[:, j], ctx)
        state.n_pending = 0

    def probabilities_batch(self, state: BatchState, contexts: Any = None, *,
                            return_error: bool = False
                            ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Propensities of every arm in every run, shape ``(R, K)``, rows summing to one.

        With ``return_error=True`` also returns a guaranteed bound on each entry's numerical
        error (zeros for policies whose propensities are exact; see
        :func:`probability_of_max` for the quadrature ones).
        """
        self._check_state(state)
        x = self._check_contexts(contexts, state.n_runs, "contexts")
        probs, err = self._probabilities(state, x)
        return (probs, err) if return_error else probs

    # ----------------------------------------------------------------- single run
    def select(self, context: Any = None) -> int:
        """Position of the arm to pull, drawing from the policy's own generator.

        Raises
        ------
        ValueError
            Missing or malformed context for a contextual policy.
        """
        x = self._check_contexts(context, 1)
        return int(self._choose(self.state_, Draws(self._rng, 1), x)[0])

    def select_name(self, context: Any = None) -> str:
        """Name of the arm :meth:`select` picks."""
        return self.arms[self.select(context)]

    def update(self, arm: int | str, reward: float, context: Any = None) -> None:
        """Learn from one observed ``reward`` of ``arm`` (a name or a position).

        Raises
        ------
        ValueError
            Unknown arm (``UnknownArmError``), reward outside the support, NaN or infinite,
            missing or malformed context; the state is left unchanged.
        TypeError
            ``arm`` neither str nor int, ``reward`` not a number.
        """
        k = arm_index(self.arms, arm)
        r = check_rewards(np.array([check_reward_value(reward)]), "reward",
                          self.reward_low, self.reward_high)
        x = self._check_contexts(context, 1)
        self.update_batch(self.state_, np.array([k]), r, x, validate=False)

    def flush(self) -> None:
        """Learn the buffered observations now (delayed updates)."""
        self.flush_batch(self.state_)

    def action_probabilities(self, context: Any = None) -> np.ndarray:
        """Propensity of every arm, shape ``(K,)``, summing to one (see ``propensity_method``)."""
        return self.probabilities_batch(self.state_, self._check_contexts(context, 1))[0]

    def action_probabilities_with_error(self, context: Any = None
                                        ) -> tuple[np.ndarray, np.ndarray]:
        """Propensities ``(K,)`` and a guaranteed bound on each one's numerical error ``(K,)``."""
        p, e = self.probabilities_batch(self.state_, self._check_contexts(context, 1),
                                        return_error=True)
        return p[0], e[0]

    # ----------------------------------------------------------------- arms at run time
    def add_arm(self, name: str, *, warm_start_from: int | str | None = None,
                **arm_params: float) -> int:
        """Add an arm at the end; returns its position.

        Parameters
        ----------
        name : str
            New, unique arm name.
        warm_start_from : str or int, optional
            Copy that arm's statistics and per-arm hyper-parameters; otherwise the arm starts
            from the prior (``_default_arm_params``, overridable through ``arm_params``, e.g.
            ``prior_alpha=2.0``).

        Raises
        ------
        ValueError
            Duplicate or empty name, unknown warm-start arm, unknown or invalid per-arm
            hyper-parameter. Nothing changes on error.
        """
        new_arms = check_arm_names([*self.arms, name])
        unknown = sorted(set(arm_params) - set(self._arm_param_names()))
        if unknown:
            raise ValueError(f"unknown per-arm parameters {unknown}; allowed: "
                             f"{list(self._arm_param_names())}")
        src = None if warm_start_from is None else arm_index(self.arms, warm_start_from,
                                                             "warm_start_from")
        values: dict[str, Any] = {}
        defaults = self._default_arm_params()
        for pname, current in self.arm_params_.items():
            new = current[src] if src is not None else defaults[pname]
            values[pname] = [*current.tolist(), arm_params.get(pname, new)]
        new_params = self._check_arm_params(values, len(new_arms))
        st = self.state_
        self.check_state_size(st.n_runs, dtype=next(iter(st.stats.values())).dtype,
                              n_arms=len(new_arms))
        fresh = self._init_stats(st.n_runs, 1, next(iter(st.stats.values())).dtype)
        for key in self.per_arm_stats:
            col = st.stats[key][:, src:src + 1] if src is not None else fresh[key]
            st.stats[key] = np.concatenate([st.stats[key], col.astype(st.stats[key].dtype)],
                                           axis=1)
        object.__setattr__(self, "arms", new_arms)  # the one way arms change (FixedOnceBuilt)
        self.arm_params_ = new_params
        return len(self.arms) - 1

    def remove_arm(self, arm: int | str) -> None:
        """Remove an arm and its statistics (buffered observations of it are dropped).

        Raises
        ------
        ValueError
            Unknown arm, or it is the last one.
        """
        k = arm_index(self.arms, arm)
        if self.n_arms == 1:
            raise ValueError(f"cannot remove {self.arms[k]!r}: a policy needs at least one arm")
        st = self.state_
        for key in self.per_arm_stats:
            st.stats[key] = np.delete(st.stats[key], k, axis=1)
        self._on_remove_arm(st.stats, k)
        n = st.n_pending
        keep = np.flatnonzero(st.pending_arms[0, :n] != k)
        pa = st.pending_arms[0, keep]
        st.pending_arms[0, :keep.size] = np.where(pa > k, pa - 1, pa)
        st.pending_rewards[0, :keep.size] = st.pending_rewards[0, keep]
        if st.pending_contexts is not None:
            st.pending_contexts[0, :keep.size] = st.pending_contexts[0, keep]
        st.n_pending = int(keep.size)
        self.arm_params_ = {p: np.delete(v, k) for p, v in self.arm_params_.items()}
        del self.arms[k]

    def discount_arms(self, arms: Sequence[int | str], gamma: float) -> None:
        """Keep a share ``gamma`` of what ``arms`` learned: the posterior across a refit.

        What a recommender arm's statistics start from when the model behind it changes (the
        service's ``posterior_carryover``): ``gamma = 1`` keeps everything, ``gamma = 0``
        resets the arms to the prior, in between every observation counts ``gamma`` times (Beta
        policies: ``(alpha, beta) -> prior + gamma * (alpha - prior_alpha, beta -
        prior_beta)``; ridge models: ``A -> ridge * I + gamma * (A - ridge * I)``, ``b -> gamma
        * b``). Buffered observations are learned first. One rule for every policy, here.

        Parameters
        ----------
        arms : sequence of str or int
            Arm names or positions (each at most once); empty: nothing changes.
        gamma : float
            Share kept, in ``[0, 1]``.

        Raises
        ------
        ValueError
            ``gamma`` outside ``[0, 1]`` or NaN, an unknown or repeated arm, or a ``gamma`` the
            policy cannot apply (a sliding window takes only 0 or 1). Nothing changes on error.
        TypeError
            ``gamma`` not a real number.
        """
        check_real(gamma, "gamma", low=0.0, high=1.0)
        positions = np.array([arm_index(self.arms, a) for a in arms], dtype=np.int64)
        if np.unique(positions).size != positions.size:
            raise ValueError(f"arms names an arm twice: {list(arms)}")
        self.check_discount(float(gamma))
        if positions.size == 0 or gamma == 1.0:
            return
        self.flush_batch(self.state_)
        self._discount_stats(self.state_.stats, positions, float(gamma))

    @classmethod
    def check_discount(cls, gamma: float) -> None:
        """Raise ValueError if this policy class cannot keep a share ``gamma`` of its
        evidence (:meth:`discount_arms`; the service's ``carryover_discount`` asks it too).
        """

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this policy, as plain JSON data.

        Keys: ``policy`` (class name), ``format``, ``arms``, ``params`` (hyper-parameters),
        ``stats`` (the learned statistics, per-arm ones as lists in arm order), ``pending``
        (buffered observations) and ``rng`` (the generator's bit-generator state, so a rebuilt
        policy continues the same random stream).
        """
        st = self.state_
        n = st.n_pending
        pending: dict[str, Any] = {
            "arms": st.pending_arms[0, :n].tolist(),
            "rewards": st.pending_rewards[0, :n].tolist(),
        }
        if st.pending_contexts is not None:
            pending["contexts"] = st.pending_contexts[0, :n].tolist()
        return {
            "policy": type(self).__name__,
            "format": STATE_FORMAT,
            "arms": list(self.arms),
            "params": self.get_params(),
            "stats": {k: v[0].tolist() for k, v in st.stats.items()},
            "pending": pending,
            "rng": _json_value(self._rng.bit_generator.state),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], *,
                        random_state: RandomState = None) -> BatchedPolicy:
        """Rebuild the policy :meth:`state_dict` described.

        Called on :class:`BatchedPolicy` it dispatches on ``state["policy"]``; called on a
        subclass it also checks the class. The random stream continues from the saved ``rng``
        unless ``random_state`` is given.

        Raises
        ------
        ValueError
            Unknown policy name, wrong class, malformed or inconsistent state.
        """
        if not isinstance(state, dict) or "policy" not in state:
            raise ValueError("state must be a dict produced by state_dict() (no 'policy' key)")
        name = state["policy"]
        target = _REGISTRY.get(name)
        if target is None:
            raise ValueError(f"state['policy']={name!r} is not a known policy; "
                             f"known: {sorted(_REGISTRY)}")
        if not issubclass(target, cls):
            raise ValueError(f"state describes a {name}, not a {cls.__name__}")
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state['format']={state.get('format')!r}; this version reads "
                             f"format {STATE_FORMAT}")
        policy = cast(BatchedPolicy,
                      build_from_state(target, target._param_names(), state, random_state))
        _restore_arrays(policy, state)
        if random_state is None and state.get("rng"):
            policy._rng = restore_generator(state["rng"])
        return policy


def build_from_state(factory: Callable[..., Any], param_names: Sequence[str],
                     state: dict[str, Any], random_state: RandomState) -> Any:
    """``factory(state["arms"], **state["params"])``, its refusals as ValueError naming the key.

    The hyper-parameters go through the policy's own checks (its constructor: the prior's,
    the ridge's, ... ranges), so a saved state obeys the same rules as a new policy.

    Parameters
    ----------
    factory : callable
        The policy's class.
    param_names : sequence of str
        The hyper-parameters it takes.
    state : dict
        A ``state_dict()``.
    random_state : int, Generator, SeedSequence or None
        Passed on.

    Raises
    ------
    ValueError
        ``params`` not a dict, an unknown parameter, or arms or a parameter the constructor
        refuses (a TypeError there, e.g. a string prior, becomes a ValueError too).
    """
    params = _known_keys(state.get("params"), "state['params']", list(param_names),
                         "hyper-parameters")
    try:
        return factory(state.get("arms"), **params, random_state=random_state)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"state['arms'] or state['params'] refused: {exc}") from exc


def restore_generator(saved: Any) -> np.random.Generator:
    """The Generator a ``state_dict()``'s ``rng`` (a bit generator's state) describes.

    Raises
    ------
    ValueError
        Not a numpy bit generator's state (unknown ``bit_generator``, wrong fields).
    """
    names = {c.__name__: c for c in (np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937,
                                     np.random.Philox, np.random.SFC64)}
    name = saved.get("bit_generator") if isinstance(saved, dict) else None
    if name not in names:
        raise ValueError(f"state['rng']={short_repr(saved)} is not a numpy bit generator's "
                         f"state; its 'bit_generator' must be one of {sorted(names)}")
    bit_gen = names[name]()
    try:
        bit_gen.state = saved
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"state['rng']={short_repr(saved)} is not a valid {name} state: "
                         f"{exc}") from exc
    return np.random.Generator(bit_gen)


def _known_keys(value: object, where: str, allowed: list[str], what: str) -> dict[str, Any]:
    """``value`` if it is a dict whose keys are all in ``allowed``; else a ValueError naming
    ``where``, the value or the unknown keys, and ``what`` they may be.
    """
    if not isinstance(value, dict):
        raise ValueError(f"{where}={short_repr(value)} must be a dict of {what} {allowed}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed ({what}): {allowed}")
    return value


def read_stats(saved: object, fresh: Mapping[str, np.ndarray], owner: str,
               ranges: Mapping[str, tuple[float, float, str]] | None = None
               ) -> dict[str, np.ndarray]:
    """The statistics of a saved state (``state['stats']``), checked against those of a fresh
    one-run ``fresh`` state: a dict of exactly its keys, each numbers of its per-run shape,
    finite, whole where ``fresh``'s are, and within ``ranges[key]`` (low, high, why) if given.
    The one reading of saved statistics, for the policies and the change detectors.

    Raises
    ------
    ValueError
        Not a dict, a key unknown or missing, or a value :func:`check_stat` refuses (the
        message names the key, the value and what is allowed; ``owner`` names the class).
    """
    saved = _known_keys(saved, "state['stats']", sorted(fresh), f"statistics a {owner} saves")
    stats: dict[str, np.ndarray] = {}
    for key, arr in fresh.items():
        if key not in saved:
            raise ValueError(f"state['stats'] lacks {key!r}")
        low, high, why = (ranges or {}).get(key, (None, None, ""))
        stats[key] = check_stat(saved[key], f"state['stats'][{key!r}]", arr.shape[1:],
                                low=low, high=high, why=why, integral=arr.dtype.kind == "i")
    return stats


def _restore_arrays(policy: BatchedPolicy, state: dict[str, Any]) -> None:
    """Check the statistics and pending observations of ``state``, then copy them into ``policy``.

    Every statistic must be numbers of its shape, finite and in the range the policy's own
    updates keep it in (:meth:`BatchedPolicy._check_stats`: counts in ``[0, MAX_COUNT]``, sums
    within the reward support, ridge matrices symmetric); the
    pending observations pass the checks :meth:`BatchedPolicy.update` applies. Nothing is
    copied unless everything passes.

    Parameters
    ----------
    policy : BatchedPolicy
        Just built from ``state``'s arms and parameters (one run).
    state : dict
        What :meth:`BatchedPolicy.state_dict` returned.

    Raises
    ------
    ValueError
        A statistic missing, unknown, of the wrong type or shape, NaN, infinite or out of range
        (the message names the key, the value and what is allowed), a pending observation
        :meth:`BatchedPolicy.update` would refuse, or a full batch pending.
    """
    st = policy.state_
    stats = read_stats(state.get("stats"), st.stats, type(policy).__name__)
    policy._check_stats(stats)
    pend = state.get("pending", {})
    if not isinstance(pend, dict):
        raise ValueError(f"state['pending']={short_repr(pend)} must be a dict of buffered "
                         "'arms', 'rewards' (and 'contexts')")
    arms = pend.get("arms", [])
    n = len(arms) if isinstance(arms, list | tuple | np.ndarray) else -1
    if n >= policy.batch_size and n:
        raise ValueError(f"state['pending'] holds {n} observations; batch_size is "
                         f"{policy.batch_size}")
    pending_arms = check_stat(arms, "state['pending']['arms']", (max(n, 0),), low=0,
                              high=policy.n_arms - 1, integral=True, why="arm positions")
    rewards = check_stat(pend.get("rewards", []), "state['pending']['rewards']", (n,))
    check_rewards(rewards, "state['pending']['rewards']", policy.reward_low, policy.reward_high)
    contexts = None
    if st.pending_contexts is not None and n:
        d = st.pending_contexts.shape[2]
        contexts = policy._check_contexts(
            check_stat(pend.get("contexts"), "state['pending']['contexts']", (n, d)), n,
            "state['pending']['contexts']")
    for key, value in stats.items():
        st.stats[key][0] = value
    st.pending_arms[0, :n] = pending_arms
    st.pending_rewards[0, :n] = rewards
    if contexts is not None:
        st.pending_contexts[0, :n] = contexts  # type: ignore[index]
    st.n_pending = n


#: Relative rounding a restored sum may show beyond ``pulls * bound`` (a discount multiplies the
#: sum and the count separately, each rounded).
SUM_ROUNDING = 1e-9


def check_sum_stat(sums: np.ndarray, pulls: np.ndarray, key: str, low: float | None,
                   high: float | None, *, power: int = 1) -> None:
    """Refuse a restored sum of ``pulls`` rewards (``power=2``: squared rewards) that rewards in
    the support ``[low, high]`` (:func:`bandits.errors.reward_bounds`) cannot add up to.

    Parameters
    ----------
    sums, pulls : ndarray
        The sums and the counts they are over, same shape.
    key : str
        The statistic's name in the state.
    low, high : float or None
        The policy's reward support.
    power : {1, 2}, default 1
        1 for a sum of rewards, 2 for a sum of squares.

    Raises
    ------
    ValueError
        A sum outside ``pulls * [low, high]`` (squares: ``[0, pulls * max(low^2, high^2)]``).
    """
    lo, hi = reward_bounds(low, high)
    if power == 2:
        lo, hi = (0.0 if lo <= 0.0 <= hi else min(lo * lo, hi * hi)), max(lo * lo, hi * hi)
    check_stat(sums, f"state['stats'][{key!r}]", sums.shape,
               low=pulls * lo - SUM_ROUNDING * pulls * abs(lo),
               high=pulls * hi + SUM_ROUNDING * pulls * abs(hi),
               why=f"a sum of 'pulls' {'squared ' if power == 2 else ''}rewards in "
                   f"[{lo:g}, {hi:g}]")


def policy_from_state_dict(state: dict[str, Any], *,
                           random_state: RandomState = None) -> BatchedPolicy:
    """Rebuild any policy of this package from its ``state_dict()`` (dispatch on ``"policy"``).

    Parameters
    ----------
    state : dict
        What a policy's ``state_dict()`` returned.
    random_state : int, Generator, SeedSequence or None, default None
        A new random stream for the rebuilt policy; None continues the saved one.

    Raises
    ------
    ValueError
        As :meth:`BatchedPolicy.from_state_dict`: an unknown policy name or a malformed state.
    """
    return BatchedPolicy.from_state_dict(state, random_state=random_state)


def registered_policies() -> dict[str, type[BatchedPolicy]]:
    """Policy classes by name (every concrete :class:`BatchedPolicy` subclass)."""
    return dict(_REGISTRY)
