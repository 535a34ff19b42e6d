"""Piezas comunes de los bancos: estadística, medición por parejas, tablas y resultados.

- Las medidas se toman por parejas (A B A B ...): en cada ronda corren el daemon y cada
  herramienta, en un orden que rota de ronda en ronda para no favorecer a nadie; la razón
  daemon/herramienta se calcula dentro de cada ronda y se informa su mediana. Así el ruido de
  una máquina compartida afecta a los dos lados de cada razón casi por igual.
- Los resultados de cada escenario se fusionan en ``bench/results/latest.json`` (los de otros
  escenarios se conservan, con su fecha) y ``latest.md`` se regenera entero desde ese JSON.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.support.daemon_proc import wait_until as _wait_until

__all__ = [
    "BENCH_DIR",
    "RAW_DIR",
    "RESULTS_DIR",
    "Measurement",
    "Row",
    "ScenarioResult",
    "Target",
    "fmt",
    "log",
    "median",
    "percentile",
    "render_markdown",
    "render_scenario_text",
    "run_paired",
    "wait_until",
    "write_raw",
    "write_results",
]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RAW_DIR = RESULTS_DIR / "raw"

Measurement = dict[str, float]


def log(message: str) -> None:
    """Progreso legible en stderr (la tabla va a stdout)."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


# --- estadística ----------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Percentil ``q`` (0-100) con interpolación lineal (el método por defecto de numpy)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.01, what: str = "") -> Any:
    """``tests.support.daemon_proc.wait_until`` con el paso fino de los bancos y ``TimeoutError``
    (los bancos lo capturan) en lugar de ``AssertionError``."""
    return _wait_until(predicate, timeout, interval=interval, what=what, error=TimeoutError)


# --- medición por parejas ----------------------------------------------------------------
def run_paired(
    contenders: Sequence[tuple[str, Callable[[int], Measurement]]],
    rounds: int,
    between: Callable[[], None] | None = None,
) -> dict[str, list[Measurement]]:
    """Corre ``rounds`` rondas; en cada una, todos los contendientes en orden rotado.

    Devuelve, por nombre, una medida por ronda (en orden de ronda), para poder formar las
    razones ronda a ronda. ``between`` se llama entre dos ejecuciones (limpieza, respiro).
    """
    results: dict[str, list[Measurement]] = {name: [] for name, _ in contenders}
    n = len(contenders)
    for rnd in range(rounds):
        order = [contenders[(rnd + k) % n] for k in range(n)]
        for name, func in order:
            measurement = func(rnd)
            results[name].append(measurement)
            log(f"  round {rnd + 1}/{rounds} {name}: "
                + ", ".join(f"{k}={v:.4g}" for k, v in measurement.items() if isinstance(v, int | float)))
            if between is not None:
                between()
    return results


def ratios_to(daemon: list[Measurement], tool: list[Measurement], key: str = "wall") -> list[float]:
    """Razones ronda a ronda daemon / herramienta (el método de los bancos: misma ronda, misma carga)."""
    return [dm[key] / m[key] for dm, m in zip(daemon, tool, strict=True)]


# --- filas, objetivos, escenarios -------------------------------------------------------------
@dataclass(slots=True)
class Row:
    """Una fila de tabla: un contendiente y una métrica, con sus valores por ronda."""

    name: str
    metric: str
    unit: str
    values: list[float]
    ratios: list[float] | None = None  # daemon/herramienta, ronda a ronda
    ratio_label: str = ""
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.values)

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name, "metric": self.metric, "unit": self.unit, "n": self.n,
            "median": median(self.values), "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None, "values": self.values, "note": self.note,
        }
        if self.ratios:
            data.update(ratio=median(self.ratios), ratio_min=min(self.ratios), ratio_max=max(self.ratios),
                        ratios=self.ratios, ratio_label=self.ratio_label)
        return data


@dataclass(slots=True)
class Target:
    """Un objetivo de la issue: ``measured`` debe quedar por debajo (``at_most``) o encima de ``limit``."""

    name: str
    measured: float | None
    limit: float
    unit: str
    at_most: bool = True
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None or math.isnan(self.measured):
            return None
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit

    def miss(self) -> str:
        """Cuánto falta: vacío si se cumple."""
        if self.met is not False or self.measured is None:
            return ""
        if self.at_most:
            return f"{self.measured / self.limit:.2f}x the limit (+{fmt(self.measured - self.limit)} {self.unit})"
        return f"{self.measured / self.limit:.2f}x the floor (-{fmt(self.limit - self.measured)} {self.unit})"

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "limit": self.limit, "unit": self.unit,
                "at_most": self.at_most, "met": self.met, "miss": self.miss(), "detail": self.detail}


@dataclass(slots=True)
class ScenarioResult:
    """Lo que un escenario devuelve: filas, objetivos, notas y datos crudos."""

    number: int
    title: str
    what: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    runs: int = 0
    duration_s: float = 0.0
    finished_at: str = ""

    def summary(self) -> dict[str, Any]:
        return {
            "number": self.number, "title": self.title, "what": self.what, "runs": self.runs,
            "duration_s": round(self.duration_s, 1), "finished_at": self.finished_at,
            "rows": [row.summary() for row in self.rows], "targets": [t.summary() for t in self.targets],
            "notes": self.notes,
        }


# --- formato --------------------------------------------------------------------------------
def fmt(value: float | None, digits: int = 3) -> str:
    """Número legible con ``digits`` cifras significativas (sin notación científica)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:,.{decimals}f}"
    return text


def _row_cells(row: dict[str, Any]) -> list[str]:
    unit = row["unit"]
    if row["n"] == 0:
        return [row["name"], row["metric"], "n/a", "n/a", "0", "", row.get("note", "")]
    ratio = ""
    if row.get("ratio") is not None:
        ratio = f"{fmt(row['ratio'])}x ({fmt(row['ratio_min'])}-{fmt(row['ratio_max'])})"
        if row.get("ratio_label"):
            ratio += f" {row['ratio_label']}"
    return [
        row["name"], row["metric"], f"{fmt(row['median'])} {unit}",
        f"{fmt(row['min'])} - {fmt(row['max'])}", str(row["n"]), ratio, row.get("note", ""),
    ]


_HEADERS = ["contender", "metric", "median", "min - max", "runs", "ratio daemon/tool (min-max)", "note"]
_TARGET_HEADERS = ["target", "measured", "limit", "status", "detail"]


def _target_cells(t: dict[str, Any]) -> list[str]:
    op = "<=" if t["at_most"] else ">="
    status = {True: "MET", False: "MISSED", None: "not measured"}[t["met"]]
    if t["met"] is False:
        status += f": {t['miss']}"
    return [t["name"], f"{fmt(t['measured'])} {t['unit']}", f"{op} {fmt(t['limit'])} {t['unit']}", status,
            t.get("detail", "")]


def _md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for cells in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def _text_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    body = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in body) for i in range(len(headers))]
    lines = []
    for k, cells in enumerate(body):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def render_scenario_text(summary: dict[str, Any]) -> str:
    """La tabla de un escenario para la terminal."""
    lines = [f"\n== Scenario {summary['number']}: {summary['title']} ({summary['runs']} runs, "
             f"{summary['duration_s']}s) =="]
    lines += _text_table(_HEADERS, (_row_cells(r) for r in summary["rows"]))
    if summary["targets"]:
        lines.append("")
        lines += _text_table(_TARGET_HEADERS, (_target_cells(t) for t in summary["targets"]))
    for note in summary["notes"]:
        lines.append(f"  * {note}")
    return "\n".join(lines) + "\n"


def render_markdown(document: dict[str, Any]) -> str:
    """``latest.md`` completo desde el JSON fusionado."""
    meta = document.get("meta", {})
    out = [
        "# videonote-dl benchmarks: latest results",
        "",
        "Generated by `make bench` (`python -m bench.run`); see [bench/README.md](../README.md) for what each "
        "scenario measures and its caveats. Ratios are daemon time / tool time taken round by round "
        "(A B A B ..., order rotated each round); the median ratio is quoted with its min-max; absolute "
        "times are medians with min-max beside them.",
        "",
    ]
    if meta:
        out += [
            f"- updated: {meta.get('updated_at')}",
            f"- machine: {meta.get('cpu')}, {meta.get('cores')} cores, {meta.get('memory')}, "
            f"kernel {meta.get('kernel')}, Python {meta.get('python')}",
            f"- load average when the run started: {meta.get('loadavg')} (machine shared with other work)",
            f"- server: {meta.get('server')}",
            f"- storage: {meta.get('storage')}",
            f"- tools: {meta.get('tools')}",
            f"- daemon source: git {meta.get('git') or '?'}",
            "",
        ]
    scenarios = document.get("scenarios", {})
    all_targets = [(num, t) for num, sc in sorted(scenarios.items(), key=lambda kv: int(kv[0]))
                   for t in sc.get("targets", [])]
    if all_targets:
        out += ["## Targets (issues 7 and 18)", ""]
        out += _md_table(["scenario", *_TARGET_HEADERS], ([num, *_target_cells(t)] for num, t in all_targets))
        out.append("")
    for num, sc in sorted(scenarios.items(), key=lambda kv: int(kv[0])):
        out += [f"## Scenario {num}: {sc['title']}", "", sc["what"], "",
                f"{sc['runs']} runs; took {sc['duration_s']} s; finished {sc['finished_at']}.", ""]
        out += _md_table(_HEADERS, (_row_cells(r) for r in sc["rows"]))
        out.append("")
        for note in sc.get("notes", []):
            out.append(f"- {note}")
        if sc.get("notes"):
            out.append("")
    return "\n".join(out) + "\n"


# --- resultados en disco ----------------------------------------------------------------------
def machine_meta(server: str, storage: str, tools: dict[str, str]) -> dict[str, Any]:
    """Descripción de la máquina y del entorno de la medida."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "updated_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu, "cores": os.cpu_count(),
        "memory": memory, "kernel": platform.release(), "python": platform.python_version(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()), "server": server, "storage": storage,
        "tools": ", ".join(f"{k} {v}" for k, v in tools.items()),
        "git": _git_head(),
    }


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "-C", str(BENCH_DIR.parent), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write_results(results: Sequence[ScenarioResult], meta: dict[str, Any], directory: Path,
                  basename: str = "latest") -> Path:
    """Fusiona los escenarios en ``<basename>.json`` y regenera ``<basename>.md``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{basename}.json"
    try:
        document = orjson.loads(json_path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        document = {}
    document["meta"] = meta
    scenarios = document.setdefault("scenarios", {})
    for result in results:
        scenarios[str(result.number)] = result.summary()
    json_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    md_path = directory / f"{basename}.md"
    md_path.write_text(render_markdown(document))
    return md_path


def write_raw(name: str, data: Any) -> Path:
    """Datos crudos (muestras, eventos resumidos) en ``bench/results/raw/`` (ignorado por git)."""
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    path = RAW_DIR / f"{name}.json"
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=_json_default))
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return repr(value)
