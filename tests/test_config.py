from pathlib import Path

import pytest
import yaml

from dualat import config
from dualat.config import ConfigError

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


@pytest.mark.parametrize("profile", config.PROFILES)
@pytest.mark.parametrize("dataset", config.DATASETS)
def test_every_profile_and_dataset_loads(profile, dataset):
    cfg = config.load(PARAMS, dataset=dataset, profile=profile)
    assert cfg.data.dataset == dataset and cfg.profile == profile


def test_profiles_have_the_same_keys():
    raw = yaml.safe_load(PARAMS.read_text())

    def keys(tree, prefix=""):
        out = set()
        for k, v in tree.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    assert set(config.PROFILES) <= set(raw)
    for profile in config.PROFILES:
        assert keys(raw[profile]) == keys(raw["paper"]), profile


def test_proxy_profile_is_cifar10_only():
    from dualat import pipeline

    cfg = config.load(PARAMS, dataset="cifar10", profile="proxy")
    assert (cfg.model.depth, cfg.model.widen_factor) == (16, 4) and pipeline.profile_scope(cfg) is None
    for dataset in ("cifar100", "rin"):
        reason = pipeline.missing_data(config.load(PARAMS, dataset=dataset, profile="proxy"))
        assert str(reason) == "not computed: proxy profile is CIFAR-10 only"
    assert pipeline.profile_scope(config.load(PARAMS, dataset="rin", profile="quick")) is None


def test_params_json_loads_like_params_yaml(tmp_path):
    import json

    p = tmp_path / "params.json"
    p.write_text(json.dumps(yaml.safe_load(PARAMS.read_text())))
    assert config.load(p, profile="proxy") == config.load(PARAMS, profile="proxy")


def test_paper_profile_holds_tables_3_to_5():
    c10 = config.load(PARAMS, dataset="cifar10", profile="paper")
    c100 = config.load(PARAMS, dataset="cifar100", profile="paper")
    rin = config.load(PARAMS, dataset="rin", profile="paper")
    assert (c10.model.arch, c10.model.depth, c10.model.widen_factor) == ("wrn", 34, 10)
    assert rin.model.arch == "resnet50"
    for c in (c10, c100, rin):
        assert c.stage1.optim.nesterov and c.stage1.optim.momentum == 0.9 and c.stage1.optim.weight_decay == 5e-4
        assert c.stage1.batch_size == c.stage2.batch_size == 128 and c.stage1.optim.lr == 0.1
        assert c.stage1.attack.steps == c.stage2.attack.steps == 10
    assert (c10.stage1.epochs, c10.stage1.optim.schedule, rin.stage1.epochs, rin.stage1.optim.milestones) == (
        300,
        "cosine",
        75,
        (30, 60),
    )
    assert (c10.stage2.optim.lr, c100.stage2.optim.lr, rin.stage2.optim.lr) == (0.001, 0.01, 0.001)
    assert (c10.stage1.attack.eps, c10.stage1.attack.step_size, rin.stage1.attack.eps, rin.stage1.attack.step_size) == (
        0.5,
        0.1,
        3.5,
        0.7,
    )
    assert (
        c10.stage2.sampler.T_max,
        rin.stage2.sampler.T_max,
        c10.stage2.sampler.step_size,
        rin.stage2.sampler.step_size,
    ) == (45, 18, 0.1, 0.7)
    assert c10.stage1.ema.enabled and not rin.stage1.ema.enabled
    assert (c10.sample.steps.dualat, c100.sample.steps.dualat, rin.sample.steps.dualat) == (33, 32, 13)
    assert (c10.sample.steps.ratio, c100.sample.steps.ratio, rin.sample.steps.ratio) == (31, 12, 13)
    assert (c10.sample.step_size, rin.sample.step_size) == (0.2, 8.0)


def _write(tmp_path, mutate):
    raw = yaml.safe_load(PARAMS.read_text())
    mutate(raw)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_impossible_value_names_key_and_value(tmp_path):
    p = _write(tmp_path, lambda r: r["quick"]["cifar10"]["stage2"]["sampler"].update(step_size=-0.1))
    with pytest.raises(ConfigError, match=r"stage2\.sampler\.step_size must be > 0, got -0\.1"):
        config.load(p, dataset="cifar10", profile="quick")


def test_unknown_key_is_named(tmp_path):
    p = _write(tmp_path, lambda r: r["quick"]["cifar10"]["stage1"].update(lr_warmup=5))
    with pytest.raises(ConfigError, match=r"unknown key stage1\.lr_warmup"):
        config.load(p, dataset="cifar10", profile="quick")


def test_wrong_type_and_choice_and_missing_key(tmp_path):
    p = _write(tmp_path, lambda r: r["quick"]["cifar10"]["stage1"].update(epochs="ten"))
    with pytest.raises(ConfigError, match=r"stage1\.epochs must be an integer, got 'ten'"):
        config.load(p, dataset="cifar10", profile="quick")
    p = _write(tmp_path, lambda r: r["quick"]["cifar10"]["stage2"]["sampler"].update(curriculum="fast"))
    with pytest.raises(ConfigError, match=r"stage2\.sampler\.curriculum must be one of auc, loss, got 'fast'"):
        config.load(p, dataset="cifar10", profile="quick")
    p = _write(tmp_path, lambda r: r["quick"]["cifar10"]["model"].pop("depth"))
    with pytest.raises(ConfigError, match=r"missing key model\.depth"):
        config.load(p, dataset="cifar10", profile="quick")


def test_bad_profile_dataset_and_overrides():
    with pytest.raises(ConfigError, match="profile must be one of"):
        config.load(PARAMS, profile="fast")
    with pytest.raises(ConfigError, match="dataset must be one of"):
        config.load(PARAMS, dataset="mnist")
    cfg = config.load(PARAMS, profile="quick", overrides={"stage2.sampler.step_size": 0.05})
    assert cfg.stage2.sampler.step_size == 0.05
    with pytest.raises(ConfigError, match="override stage2.sampler.nope"):
        config.load(PARAMS, profile="quick", overrides={"stage2.sampler.nope": 1})


def test_configs_are_frozen():
    cfg = config.load(PARAMS, profile="quick")
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.stage1.epochs = 3
