"""The demo's terminal view: the live summary of both nodes and the scenario's results (pure)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tandem.ha.audit import DeliveryAudit

if TYPE_CHECKING:
    from tandem.demo.scenario import StepResult

# Column widths of the live summary: long reasons wrap inside them instead of being cut,
# so the view still fits a 100-column terminal.
NODE_COLUMN_WIDTH = 44
EVENT_COLUMN_WIDTH = 72


@dataclass(frozen=True, slots=True)
class AuditTotals:
    """What the subscriber counted so far, over every stream."""

    messages: int
    lost: int
    duplicates: int
    out_of_order: int
    publisher: str | None

    @classmethod
    def of(cls, audit: DeliveryAudit) -> AuditTotals:
        last = audit.arrivals[-1].delivered.source_node if audit.arrivals else None
        return cls(audit.messages, audit.lost, audit.duplicates, audit.out_of_order, last)


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the live view shows of one node: its process and its last status answer."""

    name: str
    url: str
    pid: int | None
    priority: int
    status: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one refresh of the live summary shows."""

    nodes: tuple[NodeView, ...]
    totals: AuditTotals
    events: tuple[tuple[int, str, str], ...]  # (ts_ms, node, message), newest last
    step: str = ""


# ---- rendering (pure) ----

ROLE_STYLES = {"MASTER": "bold green", "BACKUP": "bold blue", "FAULT": "bold red"}
NODE_ROWS = (
    "role", "pid", "term", "priority", "published", "outbox depth", "watermark lag",
    "last failover",
)  # fmt: skip


def role_style(role: str) -> str:
    return next((s for r, s in ROLE_STYLES.items() if role.startswith(r)), "yellow")


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def node_cells(view: NodeView) -> dict[str, Any]:
    """One node's column of the summary, by row name."""
    from rich.text import Text

    body = view.status or {}
    role = "stopped" if view.pid is None else str(body.get("role") or "starting")
    vrrp = body.get("vrrp") or {}
    ha = body.get("ha") or {}
    reason = _fmt((ha.get("last_failover") or {}).get("reason"))
    return {
        "role": Text(role, style=role_style(role) if body else "dim"),
        "pid": _fmt(view.pid),
        "term": _fmt(body.get("term")),
        "priority": f"{_fmt(vrrp.get('priority'))} (base {view.priority})",
        "published": _fmt((body.get("publisher") or {}).get("published_total")),
        "outbox depth": _fmt((body.get("outbox") or {}).get("depth")),
        "watermark lag": _fmt(ha.get("watermark_lag")),
        # Wrapped in its column, word by word: the reason is the point of the row.
        "last failover": Text(reason, overflow="fold"),
    }


def _nodes_table(snap: Snapshot) -> Any:
    from rich.table import Table

    table = Table(title="Tandem pair", expand=False)
    table.add_column("")
    columns = [node_cells(view) for view in snap.nodes]
    for view in snap.nodes:
        table.add_column(f"{view.name}\n{view.url}", max_width=NODE_COLUMN_WIDTH)
    for name in NODE_ROWS:
        table.add_row(name, *(cells[name] for cells in columns))
    return table


def _audit_table(t: AuditTotals) -> Any:
    from rich.table import Table
    from rich.text import Text

    def bad(n: int) -> Text:
        return Text(str(n), style="bold red" if n else "green")

    table = Table(title="Subscriber (what a consumer got)", expand=False)
    for column in ("messages", "lost", "duplicates", "out-of-order", "publisher"):
        table.add_column(column, justify="right")
    table.add_row(
        str(t.messages), bad(t.lost), bad(t.duplicates), bad(t.out_of_order), _fmt(t.publisher)
    )
    return table


def _events_table(snap: Snapshot) -> Any:
    from rich.table import Table

    table = Table(title="Timeline (newest last)", expand=False, show_header=False)
    table.add_column("time", no_wrap=True)
    table.add_column("node", no_wrap=True)
    table.add_column("event", overflow="fold", max_width=EVENT_COLUMN_WIDTH)
    for ts_ms, node, message in snap.events:
        clock = time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000))
        table.add_row(f"{clock}.{ts_ms % 1000:03d}", node, message)
    return table


def render_summary(snap: Snapshot) -> Any:
    """The one-screen live view: both nodes side by side, the subscriber, the last events."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [_nodes_table(snap), _audit_table(snap.totals), _events_table(snap)]
    if snap.step:
        parts.append(Text(snap.step, style="bold"))
    return Group(*parts)


RESULT_COLUMNS = (
    "step", "what happened", "takeover ms", "subscriber gap ms", "lost", "duplicates", "ooo",
)  # fmt: skip


def results_table(results: list[StepResult], standby: str) -> Any:
    """One row per fault: who took over, the silence subscribers saw, lost and duplicates."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"Failover results ({standby} standby)", box=box.ASCII)
    for column in RESULT_COLUMNS:
        table.add_column(column, justify="left" if column in ("step", "what happened") else "right")
    for r in results:
        table.add_row(
            r.step,
            r.outcome,
            "-" if r.takeover_ms is None else f"{r.takeover_ms:.0f}",
            "-" if r.gap_ms is None else f"{r.gap_ms:.0f}",
            str(r.lost),
            str(r.duplicates),
            str(r.out_of_order),
        )
    return table
