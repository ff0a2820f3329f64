"""End-to-end throughput benchmark: PLC simulators -> hub -> mosquitto -> subscriber, vs bare reads.

What is measured, per device count (``--devices 1,4``), in one run and on the same simulators:

* **bare**: the physical ceiling. One process, one ``AsyncModbusTcpClient`` per device, all
  devices concurrently, reading the very blocks the hub reads (125-register requests) back to
  back. Nothing is decoded, stored or published.
* **end-to-end**: the hub in its own process polls the simulators, commits every sample to its
  SQLite outbox and publishes it with QoS 1 to a private mosquitto on an ephemeral port; a
  subscriber in its own process counts messages and tag values (length of the payload's
  ``values``) as they arrive, and checks per-group ``seq`` for gaps.

Rates are taken over a steady window (``--duration``, default 10 s) that opens ``--warmup``
seconds (default 3) after the first value arrived, from cumulative counters each worker prints
four times a second, so start-up and shutdown never count. The hub's RSS (VmRSS) is sampled
during the window and its maximum is reported, with the CPU share of every process involved,
so the table says what saturated.

Why this config: per device one group of ``--registers`` (default 2000) holding registers at
100.. as uint16 (the simulator's load registers; every value changes every 100 ms) on a
``--interval`` of 0.01 s, the smallest the config allows. A group's rate is capped by its grid
at ``registers / interval``: 1000 registers at 10 ms would cap one device at 100,000 values/s,
well below what one connection reads (~250,000-450,000/s here), so the comparison would measure
the grid, not the hub. 2000 registers (16 requests of 125) take 6-10 ms to read on an idle
machine and longer under load: one device runs near its 200,000/s grid ceiling, and when
polls take longer than the interval the poller catches the missed slots up back to back (up
to 1 s behind), so it reads as continuously as the bare loop and the hub's own cost decides
the rate. For one device the grid, the price of exact failover, stays the cap. uint16 is the
codec's plain fast path, as in most PLC bulk maps. Larger groups also cost hub memory: the
8,000-tag config of 4 devices holds ~20-30 MB of RSS after loading.

Hub under test (``--hub``): ``run`` starts the real ``tandem run -c CONFIG`` (composition root
``tandem.supervisor``); ``pipeline`` starts this module's own composition of DevicePoller ->
Outbox -> MqttPublisher in a child process, batching samples exactly like the hub runtime (one
outbox transaction per event-loop step). ``auto`` (default) uses ``run`` when the installed
command line has it.

Usage: ``.venv/bin/python -m bench.throughput [--devices 1,4] [--duration 10] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ and tests/ are importable from the root
    sys.path.insert(0, str(ROOT))

from bench.report import table, write_json  # noqa: E402

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOAD_START = 100  # first load register of the simulator (tandem.sim.plc.LOAD_START)
REGISTERS_PER_READ = 125  # Modbus limit per read, what the hub's coalescing produces too
REPORT_PERIOD_S = 0.25  # how often workers print their cumulative counters
READY_TIMEOUT_S = 30.0
FIRST_VALUE_TIMEOUT_S = 30.0
RSS_SAMPLE_S = 0.2
CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- workers: each runs in its own process and prints one JSON line per report period ----------


def _print_line(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _report_forever(counters: Callable[[], dict[str, Any]]) -> None:
    while True:
        _print_line({"t": time.time(), **counters()})
        await asyncio.sleep(REPORT_PERIOD_S)


def _stop_on_sigterm(main: Callable[[], Any]) -> None:
    """Run an asyncio main until SIGTERM/SIGINT, then return quietly."""

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(main())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(runner())


def worker_bare(ports: Sequence[int], registers: int) -> None:
    """One client per device, all concurrently, reading the hub's blocks back to back."""
    from pymodbus.client import AsyncModbusTcpClient

    totals = {"values": 0, "reads": 0, "errors": 0}
    blocks = [
        (start, min(REGISTERS_PER_READ, LOAD_START + registers - start))
        for start in range(LOAD_START, LOAD_START + registers, REGISTERS_PER_READ)
    ]

    async def read_loop(port: int) -> None:
        client = AsyncModbusTcpClient(HOST, port=port, timeout=2.0, retries=0)
        try:
            if not await client.connect():
                raise SystemExit(f"bare loop cannot connect to {HOST}:{port}")
            while True:
                for start, count in blocks:
                    response = await client.read_holding_registers(start, count=count, device_id=1)
                    if response.isError() or len(response.registers) < count:
                        totals["errors"] += 1
                        continue
                    totals["values"] += count
                    totals["reads"] += 1
        finally:
            client.close()

    async def main() -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_report_forever(lambda: dict(totals)))
            for port in ports:
                tasks.create_task(read_loop(port))

    _stop_on_sigterm(main)


def worker_subscribe(port: int, topic: str) -> None:
    """Count messages, tag values and seq gaps of everything published under ``topic``."""
    import aiomqtt
    import orjson

    totals = {"messages": 0, "values": 0, "errors": 0, "gaps": 0, "repeats": 0}
    last_seq: dict[tuple[str, str], int] = {}

    async def main() -> None:
        async with aiomqtt.Client(HOST, port, identifier=f"bench-sub-{os.getpid()}") as client:
            await client.subscribe(topic, qos=1)
            reporter = asyncio.create_task(_report_forever(lambda: dict(totals)))
            try:
                async for message in client.messages:
                    # Parsed in full (every value counted), with orjson like the hub writes it.
                    doc = orjson.loads(message.payload)  # type: ignore[arg-type]
                    totals["messages"] += 1
                    totals["values"] += len(doc["values"])
                    totals["errors"] += len(doc["errors"])
                    key = (doc["node"], doc["group"])
                    seq = doc["seq"]
                    previous = last_seq.get(key)
                    if previous is not None:
                        if seq <= previous:
                            totals["repeats"] += 1
                            continue
                        totals["gaps"] += seq - previous - 1
                    last_seq[key] = seq
            finally:
                reporter.cancel()

    _stop_on_sigterm(main)


def worker_pipeline(config_path: Path, profile: Path | None) -> None:
    """DevicePoller -> Outbox -> MqttPublisher composed like the hub runtime, until SIGTERM."""
    from tandem.config.hub import load_config
    from tandem.hub.modbus import DevicePoller
    from tandem.hub.model import Sample
    from tandem.hub.mqtt import MqttPublisher, MqttSettings
    from tandem.hub.outbox import Outbox

    cfg = load_config(config_path)

    async def main() -> None:
        outbox = Outbox(
            cfg.data_dir / "outbox.sqlite3",
            max_rows=cfg.outbox.max_rows,
            overflow=cfg.outbox.overflow,
        )
        publisher = MqttPublisher(MqttSettings.from_config(cfg.mqtt), outbox)
        pending: list[Sample] = []
        loop = asyncio.get_running_loop()

        def flush() -> None:
            # Same batching as the runtime: every sample of one loop step in one transaction.
            batch = pending[:]
            pending.clear()
            outbox.append_many(batch)
            publisher.notify()

        def emit(sample: Sample) -> None:
            if not pending:
                loop.call_soon(flush)
            pending.append(sample)

        pollers = [DevicePoller(d, source_node=cfg.node, emit=emit) for d in cfg.devices]
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(publisher.run())
                for poller in pollers:
                    tasks.create_task(poller.run())
        finally:
            outbox.close()

    if profile is None:
        _stop_on_sigterm(main)
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        _stop_on_sigterm(main)
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


# --- process plumbing for the coordinator ------------------------------------------------------


@dataclass
class Worker:
    """A child process whose stdout carries JSON counter lines, read by a background thread."""

    name: str
    process: subprocess.Popen[str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)  # non-JSON lines, e.g. a ready banner
    _reader: threading.Thread | None = None

    def start_reading(self) -> None:
        def read() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                try:
                    doc = json.loads(raw)
                except ValueError:
                    self.text.append(raw.rstrip("\n"))
                    continue
                if isinstance(doc, dict):
                    self.lines.append(doc)

        self._reader = threading.Thread(target=read, name=f"read-{self.name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def latest(self) -> dict[str, Any] | None:
        return self.lines[-1] if self.lines else None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL; safe to call twice."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._reader is not None:
            self._reader.join(2)
        if self.process.stdout is not None:
            self.process.stdout.close()


def spawn(name: str, argv: Sequence[str], *, stderr: Path | None = None) -> Worker:
    err = stderr.open("ab") if stderr is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
    finally:
        if stderr is not None:
            err.close()  # type: ignore[union-attr]
    worker = Worker(name, process)
    worker.start_reading()
    return worker


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *procs: Worker) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for proc in procs:
            if proc.process.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}: {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def worker_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.throughput", *args]


def start_simulator(registers: int, logs: Path) -> tuple[Worker, int]:
    """One PLC simulator process on an ephemeral port; returns it and the bound port."""
    code = f"from tandem.sim.plc import main; main({HOST!r}, 0, {registers})"
    worker = spawn("simulator", [sys.executable, "-c", code], stderr=logs)
    try:
        wait_until(lambda: bool(worker.text), READY_TIMEOUT_S, "simulator ready line", worker)
    except BaseException:
        worker.stop()
        raise
    return worker, int(worker.text[0].rsplit(":", 1)[1])


# --- measurements ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields after "(comm)" start at index 2 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rate_between(lines: Sequence[dict[str, Any]], key: str, t0: float, t1: float) -> float:
    """Per-second rate of a cumulative counter between the reports nearest to t0 and t1."""
    inside = [d for d in lines if t0 <= d["t"] <= t1]
    if len(inside) < 2:
        raise RuntimeError(f"too few counter reports in the window for {key}")
    first, last = inside[0], inside[-1]
    return (last[key] - first[key]) / (last["t"] - first["t"])


def delta_between(lines: Sequence[dict[str, Any]], key: str, t0: float, t1: float) -> int:
    inside = [d for d in lines if t0 <= d["t"] <= t1]
    return int(inside[-1][key] - inside[0][key]) if inside else 0


@dataclass(frozen=True, slots=True)
class Window:
    """The steady measurement window, in wall-clock seconds shared by all processes."""

    start: float
    end: float


def measure_window(
    first_value: Callable[[], bool],
    warmup: float,
    duration: float,
    watched: dict[str, Sequence[int]],
    rss_pid: int | None,
    *alive: Worker,
) -> tuple[Window, dict[str, float], float | None]:
    """Wait for data, warm up, then hold the window open while sampling CPU and RSS.

    Returns the window, the CPU share (percent of one core) of each watched group of pids,
    and the maximum RSS in MB of ``rss_pid``.
    """
    wait_until(first_value, FIRST_VALUE_TIMEOUT_S, "the first values", *alive)
    time.sleep(warmup)
    start = time.time()
    cpu_before = {k: [cpu_seconds(p) or 0.0 for p in pids] for k, pids in watched.items()}
    started = time.monotonic()
    max_rss: float | None = None
    while time.monotonic() - started < duration:
        for proc in alive:
            if proc.process.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.process.returncode}")
        if rss_pid is not None:
            rss = rss_mb(rss_pid)
            if rss is not None:
                max_rss = rss if max_rss is None else max(max_rss, rss)
        time.sleep(min(RSS_SAMPLE_S, max(0.0, duration - (time.monotonic() - started))))
    elapsed = time.monotonic() - started
    end = time.time()
    cpu = {
        k: 100.0
        * sum((cpu_seconds(p) or b) - b for p, b in zip(pids, cpu_before[k], strict=True))
        / elapsed
        for k, pids in watched.items()
    }
    # Counter lines printed just after the window still say what happened inside it.
    time.sleep(REPORT_PERIOD_S * 2)
    return Window(start, end), cpu, max_rss


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class Result:
    devices: int
    path: str  # "bare" or "end-to-end"
    values_per_s: float
    messages_per_s: float | None
    hub_rss_max_mb: float | None
    cpu: dict[str, float]
    seq_gaps: int | None
    tag_errors: int
    hub_exit: int | None = None  # 0 after an orderly stop on SIGTERM; -9 if it had to be killed

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "path": self.path,
            "values_per_s": round(self.values_per_s, 1),
            "messages_per_s": _rounded(self.messages_per_s, 2),
            "hub_rss_max_mb": _rounded(self.hub_rss_max_mb, 1),
            "cpu_percent": {k: round(v, 1) for k, v in self.cpu.items()},
            "seq_gaps": self.seq_gaps,
            "tag_errors": self.tag_errors,
            "hub_exit": self.hub_exit,
        }


def hub_config(
    workdir: Path, ports: Sequence[int], broker_port: int, registers: int, interval: float
) -> Path:
    """The native config under test, as YAML (JSON is YAML) so `tandem run -c` reads it."""
    tags = [{"name": f"r{i}", "address": LOAD_START + i} for i in range(registers)]
    doc = {
        "node": "bench",
        "data_dir": str(workdir / "data"),
        "api": {"host": HOST, "port": 0},
        "mqtt": {"host": HOST, "port": broker_port, "topic": "/neuron/{node}"},
        "devices": [
            {
                "name": f"plc{i}",
                "host": HOST,
                "port": port,
                "timeout": 2.0,
                "groups": [{"name": f"load{i}", "interval": interval, "tags": tags}],
            }
            for i, port in enumerate(ports)
        ],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"hub-{len(ports)}.yaml"
    path.write_text(json.dumps(doc))
    return path


def tandem_run_available() -> bool:
    """Whether this checkout's command line has ``run`` (it arrived after this benchmark)."""
    probe = subprocess.run(
        [sys.executable, "-m", "tandem", "run", "--help"],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    return probe.returncode == 0


def measure_bare(ports: Sequence[int], sims: Sequence[Worker], opts: Options) -> Result:
    bare = spawn(
        "bare loop",
        worker_argv(
            "_bare", "--ports", ",".join(map(str, ports)), "--registers", str(opts.registers)
        ),
        stderr=opts.workdir / "bare.log",
    )
    try:
        window, cpu, _ = measure_window(
            lambda: bool(bare.latest() and bare.latest()["values"]),  # type: ignore[index]
            opts.warmup,
            opts.duration,
            {"reader": [bare.pid], "simulators": [s.pid for s in sims]},
            None,
            bare,
        )
    finally:
        bare.stop()
    return Result(
        devices=len(ports),
        path="bare",
        values_per_s=rate_between(bare.lines, "values", window.start, window.end),
        messages_per_s=None,
        hub_rss_max_mb=None,
        cpu=cpu,
        seq_gaps=None,
        tag_errors=delta_between(bare.lines, "errors", window.start, window.end),
    )


def measure_end_to_end(
    ports: Sequence[int], sims: Sequence[Worker], broker: Any, opts: Options
) -> Result:
    n = len(ports)
    config = hub_config(
        opts.workdir / f"e2e-{n}", ports, broker.port, opts.registers, opts.interval
    )
    subscriber = spawn(
        "subscriber",
        worker_argv("_subscribe", "--port", str(broker.port), "--topic", "#"),
        stderr=opts.workdir / f"subscriber-{n}.log",
    )
    hub: Worker | None = None
    try:
        wait_until(lambda: bool(subscriber.lines), READY_TIMEOUT_S, "subscriber", subscriber)
        profile = None if opts.profile is None else f"{opts.profile}.{n}.prof"
        if opts.hub_cmd is not None:
            argv = [part.replace("{config}", str(config)) for part in opts.hub_cmd.split()]
        elif opts.hub == "run":
            argv = [sys.executable, "-m", "tandem", "run", "-c", str(config)]
            if profile is not None:
                # tandem run exits normally on SIGTERM, so cProfile gets to write its file.
                argv[1:1] = ["-m", "cProfile", "-o", profile]
        else:
            argv = worker_argv("_pipeline", "--config", str(config))
            if profile is not None:
                argv += ["--profile", profile]
        hub = spawn("hub", argv, stderr=opts.workdir / f"hub-{n}.log")
        window, cpu, max_rss = measure_window(
            lambda: bool(subscriber.latest() and subscriber.latest()["values"]),  # type: ignore[index]
            opts.warmup,
            opts.duration,
            {
                "hub": [hub.pid],
                "simulators": [s.pid for s in sims],
                "broker": [broker.pid],
                "subscriber": [subscriber.pid],
            },
            hub.pid,
            hub,
            subscriber,
        )
    except BaseException:
        for name in (f"hub-{n}.log", f"subscriber-{n}.log"):
            with contextlib.suppress(OSError):
                sys.stderr.write(f"--- {name} (tail)\n{(opts.workdir / name).read_text()[-3000:]}")
        raise
    finally:
        if hub is not None:
            hub.stop()
        subscriber.stop()
    lines = subscriber.lines
    return Result(
        devices=n,
        path="end-to-end",
        values_per_s=rate_between(lines, "values", window.start, window.end),
        messages_per_s=rate_between(lines, "messages", window.start, window.end),
        hub_rss_max_mb=max_rss,
        cpu=cpu,
        seq_gaps=delta_between(lines, "gaps", window.start, window.end),
        tag_errors=delta_between(lines, "errors", window.start, window.end),
        hub_exit=None if hub is None else hub.process.returncode,
    )


@dataclass(frozen=True, slots=True)
class Options:
    devices: tuple[int, ...]
    registers: int
    interval: float
    duration: float
    warmup: float
    hub: str
    output: str | None
    workdir: Path
    profile: Path | None
    hub_cmd: str | None = None
    rounds: int = 1


@contextlib.contextmanager
def simulators(count: int, registers: int, logs: Path) -> Iterator[list[tuple[Worker, int]]]:
    started: list[tuple[Worker, int]] = []
    try:
        for _ in range(count):
            started.append(start_simulator(registers, logs))
        yield started
    finally:
        for worker, _ in started:
            worker.stop()


class _Mosquitto:
    """The test suite's mosquitto helper, plus the pid the CPU accounting needs."""

    def __init__(self, workdir: Path) -> None:
        from tests.integration.broker import Broker

        workdir.mkdir(parents=True, exist_ok=True)
        self.broker = Broker(workdir)

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def pid(self) -> int:
        proc = self.broker._proc
        assert proc is not None
        return proc.pid

    def __enter__(self) -> _Mosquitto:
        self.broker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.broker.stop()


COLUMNS = (
    "devices",
    "path",
    "values/s",
    "msgs/s",
    "% of bare",
    "hub RSS max MB",
    "CPU hub %",
    "CPU sims %",
    "CPU broker %",
    "CPU sub/reader %",
    "seq gaps",
    "tag errors",
    "hub exit",
)


def table_rows(results: Sequence[Result]) -> list[list[Any]]:
    bare = {r.devices: r.values_per_s for r in results if r.path == "bare"}
    rows: list[list[Any]] = []
    for r in results:
        ratio = None
        if r.path != "bare" and bare.get(r.devices):
            ratio = 100.0 * r.values_per_s / bare[r.devices]
        rows.append(
            [
                r.devices,
                r.path,
                round(r.values_per_s),
                None if r.messages_per_s is None else round(r.messages_per_s, 1),
                None if ratio is None else round(ratio, 1),
                None if r.hub_rss_max_mb is None else round(r.hub_rss_max_mb, 1),
                r.cpu.get("hub"),
                r.cpu.get("simulators"),
                r.cpu.get("broker"),
                r.cpu.get("subscriber", r.cpu.get("reader")),
                r.seq_gaps,
                r.tag_errors,
                r.hub_exit,
            ]
        )
    return rows


def run_benchmark(opts: Options) -> list[Result]:
    results: list[Result] = []
    with (
        simulators(max(opts.devices), opts.registers, opts.workdir / "simulators.log") as sims,
        _Mosquitto(opts.workdir / "broker") as broker,
    ):
        for n in opts.devices:
            chosen = sims[:n]
            ports = [port for _, port in chosen]
            procs = [worker for worker, _ in chosen]
            # Alternating rounds spread the noise of a shared machine over both paths.
            for round_no in range(1, opts.rounds + 1):
                log.info("%s device(s), round %s: bare read loop", n, round_no)
                results.append(measure_bare(ports, procs, opts))
                log.info("%s device(s), round %s: end to end (%s)", n, round_no, opts.hub)
                results.append(measure_end_to_end(ports, procs, broker, opts))
    return results


def summarize(results: Sequence[Result]) -> list[Result]:
    """One row per (devices, path): the best round, and the worst RSS seen in any round.

    Best, not median: other work on shared cores only ever slows a round down, so the fastest
    round is the closest to what the path can do (timeit reports its minimum for the same
    reason). Every round is kept in the JSON.
    """
    groups: dict[tuple[int, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.devices, r.path), []).append(r)
    rows: list[Result] = []
    for runs in groups.values():
        best = max(runs, key=lambda r: r.values_per_s)
        rss = [r.hub_rss_max_mb for r in runs if r.hub_rss_max_mb is not None]
        exits = [r.hub_exit for r in runs if r.hub_exit]
        rows.append(
            dataclasses.replace(
                best,
                hub_rss_max_mb=max(rss) if rss else None,
                hub_exit=exits[0] if exits else best.hub_exit,
            )
        )
    return rows


def goals(results: Sequence[Result]) -> dict[str, Any]:
    """The issue's acceptance targets, evaluated on the 4-device rows when present."""
    bare = {r.devices: r.values_per_s for r in results if r.path == "bare"}
    e2e = {r.devices: r for r in results if r.path == "end-to-end"}
    n = 4 if 4 in e2e else max(e2e, default=0)
    if not n:
        return {}
    r = e2e[n]
    ratio = r.values_per_s / bare[n] if bare.get(n) else 0.0
    return {
        "devices": n,
        "values_per_s": round(r.values_per_s),
        "hub_rss_max_mb": r.hub_rss_max_mb,
        "ratio_to_bare": round(ratio, 3),
        "ratio_ok": ratio >= 0.8,
        "values_per_s_ok": r.values_per_s >= 100_000,
        "rss_ok": r.hub_rss_max_mb is not None and r.hub_rss_max_mb <= 80,
    }


def parse_devices(text: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in text.split(",") if part.strip())
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("--devices wants positive counts, e.g. 1,4")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="worker")
    bare = sub.add_parser("_bare", help=argparse.SUPPRESS)
    bare.add_argument("--ports", required=True)
    bare.add_argument("--registers", type=int, required=True)
    subscribe = sub.add_parser("_subscribe", help=argparse.SUPPRESS)
    subscribe.add_argument("--port", type=int, required=True)
    subscribe.add_argument("--topic", default="#")
    pipeline = sub.add_parser("_pipeline", help=argparse.SUPPRESS)
    pipeline.add_argument("--config", type=Path, required=True)
    pipeline.add_argument("--profile", type=Path)

    parser.add_argument("--devices", type=parse_devices, default=(1, 4), help="e.g. 1,4")
    parser.add_argument("--registers", type=int, default=2000, help="holding registers per device")
    parser.add_argument("--interval", type=float, default=0.01, help="group interval, seconds")
    parser.add_argument("--duration", type=float, default=10.0, help="steady window, seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument("--hub", choices=("auto", "run", "pipeline"), default="auto")
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate bare/end-to-end N times, report the best"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: 1 device, 250 registers, 1.5 s window"
    )
    parser.add_argument(
        "--output", default="throughput", help="results/<OUTPUT>.json; '-' writes no file"
    )
    parser.add_argument("--profile", type=Path, help="cProfile the hub to PATH.<devices>.prof")
    parser.add_argument(
        "--hub-cmd",
        help="experiments: run this command as the hub instead, {config} is the config path",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args(argv)

    if args.worker == "_bare":
        worker_bare([int(p) for p in args.ports.split(",")], args.registers)
        return 0
    if args.worker == "_subscribe":
        worker_subscribe(args.port, args.topic)
        return 0
    if args.worker == "_pipeline":
        worker_pipeline(args.config, args.profile)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # SIGTERM unwinds like Ctrl-C, so every simulator, broker and hub started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if args.quick:
        args.devices, args.registers, args.duration, args.warmup = (1,), 250, 1.5, 0.5
    hub = args.hub
    if hub == "auto":
        hub = "run" if tandem_run_available() else "pipeline"
    if args.hub_cmd is not None:
        hub = "custom"
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        opts = Options(
            devices=args.devices,
            registers=args.registers,
            interval=args.interval,
            duration=args.duration,
            warmup=args.warmup,
            hub=hub,
            output=None if args.output == "-" else args.output,
            workdir=Path(tmp),
            profile=args.profile,
            hub_cmd=args.hub_cmd,
            rounds=max(1, args.rounds),
        )
        rounds = run_benchmark(opts)
    results = summarize(rounds)
    title = (
        f"End-to-end throughput: {opts.registers} uint16 registers per device, "
        f"interval {opts.interval} s, {opts.duration} s window, best of {opts.rounds} round(s), "
        f"hub={hub}, {os.cpu_count()} CPUs"
    )
    print(table(title, COLUMNS, table_rows(results)))
    verdict = goals(results)
    print(f"\ngoals: {json.dumps(verdict)}")
    if opts.output is not None:
        path = write_json(
            opts.output,
            {
                "config": {
                    "devices": list(opts.devices),
                    "registers": opts.registers,
                    "interval_s": opts.interval,
                    "duration_s": opts.duration,
                    "warmup_s": opts.warmup,
                    "hub": hub,
                    "rounds": opts.rounds,
                },
                "results": [r.as_dict() for r in results],
                "rounds": [r.as_dict() for r in rounds],
                "goals": verdict,
            },
        )
        print(f"results written to {path}")
    if args.check and not all(v for k, v in verdict.items() if k.endswith("_ok")):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
