"""Run configuration: bundled presets, ``--set`` overrides, validation errors that name the
offending key and list the accepted values."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forwardforward.config import (
    RunConfig,
    apply_overrides,
    config_from_toml,
    from_dict,
    load_preset,
    preset_names,
    to_dict,
    validate,
)
from forwardforward.errors import ConfigError

BUNDLED = {
    "fashion-fc",
    "fflib-ffc",
    "fflib-ffnet",
    "hinton-mnist",
    "loewe-mnist",
    "mnist-quick",
    "nebullvm-progressive",
    "pff-mnist",
}


# ---------------------------------------------------------------------------------------------
# Presets


def test_preset_names_are_sorted_and_complete() -> None:
    names = preset_names()
    assert names == sorted(names)
    assert set(names) >= BUNDLED


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_validates(name: str) -> None:
    config = load_preset(name)
    assert isinstance(config, RunConfig)
    validate(config)
    assert config.name == name
    assert config.description, f"{name} has no description"
    assert config.model.depth > 0 and config.reference, f"{name}: no layers or no reference"
    assert all(w > 0 for w in config.model.layers)
    # the resolved configuration survives a round trip through plain data
    assert from_dict(RunConfig, to_dict(config)) == config


def test_preset_values_come_from_the_file() -> None:
    c = load_preset("mnist-quick")
    assert c.model.layers == [1000, 1000]
    assert c.model.activation == "relu_st"
    assert c.model.peer_weight == 0.03
    assert c.readout.kind == "probe"
    assert c.optim.name == "adam" and c.optim.schedule == "cooldown"
    assert c.negatives.kind == "hard" and c.negatives.scores == "probe"
    assert c.train.epochs == 4
    h = load_preset("hinton-mnist")
    assert h.negatives.kind == "hard" and h.readout.layers == [1, 2, 3] and h.train.seed == 1


def test_overrides() -> None:
    c = load_preset("mnist-quick", ["train.epochs=3", "model.loss=linear", "model.layers=[10, 20]"])
    assert c.train.epochs == 3
    assert c.model.loss == "linear"
    assert c.model.layers == [10, 20]
    # everything else still comes from the preset
    assert c.train.batch_size == 100
    assert c.optim.lr == 0.01
    assert c.model.activation == "relu_st"


def test_override_value_types() -> None:
    c = load_preset(
        "mnist-quick",
        [
            "model.theta=2",  # an int where a float is expected becomes a float
            "model.maximize=false",
            "optim.betas=[0.8, 0.99]",
            "baseline.optim.lr=0.5",  # a nested table
            'description="quoted string"',
            "model.norm=l2",  # a bare word is a string
            "model.goodness = 'mean_squares'",  # spaces around key and TOML value are fine
            "baseline.epochs=4",
        ],
    )
    assert c.model.theta == 2.0 and isinstance(c.model.theta, float)
    assert c.model.maximize is False
    assert c.optim.betas == [0.8, 0.99]
    assert c.baseline.optim.lr == 0.5
    assert c.baseline.optim.name == "adam"  # the rest of the table keeps its defaults
    assert c.description == "quoted string"
    assert c.model.norm == "l2"
    assert c.model.goodness == "mean_squares"
    assert c.baseline.epochs == 4
    assert load_preset("mnist-quick", ["model.theta=units"]).model.theta == "units"


def test_spaces_around_a_bare_word_are_ignored() -> None:
    """The key is stripped and a TOML value may have spaces around it, so ``key = word`` with a
    bare word must not keep the leading space (``' l2'`` is no norm)."""
    assert load_preset("mnist-quick", ["model.norm = l2"]).model.norm == "l2"
    assert load_preset("mnist-quick", ["model.loss=symba "]).model.loss == "symba"


def test_later_override_wins() -> None:
    assert load_preset("mnist-quick", ["train.epochs=3", "train.epochs=5"]).train.epochs == 5


def test_apply_overrides_builds_missing_tables() -> None:
    data: dict[str, Any] = {}
    apply_overrides(data, ["a.b.c=1", "a.d=x"])
    assert data == {"a": {"b": {"c": 1}, "d": "x"}}


def test_preset_from_a_toml_path(tmp_path: Path) -> None:
    path = tmp_path / "my-run.toml"
    path.write_text("[model]\nlayers = [7]\n[train]\nepochs = 2\n")
    c = load_preset(str(path), ["train.batch_size=5"])
    assert c.name == "my-run"
    assert c.model.layers == [7] and c.train.epochs == 2 and c.train.batch_size == 5
    assert c.optim == RunConfig().optim  # defaults for what the file leaves out


# ---------------------------------------------------------------------------------------------
# Errors


def _error(overrides: list[str], preset: str = "mnist-quick") -> str:
    with pytest.raises(ConfigError) as info:
        load_preset(preset, overrides)
    return str(info.value)


def test_unknown_option_names_the_key_and_lists_the_accepted_ones() -> None:
    msg = _error(["train.epoch=3"])
    assert "train.epoch" in msg
    for key in ("train.epochs", "train.batch_size", "train.seed", "train.schedule"):
        assert key in msg
    msg = _error(["trian.epochs=3"])
    assert "trian" in msg and "train" in msg and "model" in msg


def test_unknown_key_in_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[model]\nlayer = [7]\n")
    with pytest.raises(ConfigError, match=r"model\.layer\b.*model\.layers"):
        load_preset(str(path))


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TOML"):
        config_from_toml("[model\nlayers = 1")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ('train.epochs="x"', "train.epochs"),
        ("train.epochs=1.5", "train.epochs"),
        ("train.epochs=true", "train.epochs"),
        ("model.layers=5", "model.layers"),
        ('model.layers=[10, "a"]', "model.layers[1]"),
        ("model.maximize=1", "model.maximize"),
        ("optim.lr=fast", "optim.lr"),
        ("optim.lr=true", "optim.lr"),
        ("model.loss=3", "model.loss"),
        ("model=3", "model"),
        ("train.epochs=1979-05-27", "train.epochs"),
    ],
)
def test_wrong_type_names_the_key(override: str, key: str) -> None:
    assert key in _error([override])


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ConfigError) as info:
        load_preset("mnist-quik")
    msg = str(info.value)
    assert "mnist-quik" in msg
    for name in BUNDLED:
        assert name in msg


def test_a_missing_toml_path_is_an_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(
    ("override", "accepted"),
    [
        ("model.loss=hinge", ["threshold_softplus", "symba", "linear", "log_sigmoid"]),
        ("model.norm=batch", ["rms", "l2", "none"]),
        ("negatives.kind=easy", ["random_wrong", "all_wrong", "hard", "inverse"]),
        ("model.goodness=abs", ["sum_squares", "mean_squares"]),
        ("model.activation=tanhh", ["relu", "relu_st", "gelu"]),
        ("model.label=left", ["overwrite", "top_row", "concat"]),
        ("model.label_value=two", ["one", "max", "norm"]),
        ("model.init=xavier", ["torch", "normal_fan_in", "normal_fan_out"]),
        ("readout.kind=vote", ["goodness", "probe"]),
        ("readout.select=first", ["argmax", "argmin", "auto"]),
        ("optim.name=lbfgs", ["sgd", "adam", "adamw", "rmsprop"]),
        ("optim.schedule=step", ["constant", "cooldown", "cosine"]),
        ("train.schedule=random", ["simultaneous", "greedy"]),
        ("train.precision=fp16", ["fp32", "bf16", "auto"]),
        ("model.kind=convolutional", ["feedforward", "recurrent"]),
        ("negatives.pairing=interleave", ["sum", "concat"]),
    ],
)
def test_unknown_names_are_config_errors_listing_the_choices(
    override: str, accepted: list[str]
) -> None:
    msg = _error([override])
    assert override.split("=")[1] in msg
    for name in accepted:
        assert name in msg


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["model.layers=[]"], "model.layers"),
        (["model.layers=[10, 0]"], "model.layers"),
        (["readout.layers=[2]"], "readout.layers"),
        (["readout.layers=[-1]"], "readout.layers"),
        (["train.epochs=0"], "train.epochs"),
        (["train.epochs=-1"], "train.epochs"),
        (["negatives.replay=-1"], "negatives.replay"),
        (["negatives.shift=-1"], "negatives.shift"),
        (["negatives.blurs=-2"], "negatives.blurs"),
        (["train.batch_size=0"], "train.batch_size"),
        (["data.eval_split=val"], "val_fraction"),
        (["data.fraction=0"], "data.fraction"),
        (["data.fraction=1.5"], "data.fraction"),
        (["data.val_fraction=1"], "val_fraction"),
        (["optim.betas=[0.9]"], "optim.betas"),
        (["optim.lr=0"], "optim.lr"),
        (["optim.lr=-1"], "optim.lr"),
        (["baseline.optim.lr=0"], "baseline.optim.lr"),
        (["model.theta=big"], "model.theta"),
        (["train.schedule=greedy", "negatives.kind=hard"], "greedy_inputs = 'fresh'"),
        (
            [
                "train.schedule=greedy",
                "train.greedy_inputs=fresh",
                "negatives.kind=hard",
                "negatives.scores=probe",
            ],
            "negatives.scores = 'goodness'",
        ),
    ],
)
def test_out_of_range_values(overrides: list[str], needle: str) -> None:
    assert needle in _error(overrides)


@pytest.mark.parametrize("key", ["optim.lr", "baseline.optim.lr"])
def test_nan_learning_rate_is_refused(key: str) -> None:
    """A learning rate must be positive: ``nan`` is not, but ``nan <= 0`` is False, so a bare
    ``lr <= 0`` check lets it through."""
    assert key in _error([f"{key}=nan"])
    assert key in _error([f"{key}=-inf"])


@pytest.mark.parametrize("text", ["train.epochs", "", "just words"])
def test_override_without_equals(text: str) -> None:
    assert "key=value" in _error([text])


@pytest.mark.parametrize(
    "override", ["train.epochs.x=1", "model.layers.first=1", "description.x=1"]
)
def test_override_through_a_non_table(override: str) -> None:
    assert "not a table" in _error([override])


@pytest.mark.parametrize(
    "override",
    [
        "train.epochs=" + "9" * 5000,  # int() refuses > 4300 digits with a ValueError
        "model.layers=" + "[" * 1000 + "]" * 1000,  # deeply nested: RecursionError
    ],
    ids=["huge-integer", "deep-nesting"],
)
def test_pathological_override_values_are_config_errors(override: str) -> None:
    with pytest.raises(ConfigError):
        load_preset("mnist-quick", [override])


def test_validate_checks_a_config_built_in_code() -> None:
    config = RunConfig()
    validate(config)
    bad = dataclasses.replace(config, model=dataclasses.replace(config.model, loss="hinge"))
    with pytest.raises(ConfigError, match="hinge"):
        validate(bad)


# ---------------------------------------------------------------------------------------------
# Fuzzing: load_preset raises ConfigError or nothing

KEYS = [
    f"{section.name}.{f.name}" if dataclasses.is_dataclass(section.type) else section.name
    for section in dataclasses.fields(RunConfig)
    for f in (
        dataclasses.fields(getattr(RunConfig(), section.name))
        if dataclasses.is_dataclass(getattr(RunConfig(), section.name))
        else [section]
    )
] + ["model", "train", "baseline.optim.lr", "baseline.optim", "x.y.z", ""]

VALUES = st.one_of(
    st.text(max_size=20),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-5, 2000), max_size=4).map(str),
    st.sampled_from(
        ["true", "false", "units", "symba", "hard", "greedy", "[]", "{}", '"x"', "[1, [2]]"]
    ),
)

OVERRIDE = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), VALUES),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(OVERRIDE, max_size=4))
def test_random_overrides_raise_only_config_errors(overrides: list[str]) -> None:
    try:
        config = load_preset("mnist-quick", overrides)
    except ConfigError:
        return
    validate(config)  # what load_preset returns is valid


@given(
    schedule=st.sampled_from(["constant", "cooldown", "cosine"]),
    total=st.integers(1, 500),
    warmup=st.integers(1, 100),
    step=st.integers(0, 600),
)
def test_warmup_ramps_the_schedule_linearly(
    schedule: str, total: int, warmup: int, step: int
) -> None:
    from forwardforward.nets.base import lr_lambda

    plain, ramped = lr_lambda(schedule, total), lr_lambda(schedule, total, warmup)
    assert ramped(step) == pytest.approx(plain(step) * min(1.0, (step + 1) / warmup))
    assert 0.0 <= ramped(step) <= 1.0


def test_schedules_have_their_shapes() -> None:
    from forwardforward.nets.base import lr_lambda

    cool = lr_lambda("cooldown", 100)
    assert cool(0) == cool(49) == 1.0 and cool(75) == pytest.approx(0.5) and cool(100) == 0.0
    cos = lr_lambda("cosine", 100)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    ramp = lr_lambda("constant", 100, warmup=4)
    assert [ramp(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_negative_warmup_is_rejected() -> None:
    with pytest.raises(ConfigError, match="warmup"):
        load_preset("mnist-quick", ["optim.warmup=-1"])


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model.theta=wide", "model.theta must be"),
        ("model.theta_neg=other", "model.theta_neg must be"),
        ("model.theta=[1.0]", "1 thresholds for 2 layers"),
        ("model.theta_neg=[1.0, 2.0, 3.0]", "3 thresholds for 2 layers"),
    ],
)
def test_bad_thresholds_are_config_errors(override: str, fragment: str) -> None:
    assert fragment in _error(["model.layers=[8, 8]", override])


def test_per_layer_thresholds_are_accepted() -> None:
    c = load_preset(
        "mnist-quick", ["model.layers=[8, 8]", "model.theta=[4, 1]", "model.theta_neg=6"]
    )
    assert c.model.theta == [4.0, 1.0] and c.model.theta_neg == 6.0


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["train.augment_shift=-1"], "train.augment_shift must be >= 0"),
        (["data.dataset=sequential_mnist", "train.augment_shift=2"], "not for dataset"),
        (["train.schedule=greedy", "train.augment_shift=2"], "greedy_inputs = 'fresh'"),
        (["train.augment_rotate=-5"], "train.augment_rotate must be in [0, 180]"),
        (["train.augment_rotate=nan"], "train.augment_rotate must be in [0, 180]"),
        (["train.augment_scale=1.0"], "train.augment_scale must be in [0, 1)"),
        (["data.dataset=sequential_mnist", "train.augment_rotate=5"], "not for dataset"),
        (["train.schedule=greedy", "train.augment_scale=0.1"], "greedy_inputs = 'fresh'"),
    ],
)
def test_bad_augmentation_is_a_config_error(overrides: list[str], fragment: str) -> None:
    assert fragment in _error(overrides)
