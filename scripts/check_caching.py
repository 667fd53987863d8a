"""CI check of DVC caching: after changing one parameter, `dvc repro` reruns exactly the stages
that read it and their descendants, then the original value is restored from the run cache.
Then the same for code (dualat.code_hashes): a docstring and comment edit reruns nothing, an edit
of dualat/reports/ reruns only the report (its time is printed).

The parameter is quick.rin.evaluate.ece_bins (read by the RestrictedImageNet evaluation stages
that list `quick.rin.evaluate`), set through DVC's own `-S` code path; the only descendant of those is the report. The `preflight`, `data_sources`
and `code_hashes` stages run on every `dvc repro` by design (always_changed) and are not counted.
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from dvc.utils.hydra import apply_overrides

PARAMS = Path("params.yaml")
EXPECTED = {
    f"{g}@rin-{m}"
    for g in ("eval_accuracy", "eval_counterfactuals", "eval_ood")
    for m in ("standard_at", "ratio", "dualat")
} | {"report"}


# stages that run on every `dvc repro` by design (always_changed in dvc.yaml), not counted
ALWAYS = {
    name
    for name, s in yaml.safe_load(Path("dvc.yaml").read_text())["stages"].items()
    if s.get("do", s).get("always_changed")
}


def repro() -> set[str]:
    out = subprocess.run(["dvc", "repro"], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"dvc repro failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    ran = set(re.findall(r"Running stage '([^']+)'", out.stdout))
    return {s for s in ran if s.split("@")[0] not in ALWAYS}


def check_code_edits() -> None:
    """A docstring and a comment reruns nothing; a line of code in dualat/reports/ only the report."""
    edits = {
        Path("dualat/train.py"): lambda text: text.replace('"""', '"""(edited) ', 1) + "\n# a comment\n",
        Path("dualat/reports/__init__.py"): lambda text: text + "\n_CACHING_CHECK = 1\n",
    }
    originals = {path: path.read_text() for path in edits}
    try:
        path = Path("dualat/train.py")
        path.write_text(edits[path](originals[path]))
        if ran := repro():
            sys.exit(f"a docstring and a comment in dualat/train.py reran {sorted(ran)}; expected nothing")
        path = Path("dualat/reports/__init__.py")
        path.write_text(edits[path](originals[path]))
        t0 = time.time()
        if (ran := repro()) != {"report"}:
            sys.exit(f"a code edit in dualat/reports/ reran {sorted(ran)}; expected only report")
        print(
            f"caching ok: a docstring edit reran nothing; a reports edit reran only report ({time.time() - t0:.0f} s)"
        )
    finally:
        for path, text in originals.items():
            path.write_text(text)
    if restored := repro() - {"report"}:
        sys.exit(f"restoring the code reran unrelated stages: {sorted(restored)}")


def main() -> None:
    original = PARAMS.read_text()
    if ran := repro():
        sys.exit(f"the pipeline was not up to date before the check; ran {sorted(ran)}")
    apply_overrides(PARAMS, ["quick.rin.evaluate.ece_bins=10"])  # what `dvc exp run -S` does to params.yaml
    try:
        ran = repro()
    finally:
        PARAMS.write_text(original)
    if ran != EXPECTED:
        sys.exit(f"after changing quick.rin.evaluate.ece_bins dvc reran {sorted(ran)}, expected {sorted(EXPECTED)}")
    restored = repro()  # the original parameters: outputs come back from the run cache
    if restored - EXPECTED:
        sys.exit(f"restoring the parameter reran unrelated stages: {sorted(restored - EXPECTED)}")
    print(f"caching ok: one parameter change reran exactly {len(ran)} stages: {', '.join(sorted(ran))}")
    check_code_edits()


if __name__ == "__main__":
    main()
