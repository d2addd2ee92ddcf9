"""`edgemaas build`: for each spec, compress (train as needed), package for Lambda and invoke it locally, then make
and smoke-test every other registered target; and the two tables that show it.

Layers: build -> targets (the registry) -> pipeline. Outcomes are typed (Status, Cell); text only in the tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field


from rich.table import Table

from edgemaas.compress.cost import cost_cells
from edgemaas.compress.records import ReportCard
from edgemaas.errors import UserError
from edgemaas.packaging.awslambda.target import Invoked, build_package, smoke
from edgemaas.packaging.sources import Source, serving_variant
from edgemaas.packaging.target import BuildContext, Cell, Report, Status, quiet
from edgemaas.pipeline import compress_spec, smoke_event
from edgemaas.spec import Spec
from edgemaas.targets import built_targets
from edgemaas.units import human_size, labelled_metric
from edgemaas.workspace import Workspace

FLOAT_BASELINE = "tflite-float32"


@dataclass
class BuildRow:
    """What `edgemaas build` made of one spec."""

    name: str
    task: str = ""
    chosen: dict[str, str | None] = field(default_factory=dict)
    shipped: str | None = None
    fallback: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # gzipped bytes of the float baseline and what ships
    metrics: dict[str, str] = field(default_factory=dict)
    zip_bytes: int | None = None
    invoked: Invoked | None = None  # the Lambda package's local invoke
    error: str | None = None  # a UserError that stopped this spec's build
    warnings: list[str] = field(default_factory=list)
    cells: dict[str, Cell] = field(default_factory=dict)  # target name -> outcome, for the other targets
    cost: dict[str, str] = field(default_factory=dict)  # compress.cost.cost_cells of the gate's selection

    @property
    def ok(self) -> bool:
        return self.error is None and self.invoked is not None and self.invoked.status is Status.OK

    @property
    def problem(self) -> str:
        """Why this row failed, as the CLI's error says it."""
        return self.error or (self.invoked.text if self.invoked else "")


def build_one(spec: Spec, ws: Workspace, force: bool = False, report: Report = quiet) -> BuildRow:
    row = BuildRow(spec.name)
    try:
        card = ReportCard.from_dict(compress_spec(spec, ws, force, report))
        row.task = card.task
        row.chosen = card.gate.chosen
        row.fallback = card.gate.fallback
        row.cost = cost_cells(card.gate)
        by_name = card.rows_by_name()
        variant_dir = serving_variant(Source(spec.name, spec), ws, report=report)[0]
        for variant in (FLOAT_BASELINE, variant_dir.name):
            measured = by_name.get(variant)
            if measured is not None and measured.size_bytes:
                row.sizes[variant] = measured.gzip_bytes or 0
                row.metrics[variant] = labelled_metric(card.metric, measured.metric_value)
        row.shipped = variant_dir.name
        package = build_package(spec, ws, variant_dir, report)
        if package.layout == "image":
            row.invoked = smoke(spec, package, {}, report)
            return row
        row.zip_bytes, row.warnings = package.zipped_bytes, package.warnings
        event = smoke_event(ws, spec.name)
        context = BuildContext(spec, ws, event, report)
        for target in built_targets():
            assert target.build_cell is not None
            cell = target.build_cell(context)
            row.cells[target.name] = cell
            row.warnings = row.warnings + cell.warnings
        row.invoked = smoke(spec, package, event, report)
    except UserError as exc:
        row.error = str(exc)
    return row


def build_table(rows: list[BuildRow]) -> Table:
    table = Table(title="edgemaas build")
    for column in ("model", "gate's choice (tflite / onnx)", "gzipped f32 → shipped", "held-out f32 → shipped",
                   "zip", "Lambda $/1M", "local invoke (awslambdaric)", "duration"):
        table.add_column(column)
    for row in rows:
        if row.error:
            table.add_row(row.name, "-", "-", "-", "-", "-", f"[red]{row.error}[/red]", "-")
            continue
        chosen = " / ".join(f"{v or '-'}" + (" [red](float: none passed)[/red]" if f in row.fallback else "")
                            for f, v in sorted(row.chosen.items(), key=lambda kv: kv[0] != "tflite"))
        invoked = row.invoked
        table.add_row(
            row.name, chosen,
            f"{_kb(row.sizes.get(FLOAT_BASELINE))} → {_kb(row.sizes.get(row.shipped or ''))}",
            f"{row.metrics.get(FLOAT_BASELINE, '-')} → {row.metrics.get(row.shipped or '', '-')}",
            human_size(row.zip_bytes),
            cost_text(row.cost),
            _shown(invoked.status, invoked.text) if invoked else "",
            f"{invoked.duration_ms:.1f} ms" if invoked and invoked.duration_ms is not None else "-",
        )
    return table


def targets_table(rows: list[BuildRow]) -> Table:
    targets = built_targets()
    table = Table(title="edgemaas build: edge, microcontroller and phone targets (dist/<model>/<target>/)")
    table.add_column("model")
    for target in targets:
        table.add_column(target.column)
    for row in rows:
        if not row.cells:
            continue
        cells = [row.cells.get(t.name) for t in targets]
        table.add_row(row.name, *(_shown(c.status, c.text) if c else "-" for c in cells))
    return table


def cost_text(cells: dict[str, str]) -> str:
    """The build table's cost cell: per-architecture $ per 1M requests at the priced memory; "-" when unpriced."""
    if not cells:
        return "-"
    lines = [f"{arch} {cells[arch]}" for arch in ("x86_64", "arm64") if arch in cells]
    return "\n".join(lines + [f"at {cells['memory']}"] if "memory" in cells else lines) or "-"


def _shown(status: Status, text: str) -> str:
    return text if status is Status.OK else f"[red]{text}[/red]"


def _kb(size: int | None) -> str:
    return f"{size / 1024:.1f} KB" if size else "-"


def collected_warnings(rows: list[BuildRow]) -> dict[str, list[str]]:
    """Each warning once, with the models it came from."""
    warnings: dict[str, list[str]] = {}
    for row in rows:
        for warning in row.warnings:
            warnings.setdefault(warning, []).append(row.name)
    return warnings


