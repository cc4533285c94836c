"""The one registry of arms: every arm's canonical name, its class and its default hyper-parameters.

Environments (:mod:`envs`), the lab (:mod:`experiments`, ``evaluate-arms``) and the service
(:mod:`serving`) all name arms through this module, so an arm has one name everywhere: in an
environment's ``arms=``, in ``recbandits evaluate-arms --arms``, in the service's ``--arms`` and
``RECBANDITS_ARMS``, in the decision log and in the file names of saved arms.

============  ==============================================  ====================================
name          built as                                        what it is
============  ==============================================  ====================================
svd           ``SVDRecommender()``                            biased matrix factorisation (Surprise)
sequential    ``SequentialRecommender()``                     next-item transitions
autoencoder   ``AutoencoderRecommender(variant="dlae")``      DLAE, the closed-form linear
                                                              autoencoder with input dropout
                                                              (Steck 2020); EASE is
                                                              ``variant="ease"``
dae           ``AutoencoderRecommender(variant="dae")``       denoising autoencoder (one hidden
                                                              layer; ~15 s a fit on 100K)
popularity    ``PopularityRecommender()``                     most-rated items; with
                                                              ``half_life=`` live, time-decayed
                                                              counts of the events observed
random        ``RandomRecommender()``                         uniform random items
cooccurrence  ``CooccurrenceRecommender()``                   item-item co-occurrence of live
                                                              events, time-decayed
============  ==============================================  ====================================

Live popularity is not an arm of its own: it is ``make_arm("popularity", half_life=...)``, the
same class with a half-life (one place for popularity's rules).

``autoencoder`` is the canonical name of the linear-autoencoder arm because the service, the
environments, the shipped configs and the notebooks already used it (and it is
``AutoencoderRecommender.name``); ``evaluate-arms`` called the same arm ``"ease"``, when it was
EASE. That old name still resolves to ``autoencoder`` (now DLAE), with a :class:`FutureWarning`,
through :data:`ALIASES`; it will be removed.

Examples
--------
>>> from arms.registry import make_arm, arm_names
>>> arm_names()
('svd', 'sequential', 'autoencoder', 'dae', 'popularity', 'random', 'cooccurrence')
>>> model = make_arm("autoencoder", random_state=1)
>>> type(model).__name__, model.variant, model.random_state
('AutoencoderRecommender', 'dlae', 1)
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from arms.autoencoder import AutoencoderRecommender
from arms.base import Recommender
from arms.cooccurrence import CooccurrenceRecommender
from arms.errors import UnknownArmError, unknown_id_message
from arms.popularity import PopularityRecommender
from arms.random import RandomRecommender
from arms.sequential import SequentialRecommender
from arms.svd import SVDRecommender


@dataclass(frozen=True)
class ArmEntry:
    """One registered arm: a recommender class and the hyper-parameters that make it this arm.

    Attributes
    ----------
    name : str
        Canonical name.
    cls : type of Recommender
    params : mapping of str to object
        Keyword arguments fixed by the registry (e.g. ``variant="ease"``); the class's own
        defaults fill in the rest.
    """

    name: str
    cls: type[Recommender]
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(self, *, random_state: int | None = None, **params: Any) -> Recommender:
        """A new, unfitted instance; ``params`` override the registry's.

        ``random_state`` is passed only to classes that take one (popularity does not), so a
        caller can seed a whole arm list without knowing which arms are random.
        """
        kwargs = {**self.params, **params}
        taken = inspect.signature(self.cls).parameters
        if random_state is not None and "random_state" in taken:
            kwargs["random_state"] = random_state
        # Said with what is taken (Python's own words named the class's __init__).
        self.cls.check_param_names(params, arm=self.name)
        return self.cls(**kwargs)

    def matches(self, model: Recommender) -> bool:
        """Whether ``model`` is an instance of this arm (its class and the registry's params)."""
        if type(model) is not self.cls:
            return False
        given = model.get_params()
        return all(given.get(k) == v for k, v in self.params.items())


def _entry(name: str, cls: type[Recommender], **params: Any) -> ArmEntry:
    return ArmEntry(name, cls, MappingProxyType(params))


#: Canonical name -> arm, in the order arms are listed to users.
ARMS: Mapping[str, ArmEntry] = MappingProxyType({
    e.name: e for e in (
        _entry("svd", SVDRecommender),
        _entry("sequential", SequentialRecommender),
        # DLAE, not EASE: the only linear autoencoder that met both protocol-1 targets (NDCG@10
        # >= 0.48, Precision@10 >= 0.42) with validation-only tuning (README, "The arms").
        _entry("autoencoder", AutoencoderRecommender, variant="dlae"),
        _entry("dae", AutoencoderRecommender, variant="dae"),
        _entry("popularity", PopularityRecommender),
        _entry("random", RandomRecommender),
        _entry("cooccurrence", CooccurrenceRecommender),
    )
})  # fmt: skip
#: Deprecated name -> canonical name (each resolves with a FutureWarning).
ALIASES: Mapping[str, str] = MappingProxyType({"ease": "autoencoder"})


def arm_names() -> tuple[str, ...]:
    """Canonical names of every registered arm, in registry order (aliases excluded)."""
    return tuple(ARMS)


def canonical_name(name: str) -> str:
    """``name`` with a deprecated alias replaced by its canonical name (and a FutureWarning).

    Any other string is returned unchanged, known or not, so a caller that keeps its own
    labels (``evaluate-arms``' custom specs) can still call it; :func:`resolve` checks.

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    """
    if not isinstance(name, str):
        raise TypeError(f"an arm name must be a string, got {name!r} ({type(name).__name__})")
    if name in ALIASES:
        canonical = ALIASES[name]
        # FutureWarning, not DeprecationWarning: the people who type arm names are end users
        # of the CLI and the service, and Python hides DeprecationWarning from them by default.
        warnings.warn(
            f"arm name {name!r} is deprecated; use {canonical!r} (the same arm)",
            FutureWarning, stacklevel=_caller_level(),
        )  # fmt: skip
        return canonical
    return name


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside this module, so a warning names the caller."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]  # None ends the loop
    return level


def resolve(name: str) -> ArmEntry:
    """The registered arm called ``name`` (a canonical name or a deprecated alias).

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    UnknownArmError
        If no arm has that name; the message suggests the closest name and lists every one.
    """
    canonical = canonical_name(name)
    try:
        return ARMS[canonical]
    except KeyError:
        raise UnknownArmError(
            unknown_id_message("arm", name, arm_names(), list_known=True)
        ) from None


def split_names(text: str) -> tuple[str, ...]:
    """The names of a comma-separated list of arms (``--arms``, ``RECBANDITS_ARMS``), each
    stripped; none for a blank text. An empty one is kept for :func:`resolve_names` to refuse
    (``svd,`` ran svd alone: found by a README check): the one split of the lab's commands and
    of the service's settings.
    """
    return () if not text.strip() else tuple(name.strip() for name in text.split(","))


def resolve_names(names: Sequence[str], *, field: str = "arms") -> tuple[str, ...]:
    """The registry names of ``names`` (aliases resolved), each once (``field``: the setting
    that names them, as :func:`refuse_repeats` says it).

    Raises
    ------
    UnknownArmError
        For an unknown name (a ValueError, with a suggestion).
    ValueError
        If a name is empty (``--arms svd,``), as :func:`refuse_repeats` says it.
        If two of ``names`` are one arm (``popularity,popularity``, or an alias and its arm):
        found by attack, a pandas "Index contains duplicate entries" traceback at the end of
        ``evaluate-arms``, and ``replay`` ran one arm twice.
    """
    _refuse_empty(names, field)  # before resolve(""): "unknown arm ''" hid the stray comma
    try:
        resolved = tuple(resolve(name).name for name in names)
    except UnknownArmError as exc:
        if field == "arms":
            raise
        # Said with the setting that names it (review: the replay's arm_params said only
        # "unknown arm 'svdd'", with nothing naming arm_params).
        raise UnknownArmError(f"{field}: {exc}") from None
    refuse_repeats(resolved, field=field)
    return resolved


def refuse_repeats(names: Sequence[str], *, field: str = "arms", kind: str = "arm") -> None:
    """Raise ``ValueError`` if ``names`` is empty or names an arm twice: the one rule (and
    message) of an arm list, for the service's settings, the environments, the gate and the
    lab's commands (``names``: resolved names, or labels of the caller's specs; ``field``: the
    setting that names them, e.g. ``replay``'s ``arm_params``, said in the message; ``kind``:
    what they name, ``"policy"`` for ``simulate --policies``).

    Raises
    ------
    ValueError
        No arm, an empty name (``--arms svd,`` ran svd alone: found by a README check), or
        naming the arms given twice.
    """
    if not names:
        raise ValueError(f"{field} must name at least one {kind}")
    _refuse_empty(names, field, kind)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{field} must name each {kind} once, got {twice} twice")


def _refuse_empty(names: Sequence[str], field: str, kind: str = "arm") -> None:
    """Refuse an empty (or blank) name in ``names``, as the bandits' ``check_arm_names`` does."""
    if any(isinstance(name, str) and not name.strip() for name in names):
        raise ValueError(f"{field} contains an empty name; {kind} names must be non-empty, got "
                         f"{list(names)}")


def make_arm(name: str, *, random_state: int | None = None, **params: Any) -> Recommender:
    """A new, unfitted arm by name, with the registry's hyper-parameters and ``params`` on top.

    Parameters
    ----------
    name : str
        A name of :data:`ARMS` (or a deprecated alias of :data:`ALIASES`).
    random_state : int or None, default None
        Seed, for arms that take one; None keeps the class default (0).
    **params
        Hyper-parameters overriding the registry's (e.g. ``l2=250.0``).

    Raises
    ------
    TypeError
        If ``name`` is not a string, or from the class for an unknown keyword.
    UnknownArmError
        If the name is not registered.
    """
    return resolve(name).build(random_state=random_state, **params)


def name_of(model: Recommender) -> str:
    """The registry name of an arm instance, else its class's ``name``.

    A DAE instance is ``"dae"``, not its class's ``"autoencoder"``.
    """
    for entry in ARMS.values():
        if entry.matches(model):
            return entry.name
    return str(type(model).name)
