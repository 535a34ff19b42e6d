"""Texto seguro para mostrar: nombres de archivo y campos ajenos llegan a logs, terminales y .reason."""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str, limit: int | None = None) -> str:
    """Escapa todo lo no imprimible (controles, ESC, saltos, bidi, sustitutos de bytes no UTF-8)."""
    if text.isprintable():
        shown = text
    else:
        shown = "".join(
            ch if ch.isprintable() else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
            for ch in text
        )
    if limit is not None and len(shown) > limit:
        return shown[:limit] + "..."
    return shown
