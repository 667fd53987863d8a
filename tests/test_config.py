from pathlib import Path

import pytest
import yaml

from dualat import config
from dualat import paper_values as P
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
    from dualat import datasets

    cfg = config.load(PARAMS, dataset="cifar10", profile="proxy")
    assert (cfg.model.depth, cfg.model.widen_factor) == (16, 4) and datasets.profile_scope(cfg) is None
    for dataset in ("cifar100", "rin"):
        reason = datasets.missing_data(config.load(PARAMS, dataset=dataset, profile="proxy"))
        assert str(reason) == "not computed: proxy profile is CIFAR-10 only"
    assert datasets.profile_scope(config.load(PARAMS, dataset="rin", profile="quick")) is None


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
    # T_max: the released runs' caps (CIFAR 50, Table 5 45: tests/test_released_values.py)
    assert (rin.stage2.sampler.T_max, c10.stage2.sampler.step_size, rin.stage2.sampler.step_size) == (18, 0.1, 0.7)
    assert c10.stage1.ema.enabled and not rin.stage1.ema.enabled
    assert (c10.sample.steps.dualat, c100.sample.steps.dualat, rin.sample.steps.dualat) == (33, 32, 13)
    # released configs (CIFAR-100 RATIO: Table 8 says 12, see the test below); RIN: Table 8
    assert (c10.sample.steps.ratio, c100.sample.steps.ratio, rin.sample.steps.ratio) == (31, 14, 13)
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


def test_paper_ratio_ood_attack_is_the_released_commands():
    # REFERENCE.md, "Measured against the released code": 20 steps of 0.1, eps_o = 1.0 (CIFAR)
    for dataset in ("cifar10", "cifar100"):
        a = config.load(PARAMS, dataset=dataset, profile="paper").ratio.ood_attack
        assert (a.eps, a.step_size, a.steps, a.variant, a.momentum) == (1.0, 0.1, 20, "ratio", 0.9)


def _paper_block(dataset: str) -> str:
    """The raw text of params.yaml's paper.<dataset> block, comments included."""
    paper = PARAMS.read_text().split("\nquick:\n")[0]
    start = paper.index(f"\n  {dataset}:\n")
    nxt = [paper.find(f"\n  {d}:\n", start + 1) for d in config.DATASETS]
    return paper[start : min([i for i in nxt if i > start] or [len(paper)])]


def _comment_of(block: str, start: str) -> str:
    """The comment lines just above the first line starting with `start` and the comment on it."""
    lines = block.splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip().startswith(start))
    above = []
    for line in reversed(lines[:i]):
        if not line.strip().startswith("#"):
            break
        above.append(line)
    return " ".join(above[::-1] + [lines[i].partition("#")[2]])


@pytest.mark.parametrize("dataset", config.DATASETS)
def test_paper_profile_takes_the_code_values_with_the_text_one_key_away(dataset):
    """Where paper text and released code disagree the paper profile runs the code's value; the
    text's value is named in a comment and selectable by one key (REFERENCE.md)."""
    cfg = config.load(PARAMS, dataset=dataset, profile="paper")
    block = _paper_block(dataset)
    # L_BCE: code mean over 2B; Eq. 9's sum of means is one override away
    assert cfg.stage2.sampler.bce_reduction == "mean_2b"
    assert "Eq. 9: sum_of_means" in _comment_of(block, "bce_reduction:")
    text = config.load(
        PARAMS, dataset=dataset, profile="paper", overrides={"stage2.sampler.bce_reduction": "sum_of_means"}
    )
    assert text.stage2.sampler.bce_reduction == "sum_of_means"
    # curriculum: the code raises T for the very next batch; the lag of 1 is one override away
    assert cfg.stage2.sampler.curriculum_lag == 0
    assert config.load(PARAMS, dataset=dataset, profile="paper", overrides={"stage2.sampler.curriculum_lag": 1})
    # T cap: attack.max_steps of the released runs behind each dataset's reported model (CIFAR 50;
    # RIN has none: Table 5), Table 5's value named in the comment
    assert cfg.stage2.sampler.T_max == {"cifar10": 50, "cifar100": 50, "rin": 18}[dataset]
    assert f"Table 5: {P.TABLE5[dataset]['max_pgd_steps']}" in _comment_of(block, "T_max:")
    # evaluation steps: the released configs; every Table 8 value is named beside them
    if dataset == "rin":  # no released RIN configs: Table 8
        assert (cfg.sample.steps.ratio, cfg.sample.steps.dualat) == (
            P.TABLE8["ratio"]["rin"],
            P.TABLE8["dualat"]["rin"],
        )
        return
    for method, per in P.RELEASED_SAMPLE_STEPS.items():
        assert getattr(cfg.sample.steps, method) == per[dataset], method
    comment = _comment_of(block, "steps: {")
    for method in ("ratio", "dualat"):
        assert f"{method} {P.TABLE8[method][dataset]}" in comment, method
    assert "Table 8" in comment and "standard AT is not in Table 8" in comment


def test_paper_cifar100_ratio_steps_differ_from_the_text():
    # a real difference the comment must carry: 14 (released config) vs 12 (Table 8)
    c100 = config.load(PARAMS, dataset="cifar100", profile="paper")
    assert c100.sample.steps.ratio == 14 != P.TABLE8["ratio"]["cifar100"] == 12
    comment = _comment_of(_paper_block("cifar100"), "steps: {")
    assert "ratio 12" in comment and "dualat 40" in comment  # Table 8; the CIFAR-100 eval config


def test_curriculum_lag_must_be_0_or_1(tmp_path):
    p = _write(tmp_path, lambda r: r["quick"]["cifar10"]["stage2"]["sampler"].update(curriculum_lag=2))
    with pytest.raises(ConfigError, match=r"stage2\.sampler\.curriculum_lag must be 0 or 1, got 2"):
        config.load(p, dataset="cifar10", profile="quick")


def test_a_key_written_twice_is_refused(tmp_path):
    text = PARAMS.read_text().replace("profile: quick\n", "profile: quick\nprofile: paper\n", 1)
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ConfigError, match="'profile' is written twice .* delete one"):
        config.load(tmp_path / "params.yaml")


@pytest.mark.parametrize("key", ["stage1.optim.lr", "stage1.epochs"])
def test_a_quoted_number_says_remove_the_quotes(key):
    with pytest.raises(ConfigError, match=rf"{key} is the string '3': remove the quotes \(write 3\)"):
        config.load(PARAMS, profile="quick", overrides={key: "3"})


@pytest.mark.parametrize("milestones", [[-1], [3, 2], [2, 2], [6]])
def test_milestones_must_be_increasing_epochs_within_the_run(milestones):
    with pytest.raises(ConfigError, match="stage1.optim.milestones must be"):
        config.load(PARAMS, profile="quick", overrides={"stage1.optim.milestones": milestones})
