# videonote-dl: `make run` starts the daemon with ./config.yaml; `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: run demo test lint bench bench-smoke install clean

# Quiet: one line while setting up the venv; the project's own packaging warnings are fixed in
# pyproject.toml (SPDX license, static .pth), so `make run` does not repeat them.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (pip install -e '.[test]'; once, or when pyproject.toml changes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

# At start-up, `run` prints a line with the spool, the event log and how to submit a job.
run: $(STAMP)
	@$(VENV)/bin/videonote-dl run --config config.yaml

# A first job without a network: serves a file on 127.0.0.1 and submits it to the `make run` daemon.
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
# make install / make uninstall: the daemon as a system service (docs/operations.md).
#   make install [PREFIX=/usr/local] [DESTDIR=] [INSTALL_PYTHON=/usr/bin/python3]
#                [PIP_INSTALL_ARGS='--no-index --find-links=DIR']   # offline install
# The project goes into its own venv in $(PREFIX)/lib/videonote-dl, created with INSTALL_PYTHON (the
# system python: one under /root or /home would not work with ProtectHome=yes), with a symlink in
# $(PREFIX)/bin. The unit is installed with ExecStart= rewritten to that link. With PREFIX outside
# /usr and /usr/local, systemd would not look in $(PREFIX)/lib/systemd, so the unit, sysusers.d and
# tmpfiles.d files go under $(SYSCONFDIR) instead. An existing config.yaml is never overwritten.
# With DESTDIR (packaging), the paths that the venv records (shebangs, pyvenv.cfg, .pyc) are fixed.
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
# make bench: the benchmarks in bench/ (issue 7). Mounts a tmpfs, starts nginx (installing it with
# apt-get if missing) and runs the 7 scenarios against curl, aria2c, wget and yt-dlp; prints the
# tables and writes bench/results/latest.md and latest.json (about 15 minutes; as root). BENCH_ARGS
# passes options (e.g. BENCH_ARGS='--scenario 2 --runs 7'). make bench-smoke: the CI smoke run
# (scenario 2 with 50 jobs, one round; results in bench/results/raw/).
BENCH_ARGS ?=

bench: $(STAMP)
	$(PY) -m bench.run $(BENCH_ARGS)

bench-smoke: $(STAMP)
	$(PY) -m bench.run --smoke
