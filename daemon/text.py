"""Texto seguro para mostrar: nombres de archivo y campos ajenos llegan a logs, terminales y .reason."""

from __future__ import annotations

import re

__all__ = ["UNSAFE_CHARS", "printable"]

# Caracteres que no deben llegar a nombres, URLs, cabeceras ni registros desde un archivo de
# trabajo: control C0/C1, separadores de línea y párrafo Unicode, controles de dirección bidi
# (textos que engañan a la vista) y sustitutos sueltos (no se pueden codificar en UTF-8).
UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(ch: str) -> str:
    """``\\xHH``, ``\\uHHHH`` o ``\\UHHHHHHHH``: siempre de ancho fijo, así que nunca es ambiguo."""
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, limit: int | None = None) -> str:
    """Escapa todo lo no imprimible (controles, ESC, saltos, bidi, sustitutos de bytes no UTF-8).

    Es la única forma de escapar del daemon: la usan los eventos, los ``.reason`` de rejected/ y
    los motivos de ``JobRejected``. ``limit`` recorta el resultado (con ``...``).
    """
    shown = text if text.isprintable() else "".join(ch if ch.isprintable() else _escape(ch) for ch in text)
    if limit is not None and len(shown) > limit:
        return shown[:limit] + "..."
    return shown
