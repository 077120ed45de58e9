"""A readable evaluation report for a model version: report.md and confusion_matrix.png.

metrics.json holds the numbers for machines; this renders the same numbers for the person
deciding whether to promote the version, next to the classical baseline and any exported
variants (INT8, FP16, ...). Output depends only on the inputs, so reruns give identical files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPORT_FILE = "report.md"
CONFUSION_FILE = "confusion_matrix.png"
MISSING = "—"

# meta keys shown first, in this order, with their headings; other scalar keys follow.
META_FIELDS = (
    ("model_name", "Model"),
    ("version", "Version"),
    ("task", "Task"),
    ("created_at", "Created"),
    ("base_model", "Base model"),
    ("data", "Data"),
    ("data_fingerprint", "Data fingerprint"),
)
# Variant columns with a fixed place and format; any other keys become extra columns.
VARIANT_FIELDS = ("accuracy", "macro_f1", "texts_per_s")


def _cell(value: Any) -> str:
    """Markdown-safe table cell: a pipe or newline would break the table."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table: first column left-aligned, numbers right-aligned."""
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join([":--"] + ["--:" for _ in header[1:]]) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _score(value: Any) -> str:
    return MISSING if value is None else f"{float(value):.4f}"


def _points(value: Any, reference: Any) -> str:
    """Difference of two 0-1 scores in percentage points, signed."""
    if value is None or reference is None:
        return MISSING
    return f"{(float(value) - float(reference)) * 100:+.2f} pts"


def _number(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool | int) or not isinstance(value, float):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _header(metrics: Mapping[str, Any], meta: Mapping[str, Any]) -> list[str]:
    name = meta.get("model_name", "model")
    version = meta.get("version")
    title = f"# Evaluation report: {name}" + (f" v{version}" if version is not None else "")
    lines = [title, ""]
    known = {key for key, _ in META_FIELDS}
    for key, heading in META_FIELDS:
        if meta.get(key) is not None:
            lines.append(f"- **{heading}:** `{meta[key]}`")
    for key in sorted(meta):
        value = meta[key]
        if key not in known and isinstance(value, str | int | float | bool):
            lines.append(f"- **{key}:** `{value}`")
    lines.append(f"- **Evaluation examples:** {metrics.get('examples', MISSING)}")
    return lines


def _headline(metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Headline", ""]
    rows_spec = (
        ("Accuracy", "accuracy"),
        ("Macro-F1", "macro_f1"),
        ("ECE (lower is better)", "ece"),
    )
    if baseline is None:
        lines.append(
            _table(["Metric", "Model"], [[t, _score(metrics.get(k))] for t, k in rows_spec])
        )
        lines += ["", "No baseline was scored for this version."]
        return lines
    rows = [
        [
            title,
            _score(metrics.get(key)),
            _score(baseline.get(key)),
            _points(metrics.get(key), baseline.get(key)),
        ]
        for title, key in rows_spec
    ]
    lines.append(_table(["Metric", "Model", "Baseline", "Margin"], rows))
    margin = _points(metrics.get("accuracy"), baseline.get("accuracy"))
    lines += [
        "",
        f"Margin over the classical baseline: **{margin}** accuracy, "
        f"{_points(metrics.get('macro_f1'), baseline.get('macro_f1'))} macro-F1.",
        "",
        f"Baseline: {baseline.get('setup', baseline.get('name', 'TF-IDF + logistic regression'))}"
        f", fit on {baseline.get('train_examples', MISSING)} texts in "
        f"{_number(baseline.get('fit_seconds'))} s, scored on the same split.",
    ]
    return lines


def _per_class(metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[str]:
    header = ["Label", "Precision", "Recall", "F1", "Support"]
    if baseline is not None:
        header += ["Baseline F1", "F1 margin"]
    rows = []
    base_classes = (baseline or {}).get("per_class", {})
    for label, scores in metrics.get("per_class", {}).items():
        row = [
            label,
            _score(scores.get("precision")),
            _score(scores.get("recall")),
            _score(scores.get("f1")),
            scores.get("support", MISSING),
        ]
        if baseline is not None:
            base_f1 = base_classes.get(label, {}).get("f1")
            row += [_score(base_f1), _points(scores.get("f1"), base_f1)]
        rows.append(row)
    return ["## Per class", "", _table(header, rows)]


def _confusion(metrics: Mapping[str, Any]) -> list[str]:
    labels = list(metrics.get("labels") or metrics.get("per_class", {}))
    matrix = metrics.get("confusion_matrix") or []
    rows = [[f"**{label}**", *counts] for label, counts in zip(labels, matrix, strict=False)]
    return [
        "## Confusion matrix",
        "",
        "Rows are true labels, columns predicted labels.",
        "",
        _table(["true \\ predicted", *labels], rows),
        "",
        f"![Confusion matrix]({CONFUSION_FILE})",
    ]


def _calibration(metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> list[str]:
    bins = metrics.get("ece_bins", MISSING)
    lines = [
        "## Calibration",
        "",
        f"Expected calibration error (ECE, {bins} equal-width bins over the top-class "
        "probability, each bin's |accuracy - confidence| weighted by its share of examples): "
        f"**{_score(metrics.get('ece'))}**"
        + (f" (baseline {_score(baseline.get('ece'))})" if baseline is not None else "")
        + f"; mean confidence {_score(metrics.get('mean_confidence'))}.",
    ]
    reliability = metrics.get("reliability") or []
    if reliability:
        rows = [
            [
                f"({b['lower']:.3f}, {b['upper']:.3f}]",
                b["count"],
                _score(b["confidence"]),
                _score(b["accuracy"]),
                _points(b["accuracy"], b["confidence"]),
            ]
            for b in reliability
        ]
        lines += [
            "",
            _table(["Confidence bin", "Examples", "Confidence", "Accuracy", "Gap"], rows),
        ]
    return lines


def _variants(metrics: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each variant against the evaluated model: accuracy change and speed change.

    Speed change is relative to `metrics["texts_per_s"]` when the model's own throughput was
    measured, otherwise to the first variant that reports `texts_per_s` (list it first).
    """
    reference_speed = metrics.get("texts_per_s")
    if reference_speed is None:
        reference_speed = next(
            (v["texts_per_s"] for v in variants.values() if v.get("texts_per_s")), None
        )
    extra = sorted({key for v in variants.values() for key in v} - set(VARIANT_FIELDS))
    header = ["Variant", "Accuracy", "Δ accuracy", "Macro-F1", "Δ macro-F1", "Texts/s", "Speed"]
    rows = []
    for name, values in variants.items():
        speed = values.get("texts_per_s")
        ratio = (
            f"{float(speed) / float(reference_speed):.2f}×"
            if speed is not None and reference_speed
            else MISSING
        )
        rows.append(
            [
                name,
                _score(values.get("accuracy")),
                _points(values.get("accuracy"), metrics.get("accuracy")),
                _score(values.get("macro_f1")),
                _points(values.get("macro_f1"), metrics.get("macro_f1")),
                _number(speed),
                ratio,
                *(_number(values.get(key)) for key in extra),
            ]
        )
    return [
        "## Variants",
        "",
        "Changes are against the model above; speed is throughput relative to the reference.",
        "",
        _table(header + extra, rows),
    ]


def _hybrid(metrics: Mapping[str, Any]) -> list[str]:
    """A hybrid version: the served blend beside the two models it mixes, and its weight."""
    hybrid = metrics["hybrid"]
    weight = float(hybrid.get("weight", 0.0))
    rows = [
        [
            name,
            _score(values.get("accuracy")),
            _score(values.get("macro_f1")),
            _score(values.get("ece")),
        ]
        for name, values in (
            ("transformer", hybrid.get("transformer", {})),
            ("TF-IDF", hybrid.get("tfidf", {})),
            ("blend (served)", metrics),
        )
    ]
    return [
        "## Hybrid",
        "",
        f"Served: {weight:.2f} × transformer + {1 - weight:.2f} × TF-IDF"
        f" ({hybrid.get('setup', MISSING)}). Weight chosen by "
        f"{hybrid.get('weight_chosen_by', MISSING)}.",
        "",
        _table(["Model", "Accuracy", "Macro-F1", "ECE"], rows),
    ]


def render_report(
    metrics: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    variants: Mapping[str, Mapping[str, Any]] | None,
    meta: Mapping[str, Any],
) -> str:
    """The report.md text; separate from writing so it can be checked without files."""
    sections = [
        _header(metrics, meta),
        _headline(metrics, baseline),
        _per_class(metrics, baseline),
        _confusion(metrics),
        _calibration(metrics, baseline),
    ]
    if metrics.get("hybrid"):
        sections.append(_hybrid(metrics))
    if variants:
        sections.append(_variants(metrics, variants))
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path
) -> None:
    """Counts in every cell; colour is the row share, so small classes stay readable.

    Uses the Agg canvas directly (no pyplot), so no GUI backend or global figure state is
    involved and the PNG carries no version or time metadata.
    """
    counts = np.asarray(matrix, dtype=np.int64).reshape(len(labels), len(labels))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 2.5 + 0.9 * len(labels)
    figure = Figure(figsize=(size + 1.0, size), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of true label")
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels=list(labels), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(labels))
    axes.set_xlabel("Predicted label")
    axes.set_ylabel("True label")
    axes.set_title("Confusion matrix")
    for (row, col), count in np.ndenumerate(counts):
        colour = "white" if shares[row, col] > 0.5 else "black"
        axes.text(col, row, str(count), ha="center", va="center", color=colour)
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})


def write_report(
    version_dir: Path,
    metrics: dict[str, Any],
    baseline: dict[str, Any] | None,
    variants: dict[str, dict[str, Any]] | None,
    meta: dict[str, Any],
) -> None:
    """Write report.md and confusion_matrix.png into `version_dir` (e.g. a staging dir).

    `metrics` and `baseline` are `classification_metrics`-shaped dicts; `variants` maps a
    name such as "int8" to {accuracy, macro_f1, texts_per_s, ...}; `meta` names the version
    (model_name, version, created_at, base_model, data_fingerprint, ...).
    """
    version_dir = Path(version_dir)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / REPORT_FILE).write_text(
        render_report(metrics, baseline, variants, meta), encoding="utf-8"
    )
    labels = list(metrics.get("labels") or metrics.get("per_class", {}))
    plot_confusion_matrix(metrics["confusion_matrix"], labels, version_dir / CONFUSION_FILE)
