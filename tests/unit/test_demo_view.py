"""The demo's terminal view and step judgement: wrapped reasons, per-step outcome and gap."""

from __future__ import annotations

from rich.console import Console

from tandem.demo.scenario import StepResult, measure_step
from tandem.demo.view import AuditTotals, NodeView, Snapshot, render_summary, results_table
from tandem.ha.audit import Delivered, DeliveryAudit

LONG_REASON = (
    "VRRP BACKUP -> MASTER (master_down_timer_expired: last master advert 0.361 s ago, "
    "master_down_interval 0.365 s at priority 90)"
)


def audit_of(*arrivals: tuple[float, int, str, int]) -> DeliveryAudit:
    """(at, slot, source_node, term) arrivals of one stream."""
    audit = DeliveryAudit()
    for at, slot, node, term in arrivals:
        audit.add(Delivered("plc1", "fast", slot, slot, term, node), at=at)
    return audit


def text_of(renderable: object, width: int) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_measure_step_takeover_names_old_and_new_publisher_and_terms() -> None:
    audit = audit_of((10.0, 1, "node-a", 3), (10.1, 2, "node-a", 3), (10.5, 3, "node-b", 4))
    before = AuditTotals(0, 0, 0, 0, None)

    result = measure_step(audit, "kill -9 node-a (master)", "node-b", 10.15, before)

    assert result.outcome == "node-a -> node-b, term 3 -> 4"
    assert result.takeover_ms is not None and round(result.takeover_ms) == 350
    assert result.gap_ms is not None and round(result.gap_ms) == 400
    assert (result.lost, result.duplicates, result.out_of_order) == (0, 0, 0)


def test_measure_step_counts_only_this_steps_losses_and_duplicates() -> None:
    audit = audit_of((1.0, 1, "node-a", 1), (1.1, 2, "node-a", 1), (2.0, 5, "node-b", 2))
    audit.add(Delivered("plc1", "fast", 5, 5, 2, "node-b"), at=2.1)
    before = AuditTotals(2, 0, 0, 0, "node-a")

    result = measure_step(audit, "step", "node-b", 1.5, before)

    assert (result.lost, result.duplicates) == (2, 1)


def test_measure_step_no_takeover_says_so() -> None:
    audit = audit_of((1.0, 1, "node-a", 1))
    result = measure_step(audit, "step", "node-b", 1.5, AuditTotals(1, 0, 0, 0, "node-a"))
    assert result.outcome == "no message from node-b"
    assert result.takeover_ms is None and result.gap_ms is None


def test_render_summary_long_reason_wraps_whole_in_its_column() -> None:
    status = {
        "role": "MASTER",
        "term": 4,
        "ha": {"last_failover": {"reason": LONG_REASON}, "watermark_lag": 0},
    }
    views = (
        NodeView("node-a", "http://127.0.0.2:8085", None, 100, None),
        NodeView("node-b", "http://127.0.0.3:8085", 4242, 90, status),
    )
    events = ((1_700_000_000_123, "node-b", "became MASTER (term 4): " + LONG_REASON),)
    snap = Snapshot(views, AuditTotals(10, 0, 0, 0, "node-b"), events)

    text = text_of(render_summary(snap), width=100)

    assert max(len(line) for line in text.splitlines()) <= 100
    flat = " ".join(text.split())
    # Every word of the reason is on screen, in the node's column and on the timeline.
    for word in ("master_down_timer_expired:", "0.361", "master_down_interval", "priority", "90)"):
        assert flat.count(word) >= 2, word
    assert "stopped" in flat and "4242" in flat


def test_results_table_says_what_happened_gap_lost_and_duplicates() -> None:
    results = [
        StepResult("kill -9 node-a (master)", "node-b", "node-a -> node-b, term 3 -> 4",
                   343.2, 375.9, 0, 0, 0),
        StepResult("switchover node-a -> node-b (POST)", "node-b", "no message from node-b",
                   None, None, 2, 1, 0),
    ]  # fmt: skip

    text = text_of(results_table(results, "hot"), width=160)
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]

    assert header == [
        "step", "what happened", "takeover ms", "subscriber gap ms", "lost", "duplicates", "ooo",
    ]  # fmt: skip
    assert rows[0] == ["kill -9 node-a (master)", "node-a -> node-b, term 3 -> 4", "343", "376",
                       "0", "0", "0"]  # fmt: skip
    assert rows[1][1:4] == ["no message from node-b", "-", "-"]
    assert rows[1][4:6] == ["2", "1"]
