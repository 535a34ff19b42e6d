"""Bancos de medida de videonote-dl frente a curl, aria2c, wget y yt-dlp (issue 7).

No son pruebas: son guiones que imprimen una tabla y escriben ``bench/results/latest.md`` y
``bench/results/latest.json``. Se ejecutan con ``make bench`` o ``python -m bench.run``.
"""
