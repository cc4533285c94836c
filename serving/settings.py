"""Every setting of the service, from keyword arguments, options or ``RECBANDITS_*`` variables.

One :class:`Settings` object is built by the CLI (options override environment variables) or by
the tests, and handed to :func:`serving.app.create_app`; nothing reads the environment elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from uvicorn.config import LOG_LEVELS

from arms import registry
from arms._validation import check_seed
from arms.data import DATASETS
from arms.data.synthetic import check_sizes
from arms.gate import DEFAULT_MARGIN, MAX_MARGIN
from arms.metrics import POSITIVE_RATING
from bandits.base import registered_policies
from bandits.errors import (
    MAX_PROPENSITY_GRID,
    PerArmLengthError,
    check_port,
    integer_text,
    number_text,
    short_repr,
)
from bandits.ope import MAX_BOOTSTRAP, MIN_BOOTSTRAP
from bandits.thompson import BETA_PRIOR_MAX, BETA_PRIOR_MIN
from serving.armset import make_arm
from serving.drift import DEFAULT_WINDOWS, DetectorName, DriftMonitor
from serving.durations import parse_duration
from serving.errors import ArmNotServedError
from serving.features import DEFAULT_DECAY_STEP_S, DEFAULT_HALF_LIFE_S
from serving.holdout import Holdout, check_holdout
from serving.json_text import duplicate_key
from serving.multileave import SlateMode
from serving.policy import (
    DEFAULT_POLICY,
    SERVABLE_POLICIES,
    SET_BY_THE_SERVICE,
    CarryoverMode,
    PolicyModel,
    check_policy_name,
    with_shared_params,
)
from serving.rules import (
    DEFAULT_REWARD,
    RATING_SCALE,
    Aggregation,
    RuleBook,
    overridden_rules,
)
from serving.store.base import DEFAULT_TIMEOUT_S
from serving.store.errors import redact_url

#: Arms served by default, in policy order (names of :mod:`arms.registry`).
DEFAULT_ARMS = ("svd", "sequential", "autoencoder", "popularity")


def say_seconds(seconds: float) -> str:
    """A duration as messages write it: ``7776000 s (90 days)``, the days when a day or more
    (the retention window was ``7.776e+06 s`` in an event's 422 and ``7776000 s, 90 days`` in
    ``purge``'s refusal: found by attack).
    """
    text = f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:g} s"
    return text + (f" ({seconds / 86_400:g} days)" if seconds >= 86_400 else "")


#: A float setting: never infinite or NaN, which a bound such as gt=0 lets through (found by
#: attack: RECBANDITS_RETENTION_S=inf fitted and saved the arms, then the workers failed to
#: start). Per field, not for the model: the values of the tables (arm_params, policy_params,
#: rules) are checked by their own rules, whose messages name the value (found in review).
def _number_rule(value: object) -> object:
    """A float setting's text by the numbers' one rule (:func:`bandits.errors.number_text`):
    pydantic's lax float read ``RECBANDITS_EXPLORATION_FLOOR=0_1`` as 1.0 (found in review);
    "inf" still reaches the type's check, which says "finite".
    """
    return number_text(value) if isinstance(value, str) else value


Finite = Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_number_rule)]


def _integer_rule(value: object) -> object:
    """An integer setting's text by the numbers' one rule (:func:`bandits.errors.integer_text`),
    whatever its source: pydantic's lax int read ``workers = "1_6"`` in a settings file and
    ``RECBANDITS_WORKERS=1_6`` as 16 (found in review). An int given as an int is kept.
    """
    return integer_text(value) if isinstance(value, str) else value


#: An integer setting (``port`` has its own rule, :func:`bandits.errors.check_port`).
Integer = Annotated[int, BeforeValidator(_integer_rule)]


def _port_rule(value: object) -> int:
    """The one rule of a port, as written (:func:`bandits.errors.check_port`; review: serve
    said pydantic's bounds, 0 included, and read "+80", "8_000", 80.0 and true as ports, while
    a store URL and --scheduler refused them). A whole number as JSON or TOML gives one; a
    bool, float or other is refused by the rule's own message, as text.
    """
    plain = isinstance(value, int | str) and not isinstance(value, bool)
    return check_port(value if plain else repr(value))


#: The service's port (a variable's refusal names the variable, as for every number: review).
Port = Annotated[int, BeforeValidator(_port_rule)]


def _duration_rule(value: object) -> object:
    """A duration setting's one rule (:func:`serving.durations.parse_duration`)."""
    return parse_duration(value)


#: A duration setting in seconds: a number, or text with a unit ("6h"; one rule for every
#: duration: retention_s took no unit and read "1_000" as 1000 while retrain_every took units
#: and refused "1_000", found in review; retrain_lease_s and seven more took none, found in
#: review); Finite, and at most MAX_DURATION_S, which the rule itself checks ("at most 100
#: years"; as an le= here it overrode a setting's own smaller le=, retrain_check_s's 3600).
#: Every setting whose name ends in ``_s`` is one.
Duration = Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_duration_rule)]


def _duration_or_off(value: object) -> object:
    """``retrain_every``'s rule: a duration, or "off" and "" for none."""
    return parse_duration(value, off=True)


def _whole_seconds_rule(value: object) -> object:
    """A duration in whole seconds (``worker_healthcheck_timeout_s``, an int for uvicorn): the
    duration's rule, then a whole number of seconds as an int ("2m" is 120); a fraction is
    left to the int type's refusal.
    """
    seconds = parse_duration(value)
    return int(seconds) if isinstance(seconds, float) and seconds.is_integer() else seconds


#: A duration setting in whole seconds: units taken, a fraction refused.
WholeSeconds = Annotated[int, BeforeValidator(_whole_seconds_rule)]

#: A duration that may be off (None; "off" and "" as text).
OptionalDuration = Annotated[Duration | None, BeforeValidator(_duration_or_off)]

#: The text rules of the number types, by which a ``RECBANDITS_*`` variable is read
#: (:class:`_Environment`), its refusal naming the variable.
_TEXT_RULES = (_integer_rule, _number_rule, _duration_rule, _duration_or_off,
               _whole_seconds_rule, _port_rule)


def _text_rule(field: FieldInfo) -> Callable[[object], object] | None:
    """The text rule of a number setting's type (:data:`_TEXT_RULES`), None for another."""
    validators = list(field.metadata)
    for arg in get_args(field.annotation):  # Integer | None: the rule is inside the union
        validators += getattr(arg, "__metadata__", ())
    # The outermost first: retrain_every's "off" before the duration inside its union.
    return next((v.func for v in validators
                 if isinstance(v, BeforeValidator) and v.func in _TEXT_RULES), None)



def _no_text(value: Any) -> Any:
    """Refuse text where a table holds numbers (a number, true or false, a list of numbers):
    pydantic's lax union read ``"1_0"`` as 10.0 and ``" 2"`` as 2.0 in ``policy_params``,
    ``shadow_policy_params`` and ``rules`` (found by attack), where the numbers' rule refuses
    them everywhere else. A table's numbers are JSON's or TOML's own, never text.
    """
    inner = value.values() if isinstance(value, dict) else value if isinstance(
        value, list) else (value,)
    if any(isinstance(item, str) for item in inner):
        raise ValueError(f"must be a number, true or false, or a list or table of numbers, not "
                         f"text: got {short_repr(value)}")
    return value


#: A value of a policy's hyper-parameter table (``policy_params``, ``shadow_policy_params``).
ParamValue = Annotated[float | int | bool | list[float] | None, BeforeValidator(_no_text)]
#: A value of a rule book entry (``rules``): a number, a flag or a table of numbers.
RuleValue = Annotated[float | bool | dict[str, float], BeforeValidator(_no_text)]

#: Longest admin token: an ``Authorization`` header carrying a longer one is a wrong token.
MAX_ADMIN_TOKEN_CHARS = 1000
#: Linux's bound on one environment string ``NAME=value`` (MAX_ARG_STRLEN, 32 pages): the
#: workers get the settings through the environment (:meth:`Settings.to_env`).
MAX_VARIABLE_BYTES = 32 * 4096


#: Set while :func:`arms_unchecked` runs: the settings are then read without checking the
#: arms they name (``arm_params``, ``holdout_baseline``) or count (a per-arm list of
#: ``policy_params``) against the arm list.
_ARMS_UNCHECKED: ContextVar[bool] = ContextVar("arms_unchecked", default=False)


@contextlib.contextmanager
def arms_unchecked() -> Iterator[None]:
    """Read settings without checking the arms they name (``arm_params``,
    ``holdout_baseline``) against the arm list: for finding the store whose live arms the
    check then uses.
    """
    token = _ARMS_UNCHECKED.set(True)
    try:
        yield
    finally:
        _ARMS_UNCHECKED.reset(token)


def arm_not_served(exc: ValidationError) -> bool:
    """Whether ``exc`` holds an :class:`ArmNotServedError`."""
    return any(isinstance(error.get("ctx", {}).get("error"), ArmNotServedError)
               for error in exc.errors())


def settings_issues(exc: ValidationError) -> str:
    """A pydantic ValidationError of the settings as one line: ``field: message; ...`` (its
    own text is a multi-line dump with a link per error; found by attack).

    pydantic's own texts ("Input should be less than 1") name no value (review; a README
    check): the value refused is added (:func:`_refused_value`), unless the check is a model's
    own (``value_error``, whose message names it) or the input is a whole table. The branches
    of a union refusing one value (``policy_params.prior_alpha`` is no float, int, bool nor
    list) are one issue, the value said once: it was said once a branch (found in review:
    12,394 characters for one 3,000-character value).
    """
    issues = []
    for branches in _union_groups(exc.errors(include_url=False)):
        error = branches[0]
        loc = error["loc"][:-1] if len(branches) > 1 else error["loc"]
        field = ".".join(str(part) for part in loc) or "settings"
        shown = _refused_value(error) if error["type"] != "value_error" else None
        if len(branches) > 1:
            message = ("" if shown is None else f"got {shown}, which ") + (
                "fits none of its types: " + ", ".join(
                    f"{branch['loc'][-1]} ({branch['msg']})" for branch in branches))
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            if shown is not None:
                message += f", got {shown}"
            elif isinstance(error.get("input"), str):  # a rule's own words quote the value:
                value = error["input"]  # its password hidden as _refused_value hides it
                message = message.replace(short_repr(value), short_repr(redact_url(value)))
        issues.append(message if message.startswith(f"{field}: ") else f"{field}: {message}")
    return "; ".join(issues)


def _union_groups(errors: list[Any]) -> list[list[Any]]:
    """``errors`` in groups, each one error or the branches of a union refusing one value:
    consecutive errors at one place but the branch's name (``('policy_params',
    'prior_alpha')`` of ``(..., 'float')``), of the very same input, each of another type
    (the entries of a table refusing equal values alike are not branches: ``low`` and
    ``high`` both ``float_parsing``).
    """
    groups: list[list[Any]] = []
    for error in errors:
        loc, last = error["loc"], groups[-1] if groups else []
        if (len(loc) > 1 and isinstance(loc[-1], str) and "input" in error and last
                and len(last[0]["loc"]) == len(loc) and last[0]["loc"][:-1] == loc[:-1]
                and last[0].get("input") is error["input"]
                and error["type"] not in {branch["type"] for branch in last}):
            last.append(error)
        else:
            groups.append([error])
    return groups


def _refused_value(error: Any) -> str | None:
    """The value a pydantic error refused, as the message shows it: bounded
    (:func:`bandits.errors.short_repr`), a store URL's password hidden
    (:func:`serving.store.errors.redact_url`; any text, the hiding done before the cut), a
    secret setting's (``admin_token``) not at all; None for none shown (a table, a secret).
    Found in review: ``admin_token = 123456789`` was said whole, and ``workers = 'x' * 5000``
    in 5,086 characters.
    """
    value = error.get("input")
    if not isinstance(value, bool | int | float | str):
        return None
    field = Settings.model_fields.get(str(error["loc"][0])) if error["loc"] else None
    if field is not None and SecretStr in (field.annotation, *get_args(field.annotation)):
        return None
    return short_repr(redact_url(value) if isinstance(value, str) else value)


def http_url(host: str, port: int) -> str:
    """The service's base URL at ``host``:``port`` (an IPv6 address in brackets: ``serve``'s
    banner said ``http://::1:8000``, found by attack).
    """
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class JsonTableError(ValueError):
    """A table setting (``policy_params``, ``arm_params``, ...) given as text, by a
    ``RECBANDITS_*`` variable or a CLI option, that is not a JSON object: the message names
    where it was given, its value and what it must be.
    """


#: What a JSON value that is no object is, in JSON's words.
_JSON_KINDS: dict[type, str] = {list: "a JSON array", str: "a JSON string", int: "a JSON number",
                                float: "a JSON number", bool: "JSON true or false",
                                type(None): "JSON null"}


def json_object(source: str, text: str) -> dict[str, Any]:
    """Table setting text as the dict it writes: the one rule and message of a table given as
    text, wherever (``RECBANDITS_SHADOW_POLICY_PARAMS`` and ``--shadow-policy-params`` gave
    two different messages for '[1]' and for '{bad', found in review).

    Parameters
    ----------
    source : str
        Where the text was given, as the refusal names it: the variable
        (``RECBANDITS_POLICY_PARAMS``) or the option (``--shadow-policy-params``).
    text : str
        The JSON text.

    Raises
    ------
    JsonTableError
        ``text`` is not JSON, JSON but no object (``'[1]'``), or an object naming a key twice
        (``'{"alpha": -2, "alpha": 1}'``, refused as the API refuses it).
    """
    def refused(why: str) -> JsonTableError:
        return JsonTableError(f"{source}={text!r}: must be a JSON object (as "
                              f"'{{\"name\": value}}'; '{{}}' for none): {why}")

    try:
        decoded = json.loads(text)
    except ValueError as exc:  # json's own words give where the text goes wrong
        raise refused(str(exc)) from None
    if not isinstance(decoded, dict):  # said in JSON's words ("NoneType" was Python's)
        raise refused(f"got {_JSON_KINDS.get(type(decoded), 'a JSON value')}")
    repeated = duplicate_key(text)  # the API's rule: json.loads kept the last (found by attack)
    if repeated is not None:
        raise refused(f"the key {short_repr(repeated)} appears twice in one object")
    return decoded


class NumberVariableError(ValueError):
    """A ``RECBANDITS_*`` variable of a number setting (an integer, a float, a duration) whose
    text its rule refuses: the message names the variable and its value.
    """


class _Environment(EnvSettingsSource):
    """The ``RECBANDITS_*`` variables, the settings' source below the keyword arguments (the
    CLI's options, a settings file's values, Python's ``Settings(...)``).

    A setting given above is taken whole, every setting alike: pydantic-settings deep-merges a
    table found in both, so ``--shadow-policy-params '{}'`` kept the ``scale`` of
    ``RECBANDITS_SHADOW_POLICY_PARAMS`` and was refused for ThompsonSampling (found by a README
    check). A table variable that is not JSON is said by name and value (pydantic-settings
    said 'error parsing value for field "policy_params" from source "EnvSettingsSource"').
    """

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any,
                            value_is_complex: bool) -> Any:
        # A setting the sources above set (the keyword arguments) is not read here at all,
        # before its variable is decoded: an invalid table variable refused
        # Settings(policy_params={}) while an invalid integer variable under a keyword was
        # ignored (found in review). None: no value from this source.
        if field_name in self.current_state:
            return None
        return super().prepare_field_value(field_name, field, value, value_is_complex)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        if get_origin(field.annotation) is dict:  # a table: the rule of json_object
            return json_object(f"{self.env_prefix}{field_name.upper()}", value)
        return super().decode_complex_value(field_name, field, value)

    def __call__(self) -> dict[str, Any]:
        try:
            values = super().__call__()
        except SettingsError as exc:  # pydantic-settings wraps every error of a variable
            if isinstance(exc.__cause__, JsonTableError):
                raise exc.__cause__ from None
            raise
        return {name: self._number(name, value) for name, value in values.items()}

    def _number(self, name: str, value: Any) -> Any:
        """A number setting's variable read by its type's text rule (:func:`_text_rule`), the
        refusal naming the variable, for integers, floats and durations alike (the float and
        duration ones named only the field, found in review).
        """
        rule = _text_rule(self.settings_cls.model_fields[name])
        if rule is None or not isinstance(value, str):
            return value
        try:
            return rule(value)
        except ValueError as exc:
            raise NumberVariableError(f"{self.env_prefix}{name.upper()}={short_repr(value)}: "
                                      f"{exc}") from None


class Settings(BaseSettings):
    """Configuration of the recommendation service.

    Every field can be set by the environment variable ``RECBANDITS_<FIELD>`` (for example
    ``RECBANDITS_DB=postgresql+psycopg://...`` or ``RECBANDITS_ARMS=svd,popularity``).
    A duration setting (a :data:`Duration`: ``retention_s``, ``retrain_every``, ...) takes
    seconds or text with a unit, ``"90d"`` (:func:`serving.durations.parse_duration`).

    Attributes
    ----------
    data : path or None
        Folder holding ``ml-100k/`` (``RECBANDITS_DATA``); None uses the MovieLens loader's
        search (user cache, then download).
    dataset : str
        ``movielens`` (100K), ``ml-100k``, ``ml-1m``, ``ml-10m``, ``ml-20m``, ``ml-25m``,
        ``ml-32m`` or ``synthetic``.
        What the arms are fit on: a MovieLens release (``movielens`` is 100K; the larger ones
        are downloaded once, see :func:`arms.data.load_movielens`), or
        :func:`arms.data.make_synthetic` with
        ``synthetic_users`` x ``synthetic_items`` and ``synthetic_ratings`` ratings (seed
        ``seed`` or 0) — small and instant, for tests and demos without the data.
    state_dir : path or None
        Where the SQLite file and the fitted arms live; default the user's state directory,
        ``$XDG_STATE_HOME/recbandits`` (``~/.local/state/recbandits`` when unset), never inside
        ``data``, which may be read-only or shared.
    db : str or None
        SQLAlchemy URL of the store; default an SQLite file ``<state_dir>/recbandits.db`` in WAL
        mode. ``postgresql+psycopg://user@host:port/db`` for several workers or hosts.
    arms : list of str
        Arm names of :mod:`arms.registry`, in policy order (``svd``, ``sequential``,
        ``autoencoder``, ``dae``, ``popularity``, ``random``); a deprecated alias is replaced by
        its canonical name.
    arm_params : dict
        Hyper-parameters by arm name, over the registry's, used when the arms are first fitted
        (a ``[arm_params.<arm>]`` table in the settings file, or ``RECBANDITS_ARM_PARAMS`` as
        JSON), e.g. ``{"popularity": {"half_life": 604800}}`` for popularity counts that decay
        with a one-week half-life, or ``{"cooccurrence": {"window": 20}}``. A retrain keeps them.
        The co-occurrence arm's ``max_gap`` defaults to ``retention_s`` (:meth:`fit_params`).
    cold_start_arm : str
        Arm (a registry name) whose popularity ranking serves users unknown to the arms; such
        decisions are logged with propensity 1 and never update the policy.
    policy : str
        The bandit policy (``RECBANDITS_POLICY``): one of
        :data:`serving.policy.SERVABLE_POLICIES` (``ThompsonSampling`` by default,
        ``DiscountedThompsonSampling``, ``EpsilonGreedy``, ``KLUCB``, ``LinTS``, ``LinUCB``,
        ``SlidingWindowThompsonSampling``, ``UCB1``).
    policy_params : dict
        Hyper-parameters of that policy class (keyword arguments, e.g. ``{"scale": 0.5}`` for
        LinTS; ``RECBANDITS_POLICY_PARAMS`` as JSON, or a ``[policy_params]`` table in the
        settings file). Contextual policies get ``n_features`` from the feature set.
    slate_mode : {"single", "multileave"}
        ``single`` (default): one arm ranks a request's slate. ``multileave``
        (``RECBANDITS_SLATE_MODE``, ``recbandits serve --slate-mode multileave``): the slate
        mixes the rankings of ``multileave_arms`` arms by team draft and each rewarded event
        credits the arm that contributed its item (:mod:`serving.multileave`); the policy must
        be ``ThompsonSampling``, whose Beta statistics choose the set.
    multileave_arms : int
        Arms per multileaved slate, ``m`` (default 2; at least 2 and at most the number of
        arms; a request's ``k`` must be at least ``m``).
    exploration_floor : float
        Least propensity of every arm, from 0 (default: none) to ``1 / len(arms)``: the
        policy's probabilities mixed with uniform, ``floor + (1 - K floor) p``, drawn from and
        logged as every decision's pmf, so off-policy evaluation has support for every arm
        (``RECBANDITS_EXPLORATION_FLOOR``). Single-arm slates only.
    holdout_share : float
        Share of policy requests served by ``holdout_baseline`` instead of the policy, within
        ``[0, 1)`` (default 0: none; ``RECBANDITS_HOLDOUT_SHARE``, ``serve --holdout-share``):
        the decision logs the mixture ``s * baseline + (1 - s) * policy`` as its pmf and is
        marked held out or not in its policy JSON (:mod:`serving.holdout`). Single-arm slates
        only.
    holdout_baseline : str
        ``uniform`` (default) or the name of a served arm: what serves the held-out requests.
        An arm is refused with an ``exploration_floor`` (the other arms' logged propensities
        would fall below the floor; :mod:`serving.holdout`).
    drift_detector : {"PageHinkley", "CUSUM", "none"}
        The change detector watching each arm's reward stream (default ``PageHinkley``;
        ``none``: no detector, the sliding-window rates still shown; :mod:`serving.drift`).
    drift_threshold, drift_delta : float or None
        The detector's alarm level and allowance (None: the class's lab-chosen defaults,
        23 and 0.01 for Page-Hinkley, 16 and 0.05 for CUSUM; ``bench/drift_detection.py``).
    drift_min_samples : int or None
        Observations of an arm before it may alarm (None: the class's default, 30 or 200).
    drift_windows : list of int
        Sizes of the sliding windows of decided outcomes per arm whose reward rate
        ``/metrics`` and ``GET /policy`` show (default ``100,1000``).
    posterior_carryover : {"carry", "reset", "discount"}
        What a refitted arm's policy statistics start from when a new model version starts
        being served (a retrain, a promotion, a rollback; ``RECBANDITS_POSTERIOR_CARRYOVER``):
        ``carry`` (default) keeps them, ``reset`` returns them to the prior, ``discount``
        keeps a share ``carryover_discount`` of their evidence (Beta: ``prior + gamma *
        (alpha - prior_alpha, beta - prior_beta)``; LinTS/LinUCB: ``A -> ridge I + gamma (A -
        ridge I)``, ``b -> gamma b``). Logged with the version, applied at its log position by
        the policy's fold (:mod:`serving.versions`); the arms that learn from the stream are
        never refitted, so never touched. ``SlidingWindowThompsonSampling`` takes carry or
        reset only.
    carryover_discount : float
        The share gamma kept by ``discount``, in ``(0, 1]`` (default 0.5).
    gate_enabled : bool
        Whether a retrain is gated (default true): the candidate arms and the serving arms'
        hyper-parameters are both fitted before a temporal cut of the training data and
        compared on the events after it (full-catalogue HR@10 and NDCG@10,
        :func:`arms.gate.evaluate_gate`); the candidate is served only if no arm is worse by
        more than ``gate_margin`` beyond noise.
    gate_holdout : float
        The most recent share of the training events held out by the gate (default 0.1).
    gate_holdout_s : float, optional
        Instead: hold out the events of the last ``gate_holdout_s`` seconds of the data.
    gate_margin : float
        Largest drop of HR@10 or NDCG@10 a candidate arm may show (default 0.01).
    gate_relevance : float
        The least rating (the rule book's, :data:`serving.rules.RATING_SCALE`) of a held-out
        event the gate counts as a hit (default 4, :data:`arms.metrics.POSITIVE_RATING`: a
        click, like, add to cart, purchase, rating of 4 or 5 or a long dwell; not a view's 3
        nor a dislike's 1); 1 counts every held-out event (found by attack: dislikes were
        hits, so an arm that showed disliked items scored as if they were wanted).
    gate_bootstrap : int
        Bootstrap resamples of the hold-out's users for the gate's intervals (default 200:
        the intervals' ends move by ~0.002 against 1,000, at a fifth of the time; at least
        ``bandits.ope.MIN_BOOTSTRAP``).
    shadow_policy : str or None
        A candidate policy run in **shadow mode** (:mod:`serving.shadow`): on every policy
        decision it computes its choice and its probability of every arm for the same context,
        logged in the decision's ``shadow`` column and never served; its state is the fold of
        the same outcomes under its own update rule. One of the servable policies; refused when
        it is the live policy with the same parameters (defaults filled in), and with
        multileaved slates (``RECBANDITS_SHADOW_POLICY``, ``--shadow-policy``; default None:
        no shadow). A
        promotion recorded in the store (``recbandits shadow promote``) overrides ``policy``
        and ``policy_params`` and switches off a shadow equal to the promoted policy.
    shadow_policy_params : dict
        The shadow policy's hyper-parameters, as ``policy_params`` is the live one's (the
        shared ``prior_alpha``, ``prior_beta``, ``propensity_grid`` and the exploration floor
        apply to it too, so that its probabilities are those it would serve once promoted).
    prior_alpha, prior_beta : float
        Beta prior of the Thompson Sampling policies on every arm's reward rate (used when the
        policy takes them and ``policy_params`` does not set them); within
        ``[bandits.thompson.BETA_PRIOR_MIN, BETA_PRIOR_MAX]`` (0.1 to 1e9).
    aggregation : {"earliest", "max"}
        How several feedbacks on one decision make its one reward (:mod:`serving.rules`).
    rules : dict
        What event types are worth, where it differs from :data:`serving.rules.DEFAULT_RULES`:
        ``{type: {reward, rating, session_sign, excludes, precedence}}`` (a ``[rules.<type>]``
        table in the settings file, or ``RECBANDITS_RULES`` as JSON). A reward or rating is a
        number, ``false`` (none) or a scale of the event's value ``{low, high, at_low,
        at_high}``; a precedence a number (which event's rating a (user, item) keeps).
    default_reward : float
        Reward of a decision whose window closed without rewarded feedback (default 0).
    reward_window_s : float
        Seconds after a decision during which feedback on its slate rewards its arm; a decision
        with no feedback in the window counts as reward 0, once (default 30 min).
    settle_grace_s : float
        Extra seconds before an expired decision is settled (at least ``1.5 *
        store_timeout_s``, the longest a write waits for the store before it commits or is
        refused: so feedback received inside the window but still waiting for a locked store
        decides its decision, and is never settled away).
    session_window_s : float
        Seconds of recent feedback that steer the next slates of the same user.
    retention_s : float
        Events older than this stop steering features and real-time scores, and an event
        stamped earlier is refused (422); ``recbandits purge`` may delete them (default 90 days).
    history_limit : int
        Most events of a user a request reads (the latest, within ``retention_s``): what
        excludes items, steers the session, feeds the real-time scores and the features. Older
        ones stop counting, so that no user's history can make requests slow (default 1,000).
    feature_half_life_s : float
        Half-life of the decayed event counts and genre affinities of the users' features
        (feature set ``user-v4``; default one day).
    feature_decay_step_s : float
        The features' decay is taken at the start of the user's step of this many seconds that
        holds the request's time, so a user's context (and the policy's probabilities for it)
        stays put between their events for up to a step (default 60; 0: at the request's
        time). Each user's steps start at their own phase within the step, so that users'
        contexts move at instants spread over it (``BehaviourSpec.decay_phase``).
    clock_skew_s : float
        How far in the future an event's ``timestamp`` may lie (clients' clocks drift; 422
        beyond; default 300).
    max_events_body_bytes : int
        Largest ``POST /events`` body (a batch of up to ``schemas.MAX_EVENTS`` events; 413
        beyond; default 1 MiB).
    session_strength : float
        Weight of the session adjustment in standard deviations of the arm's scores per unit of
        genre similarity (0 switches the adjustment off).
    admin_token : secret str or None
        Bearer token for ``/admin/*``, at most :data:`MAX_ADMIN_TOKEN_CHARS` characters; None
        disables the admin endpoints (403).
    seed : int or None
        Seed of the arm selection generator, 0 to :data:`arms._validation.MAX_SEED` (None:
        fresh entropy).
    retrain_every : float or None
        Retrain on its own when this many seconds have passed since the last retrain ended
        (``RECBANDITS_RETRAIN_EVERY``, ``serve --retrain-every``): seconds, or a number with a
        unit ``s``, ``m``, ``h`` or ``d`` (``"6h"``); None (default) or ``"off"``: never for
        time. Across workers and hosts one retrain runs at a time
        (:mod:`serving.retrain_trigger`).
    retrain_after_events : int or None
        Retrain on its own when at least this many events (feedback rows, any type) were
        logged after the log position the last retrain read up to
        (``RECBANDITS_RETRAIN_AFTER_EVENTS``, ``serve --retrain-after-events``); None
        (default): never for events.
    retrain_check_s : float
        How often each worker looks whether a triggered retrain is due (default 10; two
        indexed reads, no write, when none is).
    retrain_lease_s : float
        How long the retrain lease outlives its holder's last renewal (renewed every quarter
        of it while a fit runs; default 600): a worker that crashed mid-retrain blocks
        retrains for at most this long. It must exceed the longest time a holder can go
        without renewing (a fit holding the GIL, a store outage); a holder that overran it
        and lost the lease publishes nothing.
    refresh_interval_s : float
        How often each worker re-reads the posterior counts and policy version from the store.
    sweep_interval_s : float
        How often each worker settles expired decisions.
    batch_max : int
        Most writes committed in one group-commit transaction.
    commit_linger_s : float
        How long a group-commit batch stays open for more writes after its first one, unless
        ``batch_max`` are queued (SQLite with ``synchronous=NORMAL``, and PostgreSQL; default
        0.001, at most 0.1; 0: committed as soon as the writes ready in one turn of the event
        loop have joined). Writes that arrive one at a time then share a commit: less CPU a
        request (on SQLite also a third of the WAL a decision) for up to this much more latency
        each (:class:`~serving.store.GroupCommitWriter`).
    switch_interval_s : float
        Python's thread switch interval in the worker (``sys.setswitchinterval``).
    gc_full_collection_every : int
        A worker's garbage collector runs a full collection at most once per this many
        collections of its middle generation (Python's third ``gc`` threshold, whose default
        is 10; default here 1,000). A full collection scans every object made since the worker
        started (kept views, rankings, events) and pauses requests while it does: 15-25 ms
        on MovieLens 100K, 21 times in a run of ``bench/realtime_load.py``, none of which freed
        an object (the stall log). The younger collections still free the reference cycles
        requests leave.
    stall_log_ms : float
        Log (WARNING) every stall of a worker's event loop, every garbage collection and
        every group commit (lock waits included) of this many milliseconds or more, with where
        the loop was and the collections during a stall (:mod:`serving.stall_log`;
        ``RECBANDITS_STALL_LOG_MS``); default 0: off.
    propensity_grid : int
        Quadrature intervals of the Thompson samplers' selection probabilities (Beta and
        LinTS, unless ``policy_params`` sets it; default 256: see :meth:`policy_model`; LinTS
        uses them only where the arms' posterior scales differ by more than 10x, see
        :func:`bandits.gaussian.normal_probability_of_max`).
    score_cache_size : int
        Rankings each worker keeps (least recently used evicted; 0 turns the cache off): an
        arm's scores for a user (float32, 4 bytes per item, plus its sorted head of up to 256
        items; a newcomer's steered by stated genres keeps its whole order, 8 bytes per item),
        under a key of everything they depend on (the user's events, the session, a
        live arm's state: see ``ArmSet.user_ranking``). A retrain or an added item starts a
        fresh cache. Default 16,384 (about 150 MB per worker when full, on MovieLens 100K's
        1,682 items, up to ~220 MB were every entry a steered newcomer's; a key holds a
        16-byte digest of the user's arrays, not the arrays):
        enough for every arm of 3,000 users with five arms. A policy that draws
        its arm at random (LinTS) serves a returning user from any arm, so a cache smaller
        than users x arms keeps missing (4,096 entries against 943 x 5 on MovieLens 100K: 13%
        of a steady state's requests scored afresh, ~0.3 ms each).
    startup_timeout_s : float
        How long a starting worker keeps trying a store that is unavailable (locked by another
        process, its server restarting) before it gives up (default 120).
    store_timeout_s : float
        Longest wait for the store (SQLite's write lock, a PostgreSQL connection or answer)
        before a read is answered 503 with ``Retry-After``; a queued write waits up to 1.5
        times as long (:func:`serving.store.writer.longest_write_wait`) (default 10).
    max_body_bytes : int
        Largest request body accepted (413 beyond).
    log_level : {"critical", "error", "warning", "info", "debug", "trace"}
        The server's log level, in any case (default warning): uvicorn's and the service's own
        (``serving.*``: at info, e.g. which arms a worker loads and when it starts serving a new
        version). A worker's death is logged as a warning whatever the level (uvicorn says it
        at info).
    worker_healthcheck_timeout_s : int
        With several workers, seconds the server waits for a worker to answer its health ping
        before it kills the worker as hung and starts another (uvicorn's
        ``timeout_worker_healthcheck``, default 60 here). A worker answers only once it has
        imported the service: with uvicorn's 5 s, every replacement of a killed worker was
        killed again ~5 s after it started on a machine at load 12, where that import took
        8 s, and the service stayed on one worker (found by attack). The price: uvicorn pings
        its workers one after the other, so a hung worker (stopped, deadlocked) delays the
        replacement of another that died at the same time by up to this long.
    cors_origins : list of str
        Origins allowed by CORS; empty (default) sends no CORS headers.
    max_header_bytes : int
        Largest request head (request line and headers) a worker accepts: 431 and the
        connection closed beyond it, counted as the bytes arrive (default 16 KiB).
    header_timeout_s : float
        Seconds a client has to send a whole request head from its first byte (408 and closed
        after; default 10).
    body_timeout_s : float
        Seconds a client has to send a request body after its head (408 and closed after;
        default 10).
    keep_alive_timeout_s : float
        Seconds a connection may stay idle, before its first request or between requests,
        before the worker closes it (default 5).
    max_concurrency : int
        Requests in flight per worker; beyond it a request is answered 503 with
        ``Retry-After`` before the app sees it (default 256).
    stream_max : int
        Live-push streams (``GET /users/{id}/stream``) open at once per worker; 503 beyond
        (default 100).
    stream_queue : int
        Updates a stream may hold unsent; a reader that falls further behind has them dropped
        and is resynced from the log when it reads again (default 32).
    stream_poll_s : float
        How often a worker with open streams reads the log's feedback tail (default 0.05).
    stream_heartbeat_s : float
        Seconds between an idle stream's heartbeat comments (default 5).
    """

    model_config = SettingsConfigDict(env_prefix="RECBANDITS_", extra="ignore")

    data: Path | None = None
    dataset: str = "movielens"
    synthetic_users: Integer = Field(200, ge=2)
    synthetic_items: Integer = Field(300, ge=10)
    synthetic_ratings: Integer = Field(6000, ge=10)
    state_dir: Path | None = None
    db: str | None = None
    host: str = "127.0.0.1"
    port: Port = Field(8000)
    workers: Integer = Field(1, ge=1, le=64)
    arms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_ARMS))
    arm_params: dict[str, dict[str, float | int | bool | str | None]] = Field(
        default_factory=dict)
    cold_start_arm: str = "popularity"
    policy: str = DEFAULT_POLICY
    policy_params: dict[str, ParamValue] = Field(default_factory=dict)
    slate_mode: SlateMode = "single"
    multileave_arms: Integer = Field(2, ge=2)
    # Every float setting is Finite (a Duration, as every one in seconds: also at most
    # MAX_DURATION_S): see Finite and Duration.
    exploration_floor: Finite = Field(0.0, ge=0.0, le=1.0)
    holdout_share: Finite = Field(0.0, ge=0.0, lt=1.0)
    holdout_baseline: str = "uniform"
    drift_detector: DetectorName = "PageHinkley"
    drift_threshold: Finite | None = Field(None, gt=0)
    drift_delta: Finite | None = Field(None, ge=0, lt=1)
    drift_min_samples: Integer | None = Field(None, ge=1)
    drift_windows: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_WINDOWS))
    posterior_carryover: CarryoverMode = "carry"
    carryover_discount: Finite = Field(0.5, gt=0.0, le=1.0)
    gate_enabled: bool = True
    gate_holdout: Finite = Field(0.1, gt=0.0, lt=1.0)
    gate_holdout_s: Duration | None = Field(None, gt=0)
    gate_margin: Finite = Field(DEFAULT_MARGIN, ge=0.0, le=MAX_MARGIN)
    gate_relevance: Finite = Field(POSITIVE_RATING, ge=RATING_SCALE[0], le=RATING_SCALE[1])
    gate_bootstrap: Integer = Field(200, ge=MIN_BOOTSTRAP, le=MAX_BOOTSTRAP)
    shadow_policy: str | None = None
    shadow_policy_params: dict[str, ParamValue] = Field(default_factory=dict)
    # The range where Thompson Sampling's picks follow the propensities it logs (bandits).
    prior_alpha: Finite = Field(1.0, ge=BETA_PRIOR_MIN, le=BETA_PRIOR_MAX)
    prior_beta: Finite = Field(1.0, ge=BETA_PRIOR_MIN, le=BETA_PRIOR_MAX)
    aggregation: Aggregation = "earliest"
    default_reward: Finite = Field(DEFAULT_REWARD, ge=0, le=1)  # the rule book checks it too
    rules: dict[str, dict[str, RuleValue]] = Field(default_factory=dict)
    reward_window_s: Duration = Field(1800.0, gt=0)
    settle_grace_s: Duration = Field(5.0, ge=0)
    session_window_s: Duration = Field(1800.0, ge=0)
    retention_s: Duration = Field(90 * 86_400.0, gt=0)
    clock_skew_s: Duration = Field(300.0, ge=0)
    feature_half_life_s: Duration = Field(DEFAULT_HALF_LIFE_S, gt=0)
    feature_decay_step_s: Duration = Field(DEFAULT_DECAY_STEP_S, ge=0)
    history_limit: Integer = Field(1000, ge=1, le=100_000)
    max_events_body_bytes: Integer = Field(1 << 20, ge=1024)
    session_strength: Finite = Field(1.5, ge=0)
    admin_token: SecretStr | None = None
    seed: Integer | None = None
    retrain_every: OptionalDuration = Field(None, gt=0)
    retrain_after_events: Integer | None = Field(None, ge=1)
    retrain_check_s: Duration = Field(10.0, gt=0, le=3600)
    retrain_lease_s: Duration = Field(600.0, ge=1, le=86_400)
    refresh_interval_s: Duration = Field(0.2, gt=0)
    sweep_interval_s: Duration = Field(5.0, gt=0)
    batch_max: Integer = Field(512, ge=1)
    commit_linger_s: Duration = Field(0.001, ge=0.0, le=0.1)
    switch_interval_s: Duration = Field(0.0005, gt=0, le=0.1)
    gc_full_collection_every: Integer = Field(1000, ge=1, le=1_000_000)
    stall_log_ms: Finite = Field(0.0, ge=0.0, le=60_000)
    propensity_grid: Integer = Field(256, ge=2, le=MAX_PROPENSITY_GRID)
    score_cache_size: Integer = Field(16_384, ge=0)
    store_timeout_s: Duration = Field(DEFAULT_TIMEOUT_S, gt=0, le=600)
    startup_timeout_s: Duration = Field(120.0, ge=0)
    max_body_bytes: Integer = Field(16_384, ge=256)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    log_level: str = "warning"
    worker_healthcheck_timeout_s: WholeSeconds = Field(60, ge=1, le=3600)
    # The HTTP server's limits (serving.api.protocol), per worker.
    max_header_bytes: Integer = Field(16_384, ge=1024)
    header_timeout_s: Duration = Field(10.0, gt=0)
    body_timeout_s: Duration = Field(10.0, gt=0)
    keep_alive_timeout_s: Duration = Field(5.0, gt=0)
    max_concurrency: Integer = Field(256, ge=1)
    # The live push (serving.stream), per worker.
    stream_max: Integer = Field(100, ge=0)
    stream_queue: Integer = Field(32, ge=1)
    stream_poll_s: Duration = Field(0.05, gt=0, le=10)
    stream_heartbeat_s: Duration = Field(5.0, gt=0, le=300)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The keyword arguments, then the ``RECBANDITS_*`` variables (:class:`_Environment`:
        a setting given as a keyword replaces the variable whole); no ``.env`` file and no
        secrets folder are read.
        """
        return init_settings, _Environment(settings_cls)

    @field_validator("log_level", mode="before")
    @classmethod
    def _check_log_level(cls, value: object) -> object:
        # uvicorn's names (its list, not a copy), in any case as uvicorn takes them.
        if isinstance(value, str) and value.lower() in LOG_LEVELS:
            return value.lower()
        raise ValueError(f"log_level must be one of {list(LOG_LEVELS)}, got {value!r}")

    @field_validator("arms", "cors_origins", "drift_windows", mode="before")
    @classmethod
    def _split_arms(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            if info.field_name == "drift_windows":  # sizes, by the numbers' one rule: unstripped,
                # as no number takes spaces ("100, 1000" was taken, found in review)
                return [integer_text(size) for size in value.split(",") if size]
            names = list(registry.split_names(value))
            # An empty arm name is kept for the registry to refuse, as the other commands'
            # --arms are (serve --arms svd, served svd alone: found by a README check).
            value = names if info.field_name == "arms" else [name for name in names if name]
        return value

    @field_validator("arms")
    @classmethod
    def _check_arms(cls, value: list[str]) -> list[str]:
        # Canonical registry names (a deprecated alias warns), so the log and the saved arm
        # files always use one name per arm; an unknown name fails here, before any fitting.
        return list(registry.resolve_names(value))

    @field_validator("arm_params")
    @classmethod
    def _key_arm_params(cls, value: dict[str, dict[str, float | int | bool | str | None]]
                        ) -> dict[str, dict[str, float | int | bool | str | None]]:
        # Keyed by registry name, as ``arms`` are (and as the replay's arm_params): an alias
        # ({"ease": ...} with arms "ease" or "autoencoder") was refused as an arm not served;
        # an alias and its arm both named are one arm twice, the registry's refusal.
        names = registry.resolve_names(list(value), field="arm_params") if value else ()
        return dict(zip(names, value.values(), strict=True))

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        if value not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {value!r}")
        return value

    @field_validator("seed")
    @classmethod
    def _check_seed(cls, value: int | None) -> int | None:
        # The lab's one seed rule (0 to MAX_SEED): -1 was taken and failed in numpy at the
        # first fit, and a seed beyond 64 bits was taken where simulate's was refused.
        return None if value is None else check_seed(value)

    @field_validator("policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        return check_policy_name(value)

    @field_validator("shadow_policy", mode="before")
    @classmethod
    def _check_shadow_policy(cls, value: object) -> object:
        if value == "":  # RECBANDITS_SHADOW_POLICY= switches the shadow off
            return None
        if isinstance(value, str):
            try:
                return check_policy_name(value)
            except ValueError as exc:
                raise ValueError(f"shadow_policy: {exc}") from None
        return value

    @model_validator(mode="after")
    def _check_synthetic_sizes(self) -> Settings:
        # The generator's own check, when the settings are read: a start found it after
        # opening the store, with a traceback (found while testing a stop during a fit).
        if self.dataset == "synthetic":
            try:
                check_sizes(self.synthetic_users, self.synthetic_items, self.synthetic_ratings,
                            names=("synthetic_users", "synthetic_items", "synthetic_ratings"))
            except ValueError as exc:
                raise ValueError(f"synthetic_users, synthetic_items, synthetic_ratings: {exc}"
                                 ) from None
        return self

    @model_validator(mode="after")
    def _check_policy_params(self) -> Settings:
        # Built once here, so a wrong hyper-parameter fails when the settings are read (the
        # CLI's exit 2 with the message), not at the service's first request.
        self._check_policies()
        self.rule_book()  # likewise a wrong rule
        self._check_multileave()
        try:
            check_holdout(self.holdout_share, self.holdout_baseline, self.arms,
                          self.exploration_floor)
        except ArmNotServedError:
            if not _ARMS_UNCHECKED.get():
                raise
        self.drift_monitor()  # its windows and detector parameters are checked there
        if self.posterior_carryover == "discount":  # the policy's own rule (bandits')
            try:
                registered_policies()[self.policy].check_discount(self.carryover_discount)
            except ValueError as exc:
                raise ValueError(f"posterior_carryover 'discount' (carryover_discount="
                                 f"{self.carryover_discount}) is not defined for "
                                 f"{self.policy}: {exc}; or choose carry or reset") from None
        for name, params in self.arm_params.items():  # and an arm's hyper-parameter
            if name not in self.arms and not _ARMS_UNCHECKED.get():
                raise ArmNotServedError(f"arm_params names arm {name!r}, which is not served; "
                                        f"arms: {self.arms}")
            try:
                make_arm(name, seed=None, **params)._validate_params()
            except (TypeError, ValueError) as exc:
                raise ValueError(f"arm_params.{name}: {exc}") from None
        return self

    def _check_policies(self) -> None:
        """Build the live and shadow policies: their hyper-parameters fail here, not at the
        service's first request. One value per arm of the default list, when the settings
        name no arms, is an :class:`ArmNotServedError`: a command reading a store takes its
        live arms instead (:func:`serving.commands.settings_for_store`).
        """
        try:
            try:
                self.policy_model(n_features=1)
            except ValueError as exc:  # named as the shadow's are (its class kept)
                raise type(exc)(f"policy_params: {exc}") from None
            self._check_shadow()
        except PerArmLengthError as exc:
            if self.named_arms():
                raise
            if not _ARMS_UNCHECKED.get():
                raise ArmNotServedError(f"{exc}: the default arms {self.arms}; name the arms "
                                        "(--arms) or point at a store that serves as many"
                                        ) from None

    def _check_shadow(self) -> None:
        if self.shadow_policy is None:
            if self.shadow_policy_params:
                raise ValueError(f"shadow_policy_params {self.shadow_policy_params} is set but "
                                 "shadow_policy is not: name the shadow policy")
            return
        if self.slate_mode == "multileave":
            raise ValueError("shadow_policy applies to single-arm slates; slate_mode "
                             "'multileave' draws sets of arms (unset shadow_policy)")
        try:
            model = self.shadow_model(n_features=1)
        except ValueError as exc:  # its class kept (PerArmLengthError: _check_policy_params)
            raise type(exc)(f"shadow_policy_params: {exc}") from None
        if self.shadow_is_live() and model is not None:
            # The hyper-parameters compared, without the n_features=1 they were compared at
            # (the service sets it from its feature set: "n_features: 1" misled, found by attack).
            compared = {k: v for k, v in model.identity()["params"].items()
                        if k not in SET_BY_THE_SERVICE}
            raise ValueError(f"shadow_policy {self.shadow_policy!r} with parameters "
                             f"{self.shadow_policy_params} is the live policy itself "
                             f"({self.shadow_policy} {compared}): a shadow must differ from "
                             "the live policy in its class or parameters")

    @property
    def stall_log_s(self) -> float | None:
        """``stall_log_ms`` in seconds, the unit of the stall log and the writer; None when off."""
        return self.stall_log_ms / 1000 if self.stall_log_ms else None

    def shadow_is_live(self) -> bool:
        """Whether the shadow policy is the live one: the same class and the same
        hyper-parameters once the defaults are filled in (``{"scale": 1.0}`` is LinTS's
        default, ``{}``).
        """
        model = self.shadow_model(n_features=1)
        return (model is not None
                and model.identity() == self.policy_model(n_features=1).identity())

    def _check_multileave(self) -> None:
        if self.slate_mode != "multileave":
            return
        if self.exploration_floor:
            raise ValueError(f"exploration_floor={self.exploration_floor} applies to "
                             "single-arm slates; slate_mode 'multileave' draws sets of arms "
                             "(set exploration_floor to 0)")
        if self.holdout_share:
            raise ValueError(f"holdout_share={self.holdout_share} applies to single-arm "
                             "slates; slate_mode 'multileave' draws sets of arms (set "
                             "holdout_share to 0)")
        if self.multileave_arms > len(self.arms):
            raise ValueError(f"multileave_arms={self.multileave_arms} is more than the "
                             f"{len(self.arms)} arms served ({self.arms}); allowed: 2 to "
                             f"{len(self.arms)}")
        # The policy's own question (multileave_view asks it too): every Beta policy keeps the
        # per-arm statistics the multileaved sets are drawn from; the discounted and windowed
        # ones fold each (decision, arm) outcome as one observation, as ThompsonSampling does.
        if not registered_policies()[self.policy].beta_posterior:
            beta = [n for n in SERVABLE_POLICIES if registered_policies()[n].beta_posterior]
            raise ValueError(f"slate_mode 'multileave' draws its sets of arms from a Beta "
                             f"posterior per arm; policy must be one of {beta}, got "
                             f"{self.policy!r}")

    @field_validator("cold_start_arm")
    @classmethod
    def _check_cold_start_arm(cls, value: str) -> str:
        return registry.resolve(value).name

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Refused at start: a longer token was accepted, and every request carrying it was
        # refused (found by attack: 422 on every admin route, rebuild-state "not compared").
        if value is None or not value.get_secret_value():
            # Empty (RECBANDITS_ADMIN_TOKEN=): unset, admin disabled (403); it was a token no
            # header could carry, so every admin request got 401 (found by attack).
            return None
        token = value.get_secret_value()
        if len(token) > MAX_ADMIN_TOKEN_CHARS:
            raise ValueError(f"admin_token must be at most {MAX_ADMIN_TOKEN_CHARS} characters, "
                             f"got {len(token)}")
        # A token no request can carry as sent: the header's value is stripped, and its bytes
        # are not UTF-8 for every client (found by attack: "t " and "tö" locked admin out).
        if token != token.strip() or not (token.isascii() and token.isprintable()):
            raise ValueError("admin_token must be printable ASCII without leading or trailing "
                             "spaces (an Authorization header carries it as sent)")
        return value

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Settings:
        """Settings from a TOML file (keys are field names), then ``overrides``.

        ``RECBANDITS_*`` variables still apply to the fields neither sets. Raises
        ``ValueError`` naming the file when it cannot be read or parsed, and pydantic's
        ``ValidationError`` for an unknown or invalid value.
        """
        return cls(**{**cls.read_file(path), **overrides})

    @classmethod
    def read_file(cls, path: str | Path) -> dict[str, Any]:
        """The values of a TOML settings file, by setting (unchecked): what it sets.

        Raises
        ------
        ValueError
            The file cannot be read or parsed, or names an unknown setting; the message names
            the file.
        """
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        # (UnicodeDecodeError too: a file that is not UTF-8 was Python's words alone, naming no
        # file; found by attack. ValueError too, which TOMLDecodeError and UnicodeDecodeError
        # are: tomllib raises a bare one for an integer past Python's 4,300 digits.)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the settings file {str(path)!r}: {exc}") from exc
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"settings file {str(path)!r}: unknown settings {unknown}; known: "
                             f"{sorted(cls.model_fields)}")
        return values

    def named_arms(self) -> bool:
        """Whether these settings name their arms (``--arms``, ``RECBANDITS_ARMS``, the settings
        file or a keyword), rather than take the default list.
        """
        return "arms" in self.model_fields_set

    def with_arms(self, arms: Sequence[str]) -> Settings:
        """These settings with ``arms`` served, validated again: the settings that name arms
        (``arm_params``, ``holdout_baseline``, ``multileave_arms``, ...) must fit them.

        Raises
        ------
        pydantic.ValidationError
            A setting does not fit ``arms``.
        """
        return type(self).model_validate({**self.model_dump(), "arms": list(arms)})

    def fit_params(self) -> dict[str, dict[str, float | int | bool | str | None]]:
        """The hyper-parameters the arms are fitted with, by arm: ``arm_params``, with the
        co-occurrence arm's ``max_gap`` set to ``retention_s`` unless given, so that an event
        past retention forms no pair (found in review: a user's window paired with their next
        event months later at full weight). A hyper-parameter, saved with the arm: every fold
        of the log (the workers', a purge's, ``rebuild-state``'s) gives the same state
        whatever settings it runs with.
        """
        params = {name: dict(values) for name, values in self.arm_params.items()}
        if "cooccurrence" in self.arms:
            params.setdefault("cooccurrence", {}).setdefault("max_gap", self.retention_s)
        return params

    def policy_model(self, n_features: int | None) -> PolicyModel:
        """The served policy's model: ``policy`` with ``policy_params`` (plus the shared
        ``prior_alpha``/``prior_beta``/``propensity_grid`` where the class takes them).
        """
        return self._model(self.policy, self.policy_params, n_features)

    def shadow_model(self, n_features: int | None) -> PolicyModel | None:
        """The shadow policy's model (``shadow_policy`` with ``shadow_policy_params``, the
        shared parameters and the exploration floor as :meth:`policy_model`); None without one.
        """
        if self.shadow_policy is None:
            return None
        return self._model(self.shadow_policy, self.shadow_policy_params, n_features)

    def _model(self, name: str, own: dict[str, float | int | bool | list[float] | None],
               n_features: int | None) -> PolicyModel:
        """Policy ``name`` with the shared parameters its class takes, then ``own``."""
        # The probabilities are computed for every context (LinTS: on requests) and for
        # every snapshot that folds new outcomes (up to 1 / refresh_interval_s times a second
        # in every worker): 256 intervals cost 0.38 ms against 1.46 ms for 2048 (LinTS, 4
        # arms, d = 53) and 5.8 ms against 43.5 ms (Beta TS, 5 arms, 20,000 outcomes; the
        # pmfs differ by 3e-5). The propensity logged is still exactly the probability the
        # arm was drawn with (the service samples from the computed pmf); the grid only
        # bounds how far that pmf is from the policy's own (pi / 1024 at most).
        params = with_shared_params(name, own, prior_alpha=self.prior_alpha,
                                    prior_beta=self.prior_beta,
                                    propensity_grid=self.propensity_grid)
        return PolicyModel(name, self.arms, params=params, n_features=n_features,
                           floor=self.exploration_floor)

    def holdout(self) -> Holdout | None:
        """The live holdout (:mod:`serving.holdout`), None when ``holdout_share`` is 0."""
        if not self.holdout_share:
            return None
        return Holdout(self.holdout_share, self.holdout_baseline, self.arms)

    def drift_monitor(self) -> DriftMonitor:
        """A fresh drift monitor of the arms (:mod:`serving.drift`) with these settings."""
        params = {"threshold": self.drift_threshold, "delta": self.drift_delta,
                  "min_samples": self.drift_min_samples}
        return DriftMonitor(self.arms, self.drift_detector,
                            {k: v for k, v in params.items() if v is not None},
                            windows=self.drift_windows)

    def rule_book(self) -> RuleBook:
        """The rules in force (:mod:`serving.rules`): the defaults with ``rules`` applied."""
        return RuleBook(overridden_rules(self.rules), aggregation=self.aggregation,
                        default_reward=self.default_reward)

    def resolved_state_dir(self) -> Path:
        """The state folder: ``state_dir``, else ``$XDG_STATE_HOME/recbandits``, else
        ``~/.local/state/recbandits`` (created on demand by the store, not here).
        """
        if self.state_dir is not None:
            # Resolved (absolute, no "..", no symlink): the store's URL names it, and a command
            # run with another spelling of it was "another store" than the service's (found by
            # attack: rebuild-state compared nothing).
            return Path(self.state_dir).resolve()
        # The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored.
        base = os.environ.get("XDG_STATE_HOME", "")
        root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
        return root / "recbandits"

    def resolved_db_url(self) -> str:
        """The store URL: ``db`` or the default SQLite file under the state folder."""
        if self.db:
            return self.db
        return f"sqlite:///{self.resolved_state_dir() / 'recbandits.db'}"

    def to_env(self) -> dict[str, str]:
        """These settings as ``RECBANDITS_*`` variables, for worker processes to rebuild them
        (:meth:`export_env`). A setting that is None has no variable: the worker's is then
        its default, None.
        """
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if name in ("policy_params", "shadow_policy_params", "rules", "arm_params"):
                text = json.dumps(value)
            elif name in ("arms", "cors_origins", "drift_windows"):
                text = ",".join(map(str, value))
            elif name == "admin_token":
                text = self.admin_token.get_secret_value() if self.admin_token else ""
            else:
                text = str(value)
            variable = _variable(name)
            # What an environment variable cannot carry, said here, naming the setting (found
            # by attack: a NUL was a traceback of os.environ; a 247 KB cors_origins left
            # `serve --workers 2` restarting workers that could not be started).
            if "\0" in text:
                raise ValueError(f"{name}: a NUL character cannot be passed to the workers")
            if len(variable) + 1 + len(text.encode()) >= MAX_VARIABLE_BYTES:
                raise ValueError(f"{name}: {len(text.encode()):,} bytes as {variable}; the "
                                 f"workers take their settings from the environment, where a "
                                 f"variable holds less than {MAX_VARIABLE_BYTES:,} bytes")
            env[variable] = text
        return env

    def export_env(self, environ: MutableMapping[str, str]) -> None:
        """Put these settings into ``environ`` (``serve``: ``os.environ``, which its workers
        rebuild theirs from) as :meth:`to_env`'s variables, every setting's variable that
        ``environ`` held removed first, in any case of its name (pydantic-settings reads
        them so): the workers read exactly these settings.

        A setting that is None has no variable, so ``environ``'s own came back in the
        workers: ``admin_token = ""`` or ``retrain_every = "off"`` in the settings file (or
        an option) under ``RECBANDITS_ADMIN_TOKEN=...`` served the admin routes with that
        token (found in review).

        Raises
        ------
        ValueError
            A setting that a variable cannot carry (:meth:`to_env`); ``environ`` unchanged.
        """
        env = self.to_env()
        variables = {_variable(name).lower() for name in type(self).model_fields}
        for key in [key for key in environ if key.lower() in variables]:
            del environ[key]
        environ.update(env)


def _variable(name: str) -> str:
    """The ``RECBANDITS_*`` variable of setting ``name``."""
    return f"{Settings.model_config['env_prefix']}{name.upper()}"
