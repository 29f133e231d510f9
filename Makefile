# cloudctl: make install | make run | make test | make bench
VENV    ?= .venv
PY      := $(VENV)/bin/python
CONFIG  ?= config/cloudctl.yaml
# Build deps and bench tools, plus what the real-guest tests need (libvirtd, qemu under TCG).
DEB_PKGS := libvirt-dev pkg-config wrk $(shell grep -v '^\#' scripts/debian-packages.txt)

.PHONY: install deps venv run test test-e2e bench stress clean fuzz

install: deps venv

deps:
	@if command -v apt-get >/dev/null; then \
	  missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	  fi; \
	fi

venv:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps fake-switches

run:
	$(PY) -m cloudctl serve --config $(CONFIG)

test:
	$(PY) -m pytest -q

test-e2e:
	$(PY) -m pytest -q -m e2e

# The long fuzzing run: 2000 hypothesis examples per EC2 action (CI runs a few per action).
FUZZ_EXAMPLES ?= 2000
fuzz:
	CLOUDCTL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz_ec2.py

bench:
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/run.py
	$(PY) bench/flood.py

# The long reliability run: 20 crash trials under load, then 50 clients for 60 s.
stress:
	CLOUDCTL_CRASH_TRIALS=20 $(PY) -m pytest -q -s tests/test_crash_trials.py
	$(PY) bench/stress.py --clients 50 --seconds 60

clean:
	rm -rf $(VENV) build *.egg-info
