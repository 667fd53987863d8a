"""The report: Tables 1-12 (CSV + HTML: the paper's value beside ours, the difference and a
verdict), Figures 1-8 (PNG), the model comparisons, reports/metrics.json and reports/index.html,
built only from the records the pipeline wrote (results/, models/, params.yaml, executed
notebooks). Every accuracy and AUROC reads "x ± s (n = N)" (`uncertainty`). A value that was not
computed reads `not computed: <short reason> [n]`; footnote n under the table gives the reason's
code and one sentence, the record the full provenance. No machine path appears in reports/.

Verdicts. In the `paper` profile each of our numbers with a paper value is judged against the
paper within `TOLERANCE` ("within ±t" / "outside ±t" / "not computed"). Any other profile (quick,
proxy, ...) runs other settings on fewer images, so its rows read "<profile> profile, not
comparable" and its record tables have no difference column. Rows the paper quotes from other
work read "quoted by the paper".

Layout (one module per family; `build` is the entry point of notebooks/20_report.ipynb):
  reading         records, values, not-computed reasons, training histories
  vocabulary      one name per method, data set, quantity (with its unit) and table column
  verdicts        rows, tolerances, verdicts and differences against the paper
  tables_results  Tables 1, 2, 7, 9: accuracy, robustness, generation (IS, FID, KID)
  tables_settings Tables 3-6, 8: the paper profile's settings against the paper's
  tables_ood      Tables 10-12: OOD detection (AUROC)
  uncertainty     every accuracy's and AUROC's standard error and n, shown as "x ± s (n = N)"
  provenance      where each row's model came from (trained here, external, none) and its architecture
  paths           no machine paths in the report
  tables          the registry of tables and their CSV/HTML pages with footnotes and sources
  comparisons     KID comparisons between models and against the seed images
  plotting, figures, sample_figures   Figures 1-8 and the training notebooks' curves
  proxy_section   the proxy run (scripts/gpu_proxy.sh) in the index
  metrics_file    reports/metrics.json
  model_cards     reports/models/<dataset>-<method>/: model card, RobustBench JSON, SHA256SUMS, safetensors
  index           reports/index.html and `build`

`dualat.runs` excludes this whole package from the training and evaluation code hashes.
"""

from dualat.reports.comparisons import (
    accuracy_of,
    compare_accuracy,
    compare_kid,
    comparison_text,
    comparisons,
    control_kid,
    kid_of,
)
from dualat.reports.figures import FIGURES, figure1, figure2, figure3, figure4, figure8
from dualat.reports.index import build, duration_text, hardware, record_images, stage_times, write_index
from dualat.reports.metrics_file import write_metrics
from dualat.reports.model_cards import write_model_cards
from dualat.reports.paths import public_text
from dualat.reports.plotting import plot_ablation, plot_training
from dualat.reports.provenance import architecture, origin, record_architecture, row_name, source_line
from dualat.reports.proxy_section import proxy_section
from dualat.reports.reading import (
    MODELS,
    REPORTS,
    RESULTS,
    reason_note,
    record,
    record_extra,
    record_full,
    short_reason,
    value,
)
from dualat.reports.sample_figures import figure_samples, grid_tiles, rows_by_class
from dualat.reports.tables import (
    TABLE_RECORDS,
    TABLES,
    autoattack_warnings,
    fid_protocols,
    model_sources,
    show_tables,
    table_notes,
    write_table,
)
from dualat.reports.tables_ood import table_ood
from dualat.reports.tables_results import table1, table2, table7, table9, table_accuracy_generation
from dualat.reports.tables_settings import (
    augmentation_steps,
    compare_augmentations,
    table3,
    table4,
    table5,
    table6,
    table8,
)
from dualat.reports.uncertainty import K_SIGMA, UNCERTAINTY_NOTE, binomial_se, delong_se, hanley_mcneil_se, pm_text
from dualat.reports.verdicts import (
    FIELDS,
    TOLERANCE,
    difference,
    finish_rows,
    judged,
    ours_text,
    verdict,
    verdict_rule,
    within,
)
from dualat.reports.vocabulary import (
    COLUMNS,
    DATASET_NAMES,
    FIGURE_TITLES,
    HISTORY_LABELS,
    METHOD_NAMES,
    QUANTITIES,
    SCORE_NAMES,
    TABLE_TITLES,
    history_label,
    quantity,
)

__all__ = [
    "COLUMNS", "DATASET_NAMES", "FIELDS", "FIGURES", "FIGURE_TITLES", "HISTORY_LABELS", "K_SIGMA", "METHOD_NAMES",
    "MODELS", "QUANTITIES", "REPORTS", "RESULTS", "SCORE_NAMES", "TABLES", "TABLE_RECORDS", "TABLE_TITLES",
    "TOLERANCE", "UNCERTAINTY_NOTE", "accuracy_of", "architecture", "binomial_se", "compare_accuracy",
    "delong_se", "duration_text", "hanley_mcneil_se", "history_label", "judged", "origin", "ours_text", "pm_text",
    "public_text", "reason_note", "record_architecture", "record_full", "row_name", "source_line",
    "augmentation_steps", "autoattack_warnings", "build", "compare_augmentations", "compare_kid", "comparison_text",
    "comparisons", "control_kid", "difference", "fid_protocols", "figure1", "figure2", "figure3", "figure4",
    "figure8", "figure_samples", "finish_rows", "grid_tiles", "hardware", "kid_of", "model_sources", "plot_ablation",
    "plot_training", "proxy_section", "quantity", "record", "record_extra", "record_images", "rows_by_class",
    "short_reason", "show_tables", "stage_times", "table1", "table2", "table3", "table4", "table5", "table6",
    "table7", "table8", "table9", "table_accuracy_generation", "table_notes", "table_ood", "value", "verdict",
    "verdict_rule", "within", "write_index", "write_metrics", "write_model_cards", "write_table",
]  # fmt: skip
