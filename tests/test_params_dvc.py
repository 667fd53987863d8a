"""params.yaml as DVC reads and writes it: `dvc exp run -S key=value` changes exactly that key.

DVC applies `-S` with `dvc.utils.hydra.apply_overrides` (the function `dvc exp run` calls) and
writes params.yaml back with ruamel. A YAML anchor or merge key would make it drop the change or
let it leak into another dataset, so the file has none; these tests drive DVC's own code path on
a copy of the real params.yaml and compare what `config.load` then returns for every profile and
dataset.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dualat import config

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"

apply_overrides = pytest.importorskip("dvc.utils.hydra").apply_overrides

# one key in every section, with a valid new value computed from the old one
CHANGES = {
    "data": ("data.n_test", lambda v: v + 7),
    "model": ("model.widen_factor", lambda v: v + 1),
    "stage1": ("stage1.epochs", lambda v: v + 1),
    "ratio": ("ratio.ood_attack.steps", lambda v: v + 1),
    "stage2": ("stage2.sampler.T_max", lambda v: v + 1),
    "sample": ("sample.steps.dualat", lambda v: v + 1),  # a flow mapping {standard_at: .., dualat: ..}
    "evaluate": ("evaluate.ece_bins", lambda v: v + 1),
    "compute": ("compute.nproc_per_node", lambda v: 2 if v == "auto" else 2 * v),
}


def _get(tree, dotted):
    for part in dotted.split("."):
        tree = getattr(tree, part) if dataclasses.is_dataclass(tree) else tree[part]
    return tree


def _all_configs(path: Path) -> dict:
    return {
        (p, d): config.to_dict(config.load(path, dataset=d, profile=p))
        for p in config.PROFILES
        for d in config.DATASETS
    }


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: tree}


def test_params_yaml_has_no_anchors_aliases_or_merge_keys():
    events = list(yaml.parse(PARAMS.read_text()))
    anchored = [e for e in events if getattr(e, "anchor", None)]
    aliases = [e for e in events if isinstance(e, yaml.AliasEvent)]
    merges = [e for e in events if isinstance(e, yaml.ScalarEvent) and e.value == "<<"]
    assert not anchored and not aliases and not merges, (
        f"line {(anchored or aliases or merges)[0].start_mark.line + 1}: params.yaml must not use YAML anchors, "
        "aliases or merge keys (DVC's -S drops keys inside them)"
    )


@pytest.fixture(scope="module")
def baseline():
    return _all_configs(PARAMS)


@pytest.mark.parametrize("profile", config.PROFILES)
@pytest.mark.parametrize("section", sorted(CHANGES))
def test_dvc_set_param_changes_exactly_that_key(tmp_path, baseline, profile, section):
    """For a key in every section of every profile: DVC's -S changes that value for that dataset
    and nothing else, for any profile or dataset; the file keeps its comments."""
    dataset = "cifar100"  # the middle dataset: a leak to either neighbour would show
    key, new = CHANGES[section]
    old = _get(baseline[(profile, dataset)], key)
    value = new(old)
    params = tmp_path / "params.yaml"
    shutil.copy(PARAMS, params)
    apply_overrides(params, [f"{profile}.{dataset}.{key}={value}"])

    after = _all_configs(params)
    for where, cfg in after.items():
        changed = {k for k, v in _flat(cfg).items() if _flat(baseline[where])[k] != v}
        assert changed == ({key} if where == (profile, dataset) else set()), (where, changed)
    assert _get(after[(profile, dataset)], key) == value

    before_lines, after_lines = PARAMS.read_text().splitlines(), params.read_text().splitlines()
    assert len(before_lines) == len(after_lines), "DVC rewrote the layout of params.yaml"
    differing = [(a, b) for a, b in zip(before_lines, after_lines, strict=True) if a != b]
    assert len(differing) == 1, differing[:5]
    (a, b), leaf = differing[0], key.split(".")[-1]
    assert leaf in a and a.partition("#")[2] == b.partition("#")[2], (a, b)  # the comment stays


def test_dvc_rewrites_params_yaml_byte_for_byte(tmp_path):
    """params.yaml is kept in the style DVC writes (block lists, '' strings): a -S that sets a value
    to what it is leaves the file unchanged, so an experiment's diff shows only what it changed."""
    params = tmp_path / "params.yaml"
    shutil.copy(PARAMS, params)
    apply_overrides(params, ["profile=" + config.read_params(PARAMS)["profile"]])
    assert params.read_text() == PARAMS.read_text()


def test_dvc_set_param_profile_and_data_root(tmp_path, baseline):
    params = tmp_path / "params.yaml"
    shutil.copy(PARAMS, params)
    apply_overrides(params, ["profile=paper", "data_root=/data"])
    raw = config.read_params(params)
    assert (raw["profile"], raw["data_root"]) == ("paper", "/data")
    cfg = config.load(params, dataset="cifar10")
    assert cfg.profile == "paper" and cfg.data_root == "/data"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed for dvc exp run")
def test_dvc_exp_run_set_param_end_to_end(tmp_path):
    """The real command line: `dvc exp run -S ...` in a repository with the real params.yaml and a
    stage that loads every config; the README's examples change what they say."""
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        pytest.skip("dvc is not installed beside this Python")
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    (tmp_path / "dump.py").write_text(
        "import json, sys\n"
        "from dualat import config\n"
        "out = {f'{p}.{d}': config.to_dict(config.load('params.yaml', dataset=d, profile=p))\n"
        "       for p in config.PROFILES for d in config.DATASETS}\n"
        "json.dump(out, open('configs.json', 'w'), sort_keys=True)\n"
    )
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  dump:\n    cmd: python dump.py\n    deps: [dump.py]\n"
        "    params: [paper, quick, proxy]\n    outs: [{configs.json: {cache: false}}]\n"
    )
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": f"{dvc.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }

    def run(*cmd):
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"{' '.join(cmd)}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "init")
    overrides = {
        "quick.cifar10.model.depth": 16,  # issue 15: was silently dropped inside an anchored block
        "quick.cifar10.stage1.epochs": 3,
        "paper.cifar10.stage2.images": 1280000,  # the README's example
        "proxy.cifar10.evaluate.checkpoints.dualat": "external.pt",
    }
    run("dvc", "exp", "run", *[arg for k, v in overrides.items() for arg in ("-S", f"{k}={v}")])
    after = json.loads((tmp_path / "configs.json").read_text())
    before = json.loads(json.dumps({f"{p}.{d}": v for (p, d), v in _all_configs(PARAMS).items()}))
    for where, cfg in before.items():
        p, d = where.split(".")
        expected = dict(_flat(cfg))
        for k, v in overrides.items():
            prof, ds, rest = k.split(".", 2)
            if (prof, ds) == (p, d):
                expected[rest] = v
        got = _flat(after[f"{p}.{d}"])
        assert {k: got[k] for k in expected if got[k] != expected[k]} == {}, f"{p}.{d}"
