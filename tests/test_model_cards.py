"""Model cards (dualat.reports.model_cards): from records of three CIFAR-10 models written in a
temporary folder, reports/models/<name>/ holds a card whose model-index the Hugging Face hub's own
parser reads, a RobustBench model_info JSON, SHA256SUMS that match the files, and safetensors
weights that load back to the same model; the index links them all."""

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from dualat import config, model_io, protocol, reports
from dualat.checkpoint import save
from dualat.records import write_record
from dualat.reports import model_cards

REPO = Path(__file__).resolve().parents[1]
# The fields of RobustBench's model_info/<dataset>/<threat>/<id>.json files and their JSON types.
RB_FIELDS = {
    "link": str, "name": str, "authors": str, "additional_data": bool, "number_forward_passes": int,
    "dataset": str, "venue": str, "architecture": str, "eps": str, "clean_acc": str, "reported": str,
    "autoattack_acc": str, "footnote": str,
}  # fmt: skip
ACC = {"standard_at": (0.8123, 0.6011), "ratio": (0.8050, 0.6125), "dualat": (0.7990, 0.5950)}


def _records(root: Path, cfg: config.Config) -> dict:
    """A best.pt of a random quick-profile model and its accuracy and generation records per method."""
    models = {}
    for i, (method, (clean, robust)) in enumerate(ACC.items()):
        torch.manual_seed(i)
        model = model_io.new_model(cfg)
        sd = model.state_dict()
        ckpt = root / "models" / "cifar10" / method / "best.pt"
        save(ckpt, {"model": sd, "plain": sd, "ema": True, "config": config.to_dict(cfg)})
        acc = {"clean_acc": clean, "autoattack": {"robust_acc": robust, "clean_acc": clean, "n": 100, "warnings": []},
               "n_test": 200}  # fmt: skip
        gen = {"fid_conditional": 30.0 + i, "fid_conditional_std": 0.25, "fid_unconditional": 41.5,
               "fid_unconditional_std": None, "steps": 5, "inception_score": "not computed: no IS weights"}  # fmt: skip
        for group, metrics in (("accuracy", acc), ("generation", gen)):
            extra = {"data_provenance": {"train": "cifar10 npz"}, "model_source": f"trained here ({ckpt})"}
            write_record(root / "results" / "cifar10" / method / group / f"{group}.json", metrics,
                         config=config.to_dict(cfg), checkpoint=ckpt, extra=extra)  # fmt: skip
        models[method] = (ckpt, model.eval())
    return models


@pytest.fixture
def cards(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    cfg = config.load(tmp_path / "params.yaml", dataset="cifar10", profile="quick")
    models = _records(Path("."), cfg)
    return cfg, models, model_cards.write_model_cards()


def _front_matter(text: str) -> dict:
    import yaml

    head = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert head, "the card starts with a YAML front matter block"
    return yaml.safe_load(head.group(1))


def test_model_index_reads_as_the_hub_reads_it(cards):
    hub = pytest.importorskip("huggingface_hub.repocard_data")
    cfg, _, entries = cards
    written = {e["method"] for e in entries if e["dataset"] == "cifar10" and e["folder"] is not None}
    assert written == set(ACC)
    for method, (clean, robust) in ACC.items():
        text = (Path("reports/models") / f"dualat-cifar10-{method.replace('_', '-')}" / "README.md").read_text()
        name, results = hub.model_index_to_eval_results(_front_matter(text)["model-index"])
        assert name == f"dualat-cifar10-{method.replace('_', '-')}"
        by_type = {r.metric_type: r for r in results}
        se = 100 * (robust * (1 - robust) / 100) ** 0.5
        assert by_type["robust_accuracy"].metric_value == f"{100 * robust:.2f} ± {se:.2f}"
        assert by_type["robust_accuracy"].dataset_split == "test"
        assert by_type["accuracy"].metric_value.startswith(f"{100 * clean:.2f} ± ")
        threat = protocol.threat_model(cfg, 100)
        assert threat == "AutoAttack standard, L2, eps=0.5, n=100"
        assert threat in by_type["robust_accuracy"].metric_name
        fids = [r for r in results if r.metric_type == "fid"]
        assert {r.task_type for r in fids} == {"image-generation", "unconditional-image-generation"}
        for r in fids:  # every FID carries its protocol; the reference is the training split
            assert protocol.fid_protocol(cfg, 5, conditional=r.task_type == "image-generation") in r.metric_name
            assert r.dataset_split == "train"
        assert "41.50" == next(r.metric_value for r in fids if r.task_type.startswith("unconditional"))
        # the body states every robust number's threat model and the card's provenance facts
        body = text.split("---", 2)[2]
        assert threat in body and "quick.cifar10.stage1" in body and "data provenance" in body
        assert hashlib.sha256(Path(f"models/cifar10/{method}/best.pt").read_bytes()).hexdigest() in body


def test_robustbench_json_fields(cards):
    cfg, _, _ = cards
    for method, (clean, robust) in ACC.items():
        entry = json.loads(
            (Path("reports/models") / f"dualat-cifar10-{method.replace('_', '-')}" / "robustbench.json").read_text()
        )
        for key, tp in RB_FIELDS.items():
            assert isinstance(entry[key], tp), (key, entry[key])
        assert entry["clean_acc"] == f"{100 * clean:.2f}" and entry["autoattack_acc"] == f"{100 * robust:.2f}"
        assert entry["eps"] == "0.5" and entry["dataset"] == "cifar10" and entry["number_forward_passes"] == 1
        assert entry["architecture"] == f"WideResNet-{cfg.model.depth}-{cfg.model.widen_factor}"
        assert "not a RobustBench result" in entry["footnote"] and "L2" in entry["footnote"]
        assert entry["additional_data"] is (cfg.data.ood != "noise")


def test_sha256sums_match_and_safetensors_load_back(cards):
    cfg, models, _ = cards
    x = torch.rand(4, 3, 32, 32)
    for method, (ckpt, model) in models.items():
        folder = Path("reports/models") / f"dualat-cifar10-{method.replace('_', '-')}"
        lines = [line.split("  ", 1) for line in (folder / "SHA256SUMS").read_text().splitlines()]
        assert len(lines) == 2
        for digest, rel in lines:  # sha256sum -c semantics: paths relative to the folder
            assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == digest
        assert (folder / lines[0][1]).resolve() == ckpt.resolve()
        loaded = model_io.load_safetensors(cfg, folder / "model.safetensors")
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        from safetensors import safe_open

        with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
            meta = fh.metadata()
        assert "(x - mean) / std" in meta["normalisation"] and "not in the state dict" in meta["normalisation"]


def test_safetensors_of_another_architecture_is_refused(cards, tmp_path):
    cfg, _, _ = cards
    wide = config.load("params.yaml", dataset="cifar10", profile="quick", overrides={"model.widen_factor": 2})
    path = model_io.save_safetensors(model_io.new_model(wide).state_dict(), tmp_path / "w.safetensors", wide)
    with pytest.raises(ValueError, match=r"holds a wrn-10-2 model .* wants wrn-10-1"):
        model_io.load_safetensors(cfg, path)


def test_index_links_every_card_file(cards):
    _, _, entries = cards
    index = reports.write_index("quick", {}, {}, comps={}, images=[], cards=entries).read_text()
    for method in ACC:
        for name in ("README.md", "robustbench.json", "SHA256SUMS", "model.safetensors"):
            assert f"models/dualat-cifar10-{method.replace('_', '-')}/{name}" in index
    assert "not written" in index  # CIFAR-100 and RIN have no records here: the reason is shown


def test_fid_protocol_string():
    text = protocol.fid_protocol_text("legacy_pytorch", 50000, "cifar10", 0, 33, (0, 1, 2))
    assert text == "pytorch-fid legacy, 50K class-balanced, vs CIFAR-10 train 50K, T=33, seeds 0-2"
    assert protocol.fid_protocol_text("clean", 100, "rin", 500, None, (3,), conditional=False) == (
        "clean-fid clean, 100 unconditional, vs RestrictedImageNet train 500, seed 3"
    )
