"""Coste fijo de CPU por trabajo yt-dlp: subproceso por trabajo (etapa 1) frente al zigoto (etapa 2).

Uso (desde la raíz del repositorio)::

    .venv/bin/python -m bench.ytdlp_cost [--n 20] [--out bench/results/ytdlp_cost.json]

Corre N trabajos pequeños de cada forma contra un servidor HTTP local (el de las pruebas, en un
proceso aparte para que su CPU no se mezcle), alternando las formas trabajo a trabajo
(A B C A B C ...) porque estas máquinas son ruidosas, e imprime una tabla con la CPU por trabajo:

- ``cli``: ``python -m yt_dlp -o ... URL`` a secas, la referencia que usaría un operador;
- ``subprocess``: ``YtdlpDownloader(use_zygote=False)`` a través de ``DownloadLifecycle``;
- ``zygote``: ``YtdlpDownloader(use_zygote=True)``, igual.

La CPU de un trabajo es la de sus procesos hijos (``wait4``/rusage): para ``cli`` y
``subprocess``, el delta de ``RUSAGE_CHILDREN`` de este proceso; para ``zygote``, la que el
zigoto mide al recoger al hijo más la parte del propio zigoto (``fork`` y recogida, medida en
``/proc/<pid>/stat`` sobre toda la tanda y repartida entre sus trabajos). Aparte se da la CPU
del lado del daemon (leer el progreso, sha256...) y el arranque del zigoto, que se paga una vez.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from daemon.downloaders.base import DownloadOptions  # noqa: E402
from daemon.downloaders.download_lifecycle import DownloadLifecycle  # noqa: E402
from daemon.downloaders.ytdlp import YtdlpDownloader, ytdlp_version  # noqa: E402
from daemon.events import configure_events  # noqa: E402

TARGET_CPU_S = 0.15
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Servidor en un proceso aparte: MP4 mínimo hecho a mano y una página con <video>.
_SERVER = r"""
import struct, sys, time
sys.path.insert(0, sys.argv[1])
from tests.support.http_server import Behavior, TestServer

def box(kind, payload):
    return struct.pack(">I4s", 8 + len(payload), kind) + payload

mvhd = box(b"mvhd", bytes(4) + struct.pack(">IIII", 0, 0, 1000, 0) + struct.pack(">IH", 0x10000, 0x100)
           + bytes(10) + struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000) + bytes(24)
           + struct.pack(">I", 2))
media = (box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41") + box(b"moov", mvhd)
         + box(b"mdat", bytes((i * 7) % 251 for i in range(64 * 1024))))
page = (b"<!DOCTYPE html><html><head><title>Bench page</title></head><body>"
        b'<video controls><source src="/media/clip.mp4" type="video/mp4"></video></body></html>')
srv = TestServer().start()
srv.add("/media/clip.mp4", Behavior(data=media, content_type="video/mp4"))
srv.add("/page.html", Behavior(data=page, content_type="text/html"))
print(srv.port, flush=True)
sys.stdin.read()
"""


# pick_downloader en un proceso nuevo: la primera llamada (importar yt_dlp, compilar) y las
# siguientes (sin la caché por URL), mediana de 300 llamadas por URL.
_PICK = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
import daemon, daemon.downloaders.ytdlp.extractors as y
out = {"rss_before_mib": round(rss(), 1), "yt_dlp_imported_at_daemon_import": "yt_dlp" in sys.modules}
t, c = time.perf_counter(), time.process_time()
y.pick_downloader("https://www.youtube.com/watch?v=dQw4w9WgXcQ")
out["first_call"] = {"wall_s": round(time.perf_counter() - t, 3), "cpu_s": round(time.process_time() - c, 3)}
out["rss_after_mib"] = round(rss(), 1)
out["per_url_ms"] = {}
for url in ["https://example.org/file.bin", "http://127.0.0.1:8080/media/clip.mp4",
            "https://vimeo.com/76979871", "https://www.youtube.com/watch?v=dQw4w9WgXcQ"]:
    samples = []
    for _ in range(300):
        y._claims.clear()
        t = time.perf_counter()
        choice = y.pick_downloader(url)
        samples.append(time.perf_counter() - t)
    out["per_url_ms"][url] = {"choice": choice, "median": round(statistics.median(samples) * 1000, 3),
                              "min": round(min(samples) * 1000, 3)}
print(json.dumps(out))
"""


def _pick_timings() -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", _PICK, str(REPO)], capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int) -> tuple[float, float]:
    """(CPU propia, CPU de hijos recogidos) de ``pid`` según /proc, en segundos."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 4),
        "min": round(min(samples), 4),
        "max": round(max(samples), 4),
        "mean": round(statistics.fmean(samples), 4),
    }


async def _job(downloader: YtdlpDownloader, cid: str, url: str, root: Path) -> dict[str, Any]:
    options = DownloadOptions(url=url, allow_private_networks=True, timeout=120.0)
    lifecycle = DownloadLifecycle(cid, options, base_temp_dir=root)
    result = await lifecycle.execute(downloader.download, None)
    return result.extra


async def _run(n: int, base_url: str, root: Path) -> dict[str, Any]:
    subproc = YtdlpDownloader(use_zygote=False)
    zygote = YtdlpDownloader(use_zygote=True)
    cpu_before_start = _children_cpu()
    started = time.perf_counter()
    assert await zygote.prestart(), "the zygote did not start"
    zygote_startup_wall = time.perf_counter() - started
    zpid = zygote.zygote_pid
    assert zpid is not None
    zygote_startup_cpu = sum(_proc_cpu(zpid))
    del cpu_before_start

    scenarios: dict[str, Any] = {}
    for scenario, path in (("direct_media", "/media/clip.mp4"), ("html_page", "/page.html")):
        url = base_url + path
        cpu: dict[str, list[float]] = {"cli": [], "subprocess": [], "zygote_child": []}
        daemon_cpu: dict[str, list[float]] = {"subprocess": [], "zygote": []}
        wall: dict[str, list[float]] = {"cli": [], "subprocess": [], "zygote": []}
        z_self_before, _ = _proc_cpu(zpid)
        for i in range(n):
            # A: la orden que usaría un operador.
            out = root / f"cli-{scenario}-{i}"
            out.mkdir()
            c0, t0 = _children_cpu(), time.perf_counter()
            subprocess.run([sys.executable, "-m", "yt_dlp", "--ignore-config", "--quiet", "--no-warnings",
                            "--no-progress", "-o", f"{out}/%(title)s.%(ext)s", "--", url],
                           check=True, stdin=subprocess.DEVNULL, cwd=out)
            wall["cli"].append(time.perf_counter() - t0)
            cpu["cli"].append(_children_cpu() - c0)
            # B: etapa 1.
            c0, s0, t0 = _children_cpu(), _self_cpu(), time.perf_counter()
            extra = await _job(subproc, f"sub-{scenario}-{i}", url, root)
            wall["subprocess"].append(time.perf_counter() - t0)
            cpu["subprocess"].append(_children_cpu() - c0)
            daemon_cpu["subprocess"].append(_self_cpu() - s0)
            assert extra["ytdlp_mode"] == "subprocess"
            # C: etapa 2.
            s0, t0 = _self_cpu(), time.perf_counter()
            extra = await _job(zygote, f"zyg-{scenario}-{i}", url, root)
            wall["zygote"].append(time.perf_counter() - t0)
            daemon_cpu["zygote"].append(_self_cpu() - s0)
            assert extra["ytdlp_mode"] == "zygote", extra
            cpu["zygote_child"].append(float(extra["ytdlp_cpu_s"]))
        z_self_after, _ = _proc_cpu(zpid)
        zygote_share = (z_self_after - z_self_before) / n  # fork + recogida, repartido
        cpu["zygote"] = [c + zygote_share for c in cpu["zygote_child"]]
        base = statistics.median(cpu["subprocess"])
        scenarios[scenario] = {
            "url_path": path,
            "cpu_per_job_s": {k: _summary(v) for k, v in cpu.items()},
            "zygote_self_cpu_per_job_s": round(zygote_share, 4),
            "daemon_side_cpu_per_job_s": {k: _summary(v) for k, v in daemon_cpu.items()},
            "wall_per_job_s": {k: _summary(v) for k, v in wall.items()},
            "ratio_subprocess_over_zygote": round(base / statistics.median(cpu["zygote"]), 2),
            "zygote_meets_target": statistics.median(cpu["zygote"]) <= TARGET_CPU_S,
            "samples": {k: [round(x, 4) for x in v] for k, v in cpu.items()},
        }
    rss_kib = int(Path(f"/proc/{zpid}/status").read_text().split("VmRSS:")[1].split()[0])
    await zygote.aclose()
    return {
        "zygote_startup": {"wall_s": round(zygote_startup_wall, 3), "cpu_s": round(zygote_startup_cpu, 3),
                           "rss_mib": round(rss_kib / 1024, 1)},
        "scenarios": scenarios,
    }


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"yt-dlp fixed CPU cost per job (N={report['n']}, yt-dlp {report['ytdlp_version']}, "
        f"target <= {TARGET_CPU_S} s for the zygote)",
        "",
        f"{'scenario':<13} {'mode':<11} {'CPU/job median':>15} {'min-max':>15} {'wall median':>12} "
        f"{'daemon CPU':>11} {'ratio':>6}",
    ]
    for name, sc in report["scenarios"].items():
        base = sc["cpu_per_job_s"]["subprocess"]["median"]
        for mode in ("cli", "subprocess", "zygote"):
            c = sc["cpu_per_job_s"][mode]
            w = sc["wall_per_job_s"][mode]
            d = sc["daemon_side_cpu_per_job_s"].get(mode)
            daemon = f"{d['median']:.3f} s" if d else "-"
            lines.append(
                f"{name:<13} {mode:<11} {c['median']:>13.3f} s {c['min']:>6.3f}-{c['max']:<6.3f}s "
                f"{w['median']:>10.3f} s {daemon:>11} {base / c['median']:>5.2f}x"
            )
    p = report["pick_downloader"]
    lines += ["", f"pick_downloader: first call {p['first_call']['cpu_s']:.3f} s CPU "
              f"({p['first_call']['wall_s']:.3f} s wall), RSS {p['rss_before_mib']} -> {p['rss_after_mib']} MiB"]
    for url, timing in p["per_url_ms"].items():
        lines.append(f"  {timing['choice']:<6} {timing['median']:>7.3f} ms median  {url}")
    z = report["zygote_startup"]
    lines += ["", f"zygote start-up (once): {z['cpu_s']:.3f} s CPU, {z['wall_s']:.3f} s wall, "
              f"RSS {z['rss_mib']} MiB (shared copy-on-write with its children)",
              "ratio = subprocess CPU/job divided by this mode's CPU/job (higher is cheaper)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="jobs per mode and scenario (default 20)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ytdlp_cost.json")
    args = parser.parse_args(argv)
    configure_events(None, stderr=False)
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(REPO)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="ytdlp-cost-") as tmp:
            result = asyncio.run(_run(args.n, f"http://127.0.0.1:{port}", Path(tmp)))
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    report = {
        "benchmark": "ytdlp_cost",
        "n": args.n,
        "ytdlp_version": ytdlp_version(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "server": "tests/support/http_server.py in its own process (its CPU is not counted)",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target_cpu_per_job_s": TARGET_CPU_S,
        **result,
        "pick_downloader": _pick_timings(),
    }
    print(_table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
