"""Resumen de un perfil de py-spy en formato ``raw`` (pilas colapsadas: ``marco;marco;... N``).

Uso: ``python -m bench.profile_report bench/results/raw/profile-s2.txt [--top 25] [--lines]
[--filter TEXTO]``. Imprime las funciones con más muestras propias (la CPU que gastan ellas) y
con más muestras inclusivas (ellas y lo que llaman), en porcentaje del total de muestras activas.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def _frame(text: str, keep_lines: bool) -> str:
    text = text.strip()
    if not keep_lines:
        text = _LINE.sub(")", text)
    # Rutas largas del venv o del repositorio: sólo lo que identifica al módulo.
    text = re.sub(r"\(/[^)]*?/site-packages/", "(", text)
    text = re.sub(r"\(/[^)]*?/lib/python3\.\d+/", "(stdlib/", text)
    return re.sub(r"\(/work/[^/]+/", "(", text)


def summarize(path: Path, top: int = 25, keep_lines: bool = False, contains: str = "") -> str:
    """Texto con las tablas de funciones propias e inclusivas."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if contains and contains not in stack:
            continue
        count = int(count_text)
        frames = [_frame(f, keep_lines) for f in stack.split(";") if f.strip()]
        # El primer marco es el proceso/hilo en py-spy (p. ej. "process 123:..."): se descarta.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"{path}: no samples"
    out = [f"{path}: {total} active samples" + (f" (stacks containing {contains!r})" if contains else "")]
    for title, counter in (("self", own), ("inclusive", inclusive)):
        out += ["", f"top {top} by {title} samples:", f"{'%':>6}  {'samples':>8}  function"]
        for name, count in counter.most_common(top):
            out.append(f"{100 * count / total:6.1f}  {count:8d}  {name}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--lines", action="store_true", help="keep line numbers (per-line rather than per-function)")
    parser.add_argument("--filter", default="", help="only stacks containing this text")
    args = parser.parse_args(argv)
    print(summarize(args.profile, args.top, args.lines, args.filter))
    return 0


if __name__ == "__main__":
    sys.exit(main())
