"""`tandem demo`: a PLC simulator, a broker and a two-node pair on loopback, with a live view."""

from __future__ import annotations

from tandem.demo.cluster import DemoCluster
from tandem.demo.command import DemoOptions, run_demo
from tandem.demo.pair import NodeSpec, find_mosquitto, node_config, node_specs
from tandem.demo.scenario import (
    DemoTimings,
    StepResult,
    measure_step,
    run_failover_scenario,
    scenario_exit_code,
)
from tandem.demo.view import render_summary, results_table

__all__ = [
    "DemoCluster",
    "DemoOptions",
    "DemoTimings",
    "NodeSpec",
    "StepResult",
    "find_mosquitto",
    "measure_step",
    "node_config",
    "node_specs",
    "render_summary",
    "results_table",
    "run_demo",
    "run_failover_scenario",
    "scenario_exit_code",
]
