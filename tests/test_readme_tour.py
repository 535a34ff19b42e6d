"""El recorrido de README.md, al pie de la letra: ``make run`` en una copia del checkout y, en otra
"terminal", cada línea del bloque del recorrido. Si el README y el programa se separan, esto falla."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.support.daemon_proc import wait_until

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _block(marker: str) -> list[str]:
    """Las líneas del bloque de código que sigue a ``<!-- marker -->`` en el README."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)\n```", text, re.DOTALL)
    assert match, f"README.md has no code block after <!-- {marker} -->"
    return [line for line in match.group(1).splitlines() if line.strip()]


def _collapse_progress(names: list[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        if not (name == "job.progress" and out and out[-1] == "job.progress"):
            out.append(name)
    return out


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    """Una copia mínima del checkout con ``make run`` listo: el Makefile, pyproject.toml, config.yaml y
    un ``.venv/bin/videonote-dl`` que corre este código (como el script de consola de pip)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    work = tmp_path / "checkout"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml", "config.yaml"):
        shutil.copy2(REPO / name, work / name)
    bindir = work / ".venv" / "bin"
    bindir.mkdir(parents=True)
    script = bindir / "videonote-dl"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                      "from daemon.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    (work / ".venv" / ".installed").touch()  # más nuevo que pyproject.toml: make no reinstala
    yield work


def test_the_readme_tour_runs_literally(checkout: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VIDEONOTE_DL_CONFIG", "MAKEFLAGS", "MAKELEVEL")}
    out_path, err_path = checkout / "make.out", checkout / "make.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        # Sesión propia: Ctrl-C en una terminal llega a todo el grupo (make y el daemon).
        make = subprocess.Popen(["make", "run"], cwd=checkout, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    try:
        status_file = checkout / "var" / "run" / "status.json"

        def ready() -> bool:
            if make.poll() is not None:
                raise AssertionError(f"make run exited {make.returncode}: {err_path.read_text()}")
            try:
                return orjson.loads(status_file.read_bytes()).get("state") == "running"
            except (OSError, orjson.JSONDecodeError):
                return False

        wait_until(ready, 60, interval=0.1, what="make run ready")
        outputs = []
        for line in _block("tour"):
            command = line.split("  #", 1)[0].strip()
            done = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            outputs.append((command, done.stdout))
        demo, show, events, status = (text for _cmd, text in outputs)
        published = checkout / "var" / "downloads" / "videonote-demo.bin"
        assert "done: " + str(published) in demo and published.stat().st_size == 8 * 1024 * 1024
        assert "job clip-42: succeeded" in show and str(checkout / "var/spool/done/clip-42.json") in show
        assert "job.recorded [clip-42]" in events
        assert "daemon: running" in status and "done 1" in status

        # Los eventos de muestra del README son los de una ejecución real, en el mismo orden.
        sample = [orjson.loads(line) for line in _block("tour-events")]
        real = [orjson.loads(line) for line in (checkout / "var/log/events.jsonl").read_bytes().splitlines()]
        real_names = [e["event"] for e in real if e.get("correlation_id") == "clip-42"]
        assert _collapse_progress([e["event"] for e in sample]) == _collapse_progress(real_names)
        assert len(sample) == len(real_names) or "job.progress" in real_names
        for event in sample:  # rutas absolutas, como las escribe el daemon
            for key in ("temp_dir", "path", "record"):
                if key in event:
                    assert event[key].startswith("/"), event
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C
        make.wait(60)
    stderr = err_path.read_text()
    first = stderr.splitlines()[0]
    # make run: ni avisos de empaquetado ni eco de órdenes; primero, la línea de bienvenida
    assert first.startswith(f"videonote-dl: spool {checkout / 'var/spool'}, event log "
                            f"{checkout / 'var/log/events.jsonl'}"), first
    assert first.endswith("submit a first job from another terminal: .venv/bin/videonote-dl demo"), first
    assert not re.search(r"warning|deprecat", out_path.read_text() + stderr, re.IGNORECASE), stderr[:2000]
    assert "SIGINT: stopping; nothing is running" in stderr
