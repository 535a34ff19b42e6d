"""Punto de entrada de los bancos: ``python -m bench.run [--scenario N] [--runs N] [--quick|--smoke]``.

Monta los tmpfs, arranca nginx, corre los escenarios pedidos (todos por defecto), imprime la
tabla de cada uno y fusiona sus resultados en ``bench/results/latest.{md,json}``. ``--quick`` y
``--smoke`` escriben en ``bench/results/raw/`` para no pisar los resultados completos. Todo lo que
arranca (nginx, daemons, herramientas) lo para al terminar, también con Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

from bench import daemon_runner
from bench.common import RAW_DIR, RESULTS_DIR, ScenarioResult, log, machine_meta, render_scenario_text, write_raw
from bench.common import write_results as write_results_file
from bench.context import BenchContext
from bench.infra import Procs, TmpfsArea, ensure_tools, start_server, tool_versions

SCENARIOS = {
    1: ("bench.s1_big_file", "one 1 GiB file vs curl, aria2c, wget"),
    2: ("bench.s2_small_files", "1,000 files of 16 KiB vs aria2c -i -j 8, curl -Z, xargs -P8 curl"),
    3: ("bench.s3_pickup", "pickup latency (1,000 one at a time) and a 10,000-job burst"),
    4: ("bench.s4_ytdlp", "yt-dlp fixed cost per job vs python -m yt_dlp"),
    5: ("bench.s5_memory", "RSS idle, with 10,000 queued, during 1 GiB vs aria2c --enable-rpc"),
    6: ("bench.s6_reaper", "reaper pass over 10,000 stale and 10,000 locked dirs"),
    7: ("bench.s7_startup", "start-up with 100,000 job files waiting"),
    8: ("bench.s8_hls", "HLS stream of 200 segments (~100 MB) vs yt-dlp and yt-dlp -N 8"),
    9: ("bench.s9_burst_fleet", "bursts of 16 KiB jobs (10,000; 1,000) to 1 daemon and to 3 sharing a spool"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="videonote-dl benchmarks (issue 7).")
    parser.add_argument("--scenario", "-s", type=int, action="append", choices=sorted(SCENARIOS),
                        help="scenario to run (repeatable; default: all)")
    parser.add_argument("--runs", type=int, default=5, help="rounds per scenario (default 5; heavy ones use 3)")
    parser.add_argument("--quick", action="store_true", help="2 rounds each; results go to bench/results/raw/")
    parser.add_argument("--smoke", action="store_true",
                        help="CI smoke run: scenario 2 at 50 jobs, 1 round; results go to bench/results/raw/")
    parser.add_argument("--profile", action="store_true",
                        help="run the daemon under py-spy (in-process scenarios under cProfile); profiles in raw/")
    parser.add_argument("--daemon-src", type=Path, metavar="DIR",
                        help="run the daemon from another checkout (its daemon/ package) to measure a change")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for number, (_module, title) in SCENARIOS.items():
            print(f"{number}: {title}")
        return 0
    if args.runs < 1:
        print("--runs must be at least 1", file=sys.stderr)
        return 2
    if args.daemon_src is not None:
        src = args.daemon_src.resolve()
        if not (src / "daemon" / "__main__.py").is_file():
            print(f"--daemon-src {src} has no daemon/ package", file=sys.stderr)
            return 2
        daemon_runner.DAEMON_SRC = src
        log(f"daemon imported from {src}")
    if args.profile and not (shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()):
        print("--profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    chosen = [2] if args.smoke and not args.scenario else sorted(set(args.scenario or SCENARIOS))
    if os.geteuid() != 0:
        log("WARNING: not root: tmpfs cannot be mounted (using /dev/shm) and tools cannot be installed")
    signal.signal(signal.SIGTERM, _on_signal)
    tools = ensure_tools()
    versions = tool_versions(tools)
    started = time.time()
    failures = 0
    summaries: list[ScenarioResult] = []
    www_area, work_area = TmpfsArea("www", "3G"), TmpfsArea("work", "10G")
    try:
        with www_area as www, work_area as work:
            server = start_server(www, work / "nginx", tools.get("nginx"))
            storage = (f"served files: {www_area.kind}; spool, temp dirs, outputs and event log: {work_area.kind} "
                       "(the disk is not what is measured; on tmpfs the daemon's file_io: auto is inline, "
                       "so each job ends on the event loop)")
            log(f"server: {server.description} at {server.base_url}")
            ctx = BenchContext(www=www, work=work, base_url=server.base_url, tools=tools, runs=args.runs,
                               quick=args.quick, smoke=args.smoke, profile=args.profile,
                               server_description=server.description, storage_description=storage)
            meta = machine_meta(server.description, storage, versions)
            if args.daemon_src is not None:
                meta["git"] = f"daemon from {daemon_runner.DAEMON_SRC}"
            try:
                for number in chosen:
                    module_name, title = SCENARIOS[number]
                    log(f"scenario {number}: {title}")
                    t0, load0 = time.time(), " ".join(f"{x:.2f}" for x in os.getloadavg())
                    try:
                        module = importlib.import_module(module_name)
                        result: ScenarioResult = module.run(ctx)
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:
                        failures += 1
                        log(f"scenario {number} FAILED: {exc!r}")
                        traceback.print_exc()
                        result = ScenarioResult(number, title, "", notes=[f"FAILED: {type(exc).__name__}: {exc}"])
                    result.duration_s = result.duration_s or time.time() - t0
                    result.finished_at = time.strftime("%Y-%m-%d %H:%M:%S")
                    # Cada sección de latest.md puede venir de otra ejecución: su carga y su commit.
                    result.notes.append(f"load average when this scenario started: {load0}; "
                                        f"daemon source: git {meta.get('git') or '?'}")
                    summaries.append(result)
                    print(render_scenario_text(result.summary()), flush=True)
                    suffix = "-smoke" if args.smoke else "-quick" if args.quick else ""
                    suffix += "-daemon-src" if args.daemon_src is not None else ""
                    suffix += "-profile" if args.profile else ""
                    write_raw(f"scenario{number}{suffix}",
                              {"summary": result.summary(), "raw": result.raw})
                    if args.smoke or args.quick or args.profile or args.daemon_src is not None:
                        # Medidas parciales, bajo un perfilador o de otro árbol: nunca sobre latest.*.
                        kind = ("smoke" if args.smoke else "quick" if args.quick else "profile" if args.profile
                                else "daemon-src")
                        path = write_results_file([result], meta, RAW_DIR, kind)
                    else:
                        path = write_results_file([result], meta, RESULTS_DIR)
                    log(f"scenario {number} done in {time.time() - t0:.0f}s; results in {path}")
                    Procs.kill_all(keep=[server.proc])  # nada de un escenario sobrevive al siguiente
                    server_alive = server.proc.poll() is None
                    if not server_alive:
                        raise RuntimeError("the HTTP server died")
            finally:
                server.stop()
                Procs.kill_all()
    except KeyboardInterrupt:
        log("interrupted; everything started by the bench was stopped and the tmpfs unmounted")
        return 130
    log(f"all done in {time.time() - started:.0f}s; {failures} scenario(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
