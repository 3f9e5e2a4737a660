"""The protocol contract: typed parameters, the registry, the joint-seed generator."""

from __future__ import annotations

import pytest
import torch

from protocols import registry
from protocols.api import Input, Output, Param, ParameterError, Protocol, public_generator

TOY = Protocol(
    name="toy", version="1", summary="a toy", run=lambda s: {},
    params=(Param("epochs", int, 10, minimum=1), Param("rate", float, 0.5, above=0),
            Param("mode", str, "a", choices=("a", "b")), Param("flag", bool, False),
            Param("needed", int)),
    inputs=(Input("train"),), outputs=(Output("metrics"),),
    validate=lambda p: None if p.epochs < 100 or p.mode == "b" else "100+ epochs need mode b",
)


def test_defaults_are_filled_and_ints_count_as_floats() -> None:
    p = TOY.parameters({"needed": 3, "rate": 2})
    assert dict(p) == {"epochs": 10, "rate": 2.0, "mode": "a", "flag": False, "needed": 3}
    assert p.rate == 2.0 and isinstance(p.rate, float) and p["epochs"] == 10


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "parameter 'needed': is required (an integer)"),
        ({"needed": 1, "epochs": "ten"}, "parameter 'epochs': must be an integer >= 1, got 'ten'"),
        ({"needed": 1, "epochs": 0}, "parameter 'epochs': must be an integer >= 1, got 0"),
        ({"needed": 1, "epochs": True}, "parameter 'epochs': must be an integer"),
        ({"needed": 1, "rate": 0}, "parameter 'rate': must be a number > 0, got 0"),
        ({"needed": 1, "rate": float("nan")}, "parameter 'rate': must be a number"),
        ({"needed": 1, "mode": "c"}, "parameter 'mode': must be one of a, b, got 'c'"),
        ({"needed": 1, "flag": 1}, "parameter 'flag': must be true or false, got 1"),
        ({"needed": 1, "epoch": 3}, "parameter 'epoch': is not a parameter of toy"),
        ({"needed": 1, "epochs": 100}, "parameters: 100+ epochs need mode b"),
    ],
)
def test_bad_parameters_name_the_parameter(raw: dict, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        TOY.parameters(raw)
    assert message in str(info.value)


def test_public_generator_is_the_same_for_the_same_seed_and_purpose() -> None:
    a = torch.randperm(50, generator=public_generator(b"s" * 32, "shuffle:train"))
    b = torch.randperm(50, generator=public_generator(b"s" * 32, "shuffle:train"))
    c = torch.randperm(50, generator=public_generator(b"s" * 32, "shuffle:test"))
    d = torch.randperm(50, generator=public_generator(b"t" * 32, "shuffle:train"))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)


def test_builtins_are_registered_and_unknown_names_list_them() -> None:
    assert registry.load("logistic-regression").version == "2"
    assert registry.load("selftest").passed is not None
    with pytest.raises(registry.RegistryError) as info:
        registry.load("logistic-regresion")
    assert "registered: " in str(info.value) and "logistic-regression" in str(info.value)
    assert "smpc.protocols" in str(info.value)


def test_protocol_files(tmp_path) -> None:
    good = tmp_path / "mine.py"
    good.write_text("from protocols.api import Protocol\n"
                    "PROTOCOL = Protocol(name='mine', version='3', summary='s', "
                    "run=lambda s: {})\n")
    p = registry.load_file(good, "mine")
    assert p.version == "3" and str(good) in p.extra_sources
    with pytest.raises(registry.RegistryError, match="is protocol 'mine', not 'yours'"):
        registry.load_file(good, "yours")
    wrong = tmp_path / "wrong.py"
    wrong.write_text("PROTOCOL = 3\n")
    with pytest.raises(registry.RegistryError, match=r"is a int, not a protocols\.api\.Protocol"):
        registry.load_file(wrong, "wrong")
    broken = tmp_path / "broken.py"
    broken.write_text("import nothing_of_that_name\n")
    with pytest.raises(registry.RegistryError, match="failed to import: ModuleNotFoundError"):
        registry.load_file(broken, "broken")
    with pytest.raises(registry.RegistryError, match="not found"):
        registry.load_file(tmp_path / "absent.py", "absent")
