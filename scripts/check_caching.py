"""CI check of DVC caching: after changing one parameter, `dvc repro` reruns exactly the stages
that read it and their descendants, then the original value is restored from the run cache.

The parameter is quick.rin.evaluate.ece_bins (read by the RestrictedImageNet evaluation stages
that list `quick.rin.evaluate`), set through DVC's own `-S` code path; the only descendant of those is the report. The `preflight` and `data_sources`
stages run on every `dvc repro` by design (they fingerprint the data folder) and are not counted.
"""

import re
import subprocess
import sys
from pathlib import Path

from dvc.utils.hydra import apply_overrides

PARAMS = Path("params.yaml")
EXPECTED = {
    f"{g}@rin-{m}"
    for g in ("eval_accuracy", "eval_counterfactuals", "eval_ood")
    for m in ("standard_at", "ratio", "dualat")
} | {"report"}


def repro() -> set[str]:
    out = subprocess.run(["dvc", "repro"], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"dvc repro failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    ran = set(re.findall(r"Running stage '([^']+)'", out.stdout))
    return {s for s in ran if s != "preflight" and not s.startswith("data_sources@")}  # always_changed (dvc.yaml)


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


if __name__ == "__main__":
    main()
