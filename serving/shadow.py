"""Shadow mode: a candidate policy on live traffic, logged and never served; its promotion.

With ``shadow_policy`` set (:class:`serving.settings.Settings`), every policy decision also asks
the shadow policy, for the same request and context, for its probability of every arm and its
choice, and logs them in the decision's ``shadow`` column (:func:`record`): the live policy's arm
is the one served, always. The shadow's state is, like the live policy's, the fold of the log's
outcomes in ``seq`` order under its own ``update`` (:meth:`serving.policy.PolicyModel.fold`): each
worker advances it in the same refresh, with the same outcomes, as the live snapshot, so both are
always at the same log position, and ``rebuild-state`` folds the same rows to check it.

**The bias this implies** (Azure Personalizer's apprentice mode had the same): the shadow learns
from the live policy's decisions and rewards, i.e. only about the arms the live policy played,
as often as it played them. Its state is therefore not the state it would have reached serving
the traffic itself: an arm the live policy neglects stays uncertain to the shadow too (it keeps
exploring it in its probabilities, which the off-policy estimate charges at the live policy's
rate), and a contextual shadow sees contexts as the live policy chose arms for them. ``recbandits
ope --shadow`` (:func:`serving.offpolicy.evaluate_shadow`) estimates the value of the shadow *as
it was logged*: its probabilities at each decision, computed from that state, against the live
policy's logged propensities (with a live holdout, the shadow's probabilities mixed with its
baseline as the live ones are: :func:`serving.holdout.under_holdout`, as it would be served once
promoted); it is unbiased for that sequence of decision rules, which after a
promotion go on learning from their own choices (usually better than in shadow, never worse for
lack of data on the arms they favour, since those then get played).

**Its choice** is drawn from its probabilities with a uniform number read off the decision's
``event_id`` (its last 13 hex digits: 52 of the 80 random bits, :func:`uniform`), so it consumes
nothing of the service's generator (the served arms and slates are exactly those of the same
service without a shadow, under the same seed) and can be redrawn from the log.

**Promotion** (``recbandits shadow promote``, ``POST /admin/shadow/promote``): a row of
``policy_promotions`` names the new live policy. Precedence: the store's latest promotion
overrides the settings' ``policy`` and ``policy_params`` (file, ``RECBANDITS_*``, flags), and a
settings shadow equal to the promoted policy is switched off (:func:`promoted`). There is no
undo: changing the settings' ``policy`` back changes nothing while a promotion is recorded. To
go back, promote the old policy in turn: name it, with the same parameters, as the shadow of
the promoting command, whose ``policy`` must then be the promoted one (a shadow equal to the
settings' policy is refused): ``recbandits shadow promote --policy PROMOTED --shadow-policy
NAME --shadow-policy-params JSON``; no worker needs to have run it as its shadow. That records a
new promotion row. Every worker reads
the latest promotion at each refresh and swaps its live policy between two requests for the
shadow's snapshot (the same fold of the same outcomes under the promoted rule, at the same log
position) or, when the promoted policy was not its shadow, for that policy folded over the log
up to its live position: a request uses one (model, snapshot) pair throughout, so none fails and
none mixes the two. The state after promotion is the fold of the whole log under the promoted
policy's rule, which is what ``rebuild-state`` computes. A purged log cannot promote (the shadow
started from nothing at the fold snapshot, whose purged outcomes only the old policy's state
holds): refused, so after a purge neither a shadow nor the old policy can be promoted. The
check and the record are one step under the store's ``log_head`` lock, and a purge re-checks
the latest promotion in its own transaction, so a purge and a promotion never interleave.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from serving.policy import (
    PolicyModel,
    PolicySnapshot,
    draw_arm,
    policy_identity,
    said_policy,
)
from serving.settings import Settings
from serving.store import Store
from serving.store.types import JsonObject

#: Hex digits of the event id that make the shadow's uniform number (52 bits: a float64's
#: mantissa holds them exactly).
UNIFORM_DIGITS = 13


def uniform(event_id: str) -> float:
    """The shadow's uniform number in ``[0, 1)`` for decision ``event_id``: its last
    :data:`UNIFORM_DIGITS` hex digits (random bits of the id) over ``16 ** 13``.

    Raises
    ------
    ValueError
        ``event_id`` does not end in 13 hex digits.
    """
    tail = event_id[-UNIFORM_DIGITS:]
    try:
        return int(tail, 16) / 16.0 ** UNIFORM_DIGITS
    except ValueError:
        raise ValueError(f"event_id must end in {UNIFORM_DIGITS} hex digits, got "
                         f"{event_id!r}") from None


def describe(model: PolicyModel) -> str:
    """``model``'s name and parameters as logged in every shadow record (JSON text)."""
    return json.dumps(model.describe_params())


def record(model: PolicyModel, snapshot: PolicySnapshot, policy_json: str,
           features: npt.NDArray[np.float64] | None, event_id: str) -> str:
    """The shadow record of one decision as JSON text: ``{"policy", "arm", "propensity", "u",
    "seq", "pmf"}``: the shadow's name and parameters (``policy_json``, :func:`describe`), the
    arm it would have chosen and its probability, the uniform number drawn with
    (:func:`uniform`), the log position its state had folded, and its probability of every arm.

    The probabilities come from :meth:`PolicyModel.selection` (context-free: once per
    snapshot; contextual: once per (snapshot, context), cached).
    """
    probabilities, cdf, pmf_json = model.selection(snapshot, features)
    u = uniform(event_id)
    choice = draw_arm(cdf, u)  # as the service draws the live arm
    return (f'{{"policy": {policy_json}, "arm": {json.dumps(model.arms[choice])}, '
            f'"propensity": {float(probabilities[choice])!r}, "u": {u!r}, '
            f'"seq": {snapshot.seq}, "pmf": {pmf_json}}}')


@dataclass(frozen=True)
class Promotion:
    """A recorded promotion: the ``policy`` and ``params`` (as the settings spell them) that
    became live, replacing ``previous`` (``{"name", "params"}``), row ``id`` of the store,
    recorded at ``created_at`` (Unix seconds).
    """

    id: int
    policy: str
    params: JsonObject
    previous: JsonObject
    created_at: float

    def precedes(self, decided_at: float) -> bool:
        """Whether a decision made at ``decided_at`` is the promoted policy's: made after
        this promotion was recorded (one made at or before it is the policy it replaced).
        The one test of ``shadow status`` and ``purge``.
        """
        return decided_at > self.created_at


def latest(store: Store) -> Promotion | None:
    """The store's latest promotion, or None."""
    row = store.latest_promotion()
    if row is None:
        return None
    row_id, policy, previous, created_at = row
    return Promotion(row_id, str(policy["name"]), dict(policy["params"]), previous, created_at)


def promoted(settings: Settings, promotion: Promotion | None) -> Settings:
    """``settings`` with ``promotion`` applied: its policy and parameters are live, and a
    shadow equal to them is switched off (see the module doc for the precedence).
    """
    if promotion is None:
        return settings
    current = settings.model_copy(update={"policy": promotion.policy,
                                          "policy_params": dict(promotion.params)})
    if current.shadow_is_live():
        current = current.model_copy(update={"shadow_policy": None, "shadow_policy_params": {}})
    return current


def effective(settings: Settings, store: Store) -> Settings:
    """The settings in force on ``store``: :func:`promoted` by its latest promotion."""
    return promoted(settings, latest(store))


@dataclass(frozen=True)
class PromoteResult:
    """What :func:`promote` did: the promotion recorded, and the policy it replaced."""

    promotion: Promotion
    previous: JsonObject
    #: Whether a running worker was seen to run the policies promoted from and to (the
    #: command's, :func:`serving.commands.shadow_promote`): said after the result.
    checked: str | None = None

    @property
    def exit_code(self) -> int:
        """``recbandits shadow promote``'s status: 0 (a refusal raises)."""
        return 0

    def __str__(self) -> str:
        p = self.promotion
        said = (f"promoted {said_policy({'name': p.policy, 'params': p.params})} (promotion "
                f"#{p.id}), replacing {said_policy(self.previous)}; every worker "
                "serves it within one refresh interval")
        return said if self.checked is None else f"{said} ({self.checked})"


def promote(settings: Settings, store: Store, *, now: float | None = None) -> PromoteResult:
    """Make the settings' shadow policy the live one on ``store`` (recorded: every worker
    follows within one refresh interval, a restart keeps it).

    Raises
    ------
    ValueError
        No shadow policy is in force (none set, or it was promoted already), the log was
        purged (see the module doc; checked under the store's ``log_head`` lock, against a
        purge running meanwhile), or another promotion was recorded meanwhile.
    """
    before = latest(store)
    current = promoted(settings, before)
    if current.shadow_policy is None:
        raise ValueError(f"no shadow policy to promote: the live policy is {current.policy!r} "
                         f"with parameters {current.policy_params}"
                         + (" (set shadow_policy / --shadow-policy)"
                            if settings.shadow_policy is None else
                            f" (the shadow {settings.shadow_policy!r} was promoted already)"))
    name, params = current.shadow_policy, dict(current.shadow_policy_params)
    previous: JsonObject = {"name": current.policy, "params": dict(current.policy_params)}
    # The purge check is the store's, in the transaction that records the promotion (a purge
    # running meanwhile would fold the log under the policy this one replaces).
    now = time.time() if now is None else now
    row_id = store.record_promotion({"name": name, "params": params}, previous, now,
                                    after=0 if before is None else before.id)
    return PromoteResult(Promotion(row_id, name, params, previous, now), previous)


def status(settings: Settings, store: Store) -> JsonObject:
    """The live and shadow policies in force on ``store`` and the latest promotion (``recbandits
    shadow status``, ``GET /admin/shadow``), and how many decisions carry a shadow record.
    """
    promotion = latest(store)
    current = promoted(settings, promotion)
    decision = store.latest_decision()
    logged = None if decision is None or decision.policy is None else {
        "name": decision.policy.get("name"), "params": decision.policy.get("params", {})}
    records = store.shadow_policies()
    # The settings' policies at the logged context's dimension, compared as policy_identity.
    n_features = None if decision is None else decision.n_features
    ours = settings_identities(current, {"live": n_features, "shadow": n_features})
    return {
        "live": {"name": current.policy, "params": dict(current.policy_params)},
        "shadow": (None if current.shadow_policy is None else
                   {"name": current.shadow_policy, "params": dict(current.shadow_policy_params)}),
        "promotion": (None if promotion is None else
                      {"id": promotion.id, "policy": {"name": promotion.policy,
                                                      "params": promotion.params},
                       "previous": promotion.previous}),
        "shadow_decisions": sum(n for _, n in records),
        # What the log says, beside what the settings put in force (found by attack: the
        # settings alone were printed as "live" and "shadow", whatever the workers logged).
        "logged_live": logged,
        "logged_is_live": (None if logged is None else
                           policy_identity(logged["name"], logged["params"]) == ours["live"]),
        # A decision older than the promotion was made by the policy it replaced: not the
        # settings' fault (found by attack: right after a promotion, status said the settings
        # were not the service's). The same test as purge's (Promotion.precedes).
        "logged_before_promotion": (None if decision is None or promotion is None else
                                    not promotion.precedes(decision.created_at)),
        "shadow_records": [{"policy": policy, "decisions": n,
                            "is_shadow": isinstance(policy, dict) and policy_identity(
                                policy.get("name"), policy.get("params", {})) == ours["shadow"]}
                           for policy, n in records],
    }


def settings_identities(current: Settings, dimensions: Mapping[str, int | None]
                        ) -> dict[str, JsonObject | None]:
    """The live and shadow policies ``current`` puts in force, as they are compared with the
    policies a worker runs or the log holds (``shadow status``, ``GET /admin/shadow``, and
    ``shadow status`` / ``shadow promote`` against a running worker).

    Parameters
    ----------
    current : Settings
        The settings in force (:func:`promoted`).
    dimensions : mapping of str to int or None
        The context's dimension to build each role (``"live"``, ``"shadow"``) with; a role
        left out is not built (nothing to take its dimension from).

    Returns
    -------
    dict
        Under ``"live"`` and ``"shadow"``: the :func:`~serving.policy.policy_identity` of the
        policy built as a worker builds it (every hyper-parameter filled in: the settings'
        own spelling, ``{}`` for defaults, never equalled a logged policy, found by attack);
        where it cannot be built (a contextual policy with no dimension) or its role is left
        out of ``dimensions``, the policy as the settings spell it (``{"name", "params"}``,
        without the ``n_features`` every built contextual policy has). ``"shadow"`` is None
        without a shadow policy.
    """
    roles = {"live": (current.policy, current.policy_params, current.policy_model),
             "shadow": (current.shadow_policy, current.shadow_policy_params,
                        current.shadow_model)}
    identities: dict[str, JsonObject | None] = {}
    for role, (name, params, build) in roles.items():
        if name is None:
            identities[role] = None
            continue
        model = None
        if role in dimensions:
            try:
                model = build(dimensions[role])
            except (TypeError, ValueError):  # e.g. LinTS: n_features is required
                model = None
        identities[role] = ({"name": name, "params": dict(params)} if model is None
                            else model.identity())
    return identities
