# videonote-dl: `make run` arranca el daemon con ./config.yaml; `make test` corre toda la suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: run demo test lint bench bench-smoke install clean

# Silencioso: una línea al preparar el venv; los avisos de empaquetado propios están corregidos
# en pyproject.toml (licencia SPDX, .pth estático), así que `make run` no los repite.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (pip install -e '.[test]'; once, or when pyproject.toml changes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

# La orden `run` escribe al arrancar una línea con el spool, el registro y cómo enviar un trabajo.
run: $(STAMP)
	@$(VENV)/bin/videonote-dl run --config config.yaml

# Un primer trabajo sin red: sirve un archivo en 127.0.0.1 y lo envía al daemon de `make run`.
demo: $(STAMP)
	@$(VENV)/bin/videonote-dl demo --config config.yaml

# The suite runs in TEST_WORKERS processes (pytest-xdist): most tests wait on daemons, servers
# and containers rather than the CPU. The systemd container tests stay in one process.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(VENV)/bin/ruff check daemon tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(VENV)/bin/ruff check daemon tests bench
	$(VENV)/bin/mypy

clean:
	rm -rf var .pytest_cache .ruff_cache

# ---------------------------------------------------------------------------------------------
# make install / make uninstall: el daemon como servicio de sistema (docs/operations.md).
#   make install [PREFIX=/usr/local] [DESTDIR=] [INSTALL_PYTHON=/usr/bin/python3]
#                [PIP_INSTALL_ARGS='--no-index --find-links=DIR']   # instalación sin red
# El proyecto va a un venv propio en $(PREFIX)/lib/videonote-dl, creado con INSTALL_PYTHON (el
# python del sistema: uno bajo /root o /home no serviría con ProtectHome=yes), con un enlace en
# $(PREFIX)/bin. La unidad se instala con ExecStart= reescrito a ese enlace. Con PREFIX fuera de
# /usr y /usr/local, systemd no buscaría en $(PREFIX)/lib/systemd: unidad, sysusers.d y
# tmpfiles.d van entonces bajo $(SYSCONFDIR). Nunca se pisa un config.yaml existente.
# Con DESTDIR (empaquetado) se corrigen las rutas que el venv graba (shebangs, pyvenv.cfg, .pyc).
INSTALL_PYTHON   ?= /usr/bin/python3
PIP_INSTALL_ARGS ?=
SYSCONFDIR       ?= /etc
BINDIR           ?= $(PREFIX)/bin
INSTALL_VENV     ?= $(PREFIX)/lib/videonote-dl
SYSTEMD_BASE     := $(if $(filter /usr /usr/local,$(PREFIX)),$(PREFIX)/lib,$(SYSCONFDIR))
UNITDIR          ?= $(SYSTEMD_BASE)/systemd/system
SYSUSERSDIR      ?= $(SYSTEMD_BASE)/sysusers.d
TMPFILESDIR      ?= $(SYSTEMD_BASE)/tmpfiles.d
LOGROTATEDIR     ?= $(SYSCONFDIR)/logrotate.d
BASHCOMPDIR      ?= $(PREFIX)/share/bash-completion/completions
BASH_COMPLETION  ?= $(firstword $(wildcard systemd/videonote-dl.bash-completion systemd/videonote-dl.bash \
                      completions/videonote-dl.bash daemon/completion/videonote-dl.bash))

.PHONY: install uninstall

install:
	test -x $(INSTALL_PYTHON)
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(BINDIR)
	$(INSTALL_PYTHON) -m venv $(DESTDIR)$(INSTALL_VENV)
	$(DESTDIR)$(INSTALL_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		$(PIP_INSTALL_ARGS) $(CURDIR)
	if [ -n "$(DESTDIR)" ]; then \
		grep -rlF -- "$(DESTDIR)$(INSTALL_VENV)" $(DESTDIR)$(INSTALL_VENV)/bin \
			$(DESTDIR)$(INSTALL_VENV)/pyvenv.cfg | xargs -r sed -i "s|$(DESTDIR)$(INSTALL_VENV)|$(INSTALL_VENV)|g"; \
		$(DESTDIR)$(INSTALL_VENV)/bin/python -m compileall -q -f -s "$(DESTDIR)" -p / \
			$(DESTDIR)$(INSTALL_VENV)/lib >/dev/null; \
	fi
	ln -sfn $(INSTALL_VENV)/bin/videonote-dl $(DESTDIR)$(BINDIR)/videonote-dl
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/videonote-dl|$(BINDIR)/videonote-dl|g' \
		-e 's|/etc/videonote-dl/config.yaml|$(SYSCONFDIR)/videonote-dl/config.yaml|g' \
		systemd/videonote-dl.service >$(DESTDIR)$(UNITDIR)/videonote-dl.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/videonote-dl.service
	install -D -m 0644 systemd/videonote-dl.sysusers $(DESTDIR)$(SYSUSERSDIR)/videonote-dl.conf
	install -D -m 0644 systemd/videonote-dl.tmpfiles $(DESTDIR)$(TMPFILESDIR)/videonote-dl.conf
	install -D -m 0644 systemd/videonote-dl.logrotate $(DESTDIR)$(LOGROTATEDIR)/videonote-dl
	if [ -e $(DESTDIR)$(SYSCONFDIR)/videonote-dl/config.yaml ]; then \
		echo "kept existing $(DESTDIR)$(SYSCONFDIR)/videonote-dl/config.yaml"; \
	else \
		install -D -m 0644 systemd/config.yaml $(DESTDIR)$(SYSCONFDIR)/videonote-dl/config.yaml; \
	fi
	if [ -n "$(BASH_COMPLETION)" ]; then \
		install -D -m 0644 $(BASH_COMPLETION) $(DESTDIR)$(BASHCOMPDIR)/videonote-dl; \
	fi
	@echo "installed; now: systemd-sysusers && systemd-tmpfiles --create && systemctl daemon-reload" \
		"&& systemctl enable --now videonote-dl"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/videonote-dl $(DESTDIR)$(UNITDIR)/videonote-dl.service \
		$(DESTDIR)$(SYSUSERSDIR)/videonote-dl.conf $(DESTDIR)$(TMPFILESDIR)/videonote-dl.conf \
		$(DESTDIR)$(LOGROTATEDIR)/videonote-dl $(DESTDIR)$(BASHCOMPDIR)/videonote-dl
	rm -rf $(DESTDIR)$(INSTALL_VENV)
	@echo "uninstalled; kept $(SYSCONFDIR)/videonote-dl, /var/lib/videonote-dl, /var/log/videonote-dl and the user"

# ---------------------------------------------------------------------------------------------
# make bench: los bancos de bench/ (issue 7). Monta tmpfs, arranca nginx (lo instala con apt-get
# si falta) y corre los 7 escenarios frente a curl, aria2c, wget y yt-dlp; imprime las tablas y
# escribe bench/results/latest.md y latest.json (unos 15 minutos; como root). BENCH_ARGS pasa
# opciones (p. ej. BENCH_ARGS='--scenario 2 --runs 7'). make bench-smoke: el humo de CI
# (escenario 2 con 50 trabajos, una ronda; resultados en bench/results/raw/).
BENCH_ARGS ?=

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

bench-smoke: $(STAMP)
	$(PY) -m bench.run --smoke
