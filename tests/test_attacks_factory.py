"""make_attack: the one way to build an attack by name; defaults live on the classes only."""
import argparse
import dataclasses

import pytest
import torch

from geoaudit._errors import InputError
from geoaudit.attacks import ATTACKS, FGSM, PGD, AttackResult, PerceptualDRO, SSIMNewton, make_attack
from geoaudit.commands import attack as attack_cmd


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_make_attack_defaults_are_the_class_defaults(name):
    built = make_attack(name, cost="ssim") if name == "perceptual" else make_attack(name)
    direct = ATTACKS[name](cost="ssim") if name == "perceptual" else ATTACKS[name]()
    assert built._params() == direct._params()


def test_documented_defaults():
    p = PerceptualDRO("ssim")
    assert (p.steps, p.step_size, p.lam, p.cost_every, p.confidence) == (100, 0.1, 1.0, 5, 0.0)  # section 3.2
    assert (p.cost_schedule, p.cost_scale) == ("first-step", "ssim")
    assert (PGD().eps, PGD().step_size, PGD().steps, PGD().norm) == (1.0, 0.25, 10, "l2")
    assert PGD(norm="linf").eps == pytest.approx(8 / 255)
    assert FGSM().eps == pytest.approx(8 / 255) and SSIMNewton().eps == 1.0


def _cli_args(method, **given):
    parser = argparse.ArgumentParser()
    attack_cmd.register(parser.add_subparsers())
    argv = ["attack", "--data", "d", "--out", "o", "--model", "m", "--method", method]
    for k, v in given.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return parser.parse_args(argv)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_cli_builds_through_make_attack_with_class_defaults(name, monkeypatch):
    calls = []
    import geoaudit.attacks as attacks

    real = attacks.make_attack
    monkeypatch.setattr(attacks, "make_attack", lambda n, **p: calls.append((n, p)) or real(n, **p))
    extra = {"cost": "ssim"} if name == "perceptual" else {}
    built = attack_cmd.build_attack(_cli_args(name, **extra))
    assert [n for n, _ in calls] == [name]
    expected = make_attack(name, **extra)
    params = dict(built._params())
    if name == "pgd":  # the CLI seeds the random start for reproducible runs
        assert params.pop("random_state") == 0
        params["random_state"] = None
    assert params == expected._params()


def test_cli_options_reach_the_attack():
    a = attack_cmd.build_attack(_cli_args("perceptual", cost="ssim", lam=0.3, cost_schedule="paper",
                                          cost_scale="raw", steps=7))
    assert (a.lam, a.cost_schedule, a.cost_scale, a.steps) == (0.3, "paper", "raw", 7)
    with pytest.raises(InputError, match="cost_scale"):
        attack_cmd.build_attack(_cli_args("perceptual", cost="ssim", cost_scale="x"))


def test_make_attack_rejects_unknown_parameters():
    with pytest.raises(InputError, match="Unknown pgd attack parameter"):
        make_attack("pgd", lam=1.0)


def test_attack_result_is_immutable():
    res = AttackResult(images=torch.zeros(2, 1, 4, 4), success=torch.tensor([True, False]),
                       steps=torch.tensor([1, 2]), margins=torch.tensor([0.5, -0.1]), seconds=0.1,
                       method="pgd", params={"eps": 1.0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.seconds = 2.0
    with pytest.raises(TypeError):
        res.params["eps"] = 2.0
    assert res.to_dict()["success_rate"] == 0.5 and "success rate 0.500" in res.summary()
