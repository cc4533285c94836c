"""One registry of arms (:mod:`arms.registry`) and one list of policy ids (the bandits registry).

Environments, ``evaluate-arms`` and the service must resolve every arm name to the same class and
hyper-parameters; the experiments' policy ids must be the bandits package's registered policies;
unknown names get one readable message with a "did you mean".
"""

from __future__ import annotations

import ast
import re
import tomllib
import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

import arms
import bandits
import envs
from arms import registry
from arms.autoencoder import AutoencoderRecommender
from arms.data import make_synthetic
from arms.gate import evaluate_gate
from envs.arm_set import check_arms
from envs.factories import DRIFT_ARMS
from envs.fixed_ctr import SEED_CTR
from experiments import config as cfg
from experiments import evaluate_arms
from experiments.config import ConfigError
from serving import armset
from serving.settings import DEFAULT_ARMS as SERVED_ARMS
from serving.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
NAMES = registry.arm_names()


# ------------------------------------------------------------------------------------ arms
def _same_arm(a: arms.Recommender, b: arms.Recommender) -> bool:
    return type(a) is type(b) and a.get_params() == b.get_params()


def test_registry_names_each_arm_once():
    assert NAMES == ("svd", "sequential", "autoencoder", "dae", "popularity", "random",
                     "cooccurrence")
    assert not set(registry.ALIASES) & set(NAMES)
    assert set(registry.ALIASES.values()) <= set(NAMES)
    assert registry.ARMS["autoencoder"].params == {"variant": "dlae"}
    assert registry.ARMS["dae"].params == {"variant": "dae"}


@pytest.mark.parametrize("name", NAMES)
def test_envs_experiments_and_serving_build_the_same_arm(name):
    built = registry.make_arm(name, random_state=3)
    assert registry.name_of(built) == name
    assert _same_arm(envs.make_arm(name, random_state=3), built)
    assert _same_arm(armset.make_arm(name, seed=3), built)
    spec = evaluate_arms.default_arms()[name]
    assert spec.label == name
    evaluated = spec.build()
    assert type(evaluated) is type(built)
    assert {k: v for k, v in evaluated.get_params().items() if k != "random_state"} == {
        k: v for k, v in built.get_params().items() if k != "random_state"
    }


def test_every_registry_arm_is_known_to_evaluate_arms_and_nothing_else():
    assert tuple(evaluate_arms.default_arms()) == NAMES


def test_seed_only_reaches_arms_that_take_one():
    assert registry.make_arm("svd", random_state=7).random_state == 7
    assert registry.make_arm("svd").random_state == 0  # the class default
    registry.make_arm("popularity", random_state=7)  # takes no seed: not passed
    assert registry.make_arm("autoencoder", l2=250.0).l2 == 250.0


def test_every_default_arm_list_uses_registry_names():
    shipped = []
    for path in sorted((ROOT / "experiments" / "configs").glob("*.toml")):
        env = tomllib.loads(path.read_text(encoding="utf-8"))["env"]
        if env["id"] != "recbandits/FixedCTR-v0":  # without a dataset its arms are mere labels
            shipped.extend(env.get("params", {}).get("arms", []))
    assert "autoencoder" in shipped
    for names in (envs.DEFAULT_ARMS, DRIFT_ARMS, SERVED_ARMS, evaluate_arms.DEFAULT_ARMS,
                  tuple(SEED_CTR), tuple(shipped), (Settings().cold_start_arm,)):
        assert set(names) <= set(NAMES), names


def test_only_the_registry_builds_arms_by_class():
    # Outside arms/, no module of envs, experiments or serving names a recommender class: they
    # all go through arms.registry (a second table of name -> class is what this forbids).
    classes = {n for n in arms.__all__ if n.endswith("Recommender") and n != "Recommender"}
    offenders = []
    for package in ("envs", "experiments", "serving"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                name = getattr(node, "id", None) or getattr(node, "attr", None)
                if name in classes or (isinstance(node, ast.Constant) and node.value in classes):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name or node.value}")
    assert not offenders, offenders


def test_name_of_tells_the_autoencoder_variants_apart():
    assert registry.name_of(AutoencoderRecommender(variant="dae", hidden_units=8)) == "dae"
    assert registry.name_of(AutoencoderRecommender(l2=10.0)) == "autoencoder"


def test_old_name_ease_resolves_with_a_future_warning():
    with pytest.warns(FutureWarning, match=r"arm name 'ease' is deprecated; use 'autoencoder'"):
        model = registry.make_arm("ease")
    assert _same_arm(model, registry.make_arm("autoencoder"))
    with pytest.warns(FutureWarning):
        assert Settings(arms="svd,ease").arms == ["svd", "autoencoder"]
    with pytest.warns(FutureWarning):
        assert check_arms(["svd", "ease"]) == ("svd", "ease")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # One arm under two names; one rule and message everywhere (one-rule review: the
        # settings, the environments, the gate and the commands each had their own).
        twice = r"arms must name each arm once, got \['autoencoder'\] twice"
        with pytest.raises(ValueError, match=twice):
            check_arms(["ease", "autoencoder"])
        with pytest.raises(ValidationError, match=twice):
            Settings(arms="ease,autoencoder")
        with pytest.raises(ValueError, match=f"candidate: {twice}"):  # the gate: two arms
            evaluate_gate(make_synthetic(n_users=30, n_items=40, n_ratings=600),
                          ["ease", "autoencoder"], ["autoencoder"], holdout_fraction=0.2)
    with pytest.raises(TypeError, match="arms must hold arm names or Recommender instances"):
        check_arms([None, None])  # the type first, as before (review)
    for empty in ([], ()):
        with pytest.raises(ValueError, match=r"^arms must name at least one arm$"):
            check_arms(empty)
    with pytest.raises(ValidationError, match="arms must name at least one arm"):
        Settings(arms="")
    # An empty name is refused by the same rule, resolved or not (a README check: the
    # commands dropped it, "svd," ran svd alone), in the bandits' words.
    empty_name = r"^arms contains an empty name; arm names must be non-empty, got \['svd', ' '\]$"
    for refuse in (registry.resolve_names, registry.refuse_repeats):
        with pytest.raises(ValueError, match=empty_name):
            refuse(["svd", " "])


@pytest.mark.parametrize(
    "build",
    [lambda n: registry.make_arm(n), lambda n: envs.make_arm(n),
     lambda n: armset.make_arm(n, seed=None), lambda n: check_arms(["svd", n])],
    ids=["registry", "envs", "serving", "envs-check"],
)
def test_unknown_arm_is_one_error_with_a_suggestion(build):
    with pytest.raises(arms.UnknownArmError) as info:
        build("autoencodr")
    assert str(info.value) == (
        "unknown arm 'autoencodr'; did you mean autoencoder? "
        "Valid arms: svd, sequential, autoencoder, dae, popularity, random, cooccurrence."
    )
    assert envs.UnknownArmError is arms.UnknownArmError
    assert isinstance(info.value, ValueError)


def test_unknown_arm_in_service_settings_fails_before_fitting():
    with pytest.raises(ValidationError, match=r"unknown arm 'pagerank'\. Valid arms: svd"):
        Settings(arms="svd,pagerank")
    with pytest.raises(ValidationError, match=r"unknown arm 'populrity'; did you mean popularity"):
        Settings(cold_start_arm="populrity")


def test_arm_name_must_be_a_string():
    with pytest.raises(TypeError, match=r"an arm name must be a string, got 3 \(int\)"):
        registry.make_arm(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ policies
def test_policy_ids_are_the_bandits_registry():
    package = {n for n, c in bandits.registered_policies().items()
               if c.__module__.startswith("bandits.")}
    assert set(cfg.BANDIT_POLICY_IDS) == package
    assert (*sorted(package), cfg.HINDSIGHT_POLICY_ID) == cfg.POLICY_IDS
    assert all(cfg.BANDIT_POLICIES[n] is getattr(bandits, n) for n in package)
    assert set(cfg.CONTEXTUAL_POLICY_IDS) == {"LinUCB", "LinTS"}
    # The other modules that single out policies name them from this list.
    from experiments import plots, report

    assert set(plots.BETA_POLICY_IDS) | {report.RANDOM_POLICY_ID} <= set(cfg.BANDIT_POLICY_IDS)


def test_a_policy_subclass_outside_the_package_is_no_config_id():
    class TestOnlyPolicy(bandits.RandomPolicy):  # registers itself in the bandits registry
        pass

    assert "TestOnlyPolicy" in bandits.registered_policies()
    assert "TestOnlyPolicy" not in cfg._package_policies()


def test_labels_default_to_the_id_in_one_place():
    config = cfg.from_dict({"env": {"id": "recbandits/FixedCTR-v0"},
                            "policies": [{"id": "KLUCB"}, {"id": "UCB1", "label": "ucb"}]})
    assert config.policy_labels == [cfg.default_label("KLUCB"), "ucb"] == ["KLUCB", "ucb"]
    added = cfg.override(config, policies=["ucb", "RandomPolicy"])
    assert added.policy_labels == ["ucb", cfg.default_label("RandomPolicy")]


# ------------------------------------------------------------------------------------ messages
LABELLED = {
    "env": {"id": "recbandits/FixedCTR-v0"},
    "policies": [
        {"id": "ThompsonSampling", "label": "Thompson Sampling"},
        {"id": "UCB1", "label": "UCB1"},  # a label that is also an id
        {"id": "EpsilonGreedy", "label": "epsilon-greedy (0.1)"},
    ],
}


def test_policies_option_message_lists_labels_and_ids_apart_each_once():
    config = cfg.from_dict(LABELLED)
    with pytest.raises(ConfigError) as info:
        cfg.override(config, policies=["Thompson"])
    message = str(info.value)
    ids = ", ".join(cfg.POLICY_IDS)
    assert message == (
        "--policies: unknown policy 'Thompson'; did you mean ThompsonSampling? "
        "Labels of the config's policies: 'Thompson Sampling', 'epsilon-greedy (0.1)'. "
        f"Policy ids: {ids}."
    )
    assert "?." not in message
    assert message.count("UCB1") == 1
    for policy_id in cfg.POLICY_IDS:  # once, and the suggestion once more
        expected = 2 if policy_id == "ThompsonSampling" else 1
        assert len(re.findall(rf"\b{policy_id}\b", message)) == expected


def test_policies_option_message_without_a_close_match():
    with pytest.raises(ConfigError) as info:
        cfg.override(cfg.from_dict(LABELLED), policies=["zzz"])
    assert str(info.value).startswith("--policies: unknown policy 'zzz'. Labels of the config's")


def test_config_policy_id_message_reads_as_sentences():
    with pytest.raises(ConfigError) as info:
        cfg.from_dict({**LABELLED, "policies": [{"id": "ThompsonSamplin"}]})
    assert str(info.value) == (
        "policies[0] id: unknown policy id 'ThompsonSamplin'; did you mean ThompsonSampling? "
        f"Valid policy ids: {', '.join(cfg.POLICY_IDS)}."
    )


def test_an_unknown_hyper_parameter_is_one_message_wherever_an_arm_or_policy_is_built():
    """One check per package (arms and bandits may not import each other): the registry, a
    saved arm's parameters (Python's own words before) and a policy spec dict (the same)."""
    with pytest.raises(TypeError, match=r"^the svd arm has no hyper-parameter 'bogus'; "):
        registry.make_arm("svd", bogus=1)
    with pytest.raises(TypeError) as saved:
        registry.resolve("svd").cls.as_saved({"bogus": 1, "zeta": 2})
    assert str(saved.value).startswith("SVDRecommender has no hyper-parameter 'bogus', 'zeta'; ")
    assert "random_state" not in str(saved.value)
    from bandits.simulate import make_policy
    with pytest.raises(TypeError, match=r"^UCB1 has no hyper-parameter 'bogus'; allowed: "):
        make_policy({"policy": "UCB1", "bogus": 1}, 3)
    # The seed is taken, not listed (found in review: refused as unknown at first).
    assert make_policy({"policy": "UCB1", "random_state": 3}, 3).n_arms == 3
    # What a caller sets is refused as its own, not as Python's "got multiple values".
    from serving.offpolicy import LinearCandidate
    from serving.policy import PolicyModel
    with pytest.raises(ValueError, match=r"^linear candidate LinTS\(bogus=1\): LinTS has no "
                                         r"hyper-parameter 'bogus'; allowed: \['scale'"):
        LinearCandidate.parse("LinTS:bogus=1")  # ope --linear: before the log is read
    with pytest.raises(ValueError, match=r"LinTS: 'n_features' is set by the log"):
        LinearCandidate.parse("LinTS:n_features=3")
    for given, who in (("n_features", r"the service \(the context's dimension"),
                       ("random_state", r"the service \(its seed setting\)")):
        with pytest.raises(ValueError, match=rf"^LinTS: '{given}' is set by {who}"):
            PolicyModel("LinTS", ["a", "b"], params={given: 3}, n_features=3)
    # Accepted names pass, the seed among a saved arm's.
    made = registry.make_arm("svd", random_state=1, n_factors=7)
    assert registry.resolve("svd").cls.as_saved(made.get_params()).get_params() == \
        made.get_params()


def test_one_class_attribute_says_which_policies_are_beta_posteriors():
    """``beta_posterior`` is the one answer to "is this a Beta policy?" (found in review:
    a tuple of names in the plots, ``"successes" in state`` in the service, decided apart):
    it is true exactly for the policies with Beta statistics and per-arm Beta priors."""
    from bandits.base import registered_policies
    from experiments import plots

    beta = set()
    for name, cls in registered_policies().items():
        params = {"n_features": 2} if cls.contextual else {}
        stats = cls(["a", "b"], **params).state_.stats
        has_beta = {"successes", "failures"} <= set(stats) and {
            "prior_alpha", "prior_beta"} <= set(cls._param_names())
        assert cls.beta_posterior is has_beta, name
        beta |= {name} if has_beta else set()
    assert beta >= {"ThompsonSampling", "DiscountedThompsonSampling",
                    "SlidingWindowThompsonSampling"}
    assert set(plots.BETA_POLICY_IDS) == beta & set(cfg.BANDIT_POLICY_IDS)
