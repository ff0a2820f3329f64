"""The unattended failover scenario: four faults, each judged by what the subscriber saw."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tandem.demo.view import AuditTotals
from tandem.errors import TandemError
from tandem.ha.audit import DeliveryAudit

if TYPE_CHECKING:
    from tandem.demo.cluster import DemoCluster


@dataclass(frozen=True, slots=True)
class DemoTimings:
    """How long the scenario lets things settle; --quick shortens them for CI."""

    steady_s: float
    settle_s: float
    down_s: float
    takeover_timeout_s: float

    @classmethod
    def for_mode(cls, quick: bool) -> DemoTimings:
        if quick:
            return cls(steady_s=1.5, settle_s=1.5, down_s=1.5, takeover_timeout_s=15.0)
        return cls(steady_s=5.0, settle_s=4.0, down_s=5.0, takeover_timeout_s=30.0)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One fault of the scenario as the subscriber saw it."""

    step: str
    new_master: str
    outcome: str  # what the subscriber saw happen, e.g. "node-a -> node-b, term 3 -> 4"
    takeover_ms: float | None  # fault -> first message from the new master
    gap_ms: float | None  # last message before the fault's takeover -> first after it
    lost: int
    duplicates: int
    out_of_order: int

    @property
    def clean(self) -> bool:
        return self.takeover_ms is not None and self.lost == 0 and self.duplicates == 0


def measure_step(
    audit: DeliveryAudit,
    step: str,
    new_master: str,
    fault_at: float,
    before: AuditTotals,
) -> StepResult:
    """Judge one step from the subscriber's arrivals: who took over, the gap, what went wrong."""
    first = audit.first_after(fault_at, new_master)
    takeover_ms = gap_ms = None
    outcome = f"no message from {new_master}"
    if first is not None:
        takeover_ms = (first.at - fault_at) * 1000
        previous = next(
            (
                a
                for a in reversed(audit.arrivals)
                if a.at < first.at and a.delivered.source_node != new_master
            ),
            None,
        )
        term = first.delivered.term
        if previous is None:
            outcome = f"{new_master} publishing, term {term}"
        else:
            gap_ms = (first.at - previous.at) * 1000
            old = previous.delivered
            outcome = f"{old.source_node} -> {new_master}, term {old.term} -> {term}"
    now = AuditTotals.of(audit)
    return StepResult(
        step=step,
        new_master=new_master,
        outcome=outcome,
        takeover_ms=takeover_ms,
        gap_ms=gap_ms,
        lost=now.lost - before.lost,
        duplicates=now.duplicates - before.duplicates,
        out_of_order=now.out_of_order - before.out_of_order,
    )


async def run_failover_scenario(
    cluster: DemoCluster, timings: DemoTimings, progress: Callable[[str], None] | None = None
) -> list[StepResult]:
    """kill -9, restart (switchback), manual switchover, SIGTERM + restart: one result each."""
    say = progress or (lambda _msg: None)
    a, b = cluster.names
    results: list[StepResult] = []

    say("waiting for a steady pair")
    await cluster.wait_for(cluster.steady, timings.takeover_timeout_s * 2, "a steady pair")
    await asyncio.sleep(timings.steady_s)

    async def step(
        name: str,
        new_master: str,
        fault: Callable[[], Awaitable[None] | None],
        *,
        from_steady: bool = True,
    ) -> None:
        say(name)
        if from_steady:
            await cluster.wait_for(cluster.steady, timings.takeover_timeout_s, "a steady pair")
        before = AuditTotals.of(cluster.audit)
        fault_at = time.time()
        outcome = fault()
        if outcome is not None:
            await outcome
        try:
            await cluster.wait_for(
                lambda: (
                    cluster.audit.first_after(fault_at, new_master) is not None
                    and cluster.role_of(new_master) == "MASTER"
                ),
                timings.takeover_timeout_s,
                f"{new_master} to take over",
            )
        except TandemError as exc:
            say(str(exc))
        await asyncio.sleep(timings.settle_s)
        result = measure_step(cluster.audit, name, new_master, fault_at, before)
        results.append(result)
        say(_describe(result))

    await step(f"kill -9 {a} (master)", b, lambda: cluster.nodes[a].signal(signal.SIGKILL))
    await asyncio.sleep(timings.down_s)
    await step(f"restart {a} (automatic switchback)", a, cluster.nodes[a].start, from_steady=False)
    await step(f"switchover {a} -> {b} (POST)", b, lambda: _ignore_result(cluster.switchover(a)))
    await step(f"SIGTERM {b} (master)", a, lambda: cluster.nodes[b].signal(signal.SIGTERM))
    # The stopped node comes back as backup: the pair ends as it began.
    await asyncio.to_thread(cluster.nodes[b].stop)
    cluster.nodes[b].start()
    say(f"restarted {b}; waiting for it to rejoin as backup")
    with contextlib.suppress(TandemError):
        await cluster.wait_for(cluster.steady, timings.takeover_timeout_s, "a steady pair")
    return results


async def _ignore_result(aw: Awaitable[Any]) -> None:
    await aw


def _describe(r: StepResult) -> str:
    took = "no takeover seen" if r.takeover_ms is None else f"takeover {r.takeover_ms:.0f} ms"
    return f"{r.step}: {took}, lost {r.lost}, duplicates {r.duplicates}"


def scenario_exit_code(results: list[StepResult], standby: str, expected_steps: int = 4) -> int:
    """Hot standby must show no loss and no duplicate anywhere; cold only has to take over."""
    if len(results) < expected_steps or any(r.takeover_ms is None for r in results):
        return 1
    if standby == "hot" and not all(r.clean for r in results):
        return 1
    return 0


def anomaly_report(audit: DeliveryAudit) -> list[str]:
    """Which slots were missing or repeated, and who sent the repeats: the first thing to read."""
    lines: list[str] = []
    for key, stream in audit.streams.items():
        if stream.lost:
            lines.append(f"{key}: missing slots {stream.missing()[:20]}")
        for slot in stream.duplicate_slots[:20]:
            senders = [
                (a.delivered.source_node, a.delivered.term, round(a.at, 3))
                for a in audit.arrivals
                if a.delivered.slot == slot and f"{a.delivered.device}/{a.delivered.group}" == key
            ]
            lines.append(f"{key}: slot {slot} delivered {len(senders)} times: {senders}")
    return lines
