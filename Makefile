# cloudctl: make install | make run | make test | make bench
# Test tiers: make unit (seconds) < make check (minutes, parallel) < make test (all: + lab + e2e, as CI)
VENV    ?= .venv
PY      := $(VENV)/bin/python
CONFIG  ?= config/cloudctl.yaml
# Build deps and bench tools, plus what the real-guest tests need (libvirtd, qemu under TCG).
DEB_PKGS := libvirt-dev pkg-config wrk $(shell grep -v '^\#' scripts/debian-packages.txt)

.PHONY: install deps venv js constraints run lint test unit check test-lab test-e2e test-conformance bench bench-scale stress clean fuzz

install: deps venv js

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
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	$(PY) -m pip install -q -c constraints.txt --no-deps fake-switches

# The AWS SDK for JavaScript the conformance tier drives, pinned by tests/conformance/js/package-lock.json
# (node from Debian; npm too where node came without it).
js:
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends npm; }
	cd tests/conformance/js && npm ci --no-audit --no-fund --loglevel=error

# constraints.txt pins every package `make install` puts in the venv. botocore is pinned on purpose:
# its service model is the wire format cloudctl serves (and the test clients speak), so moving it is
# a deliberate commit with the tests run, never a side effect of a fresh install. Regenerate from a
# venv you have tested with `make constraints`.
constraints:
	( echo "# pip constraints for make install: pip freeze of a tested venv (make constraints), cloudctl itself left out."; \
	  echo "# botocore (and boto3/awscli, which require matching versions) is pinned on purpose: its service model"; \
	  echo "# is the EC2 wire format cloudctl serves; upgrade it in its own commit, with the whole suite run."; \
	  $(PY) -m pip freeze --exclude-editable | grep -iv '^cloudctl[= @]' ) > constraints.txt

# glibc caches up to 7 freed blocks per size class in each thread (its tcache), and each hypervisor
# host keeps a libvirt thread: 2 a class was ~5 MiB less at 20,000 instances with 200 hosts at no
# measurable cost in instructions (docs/scaling.md, perf-mem4). glibc reads it only when the process
# starts: set here, with what the re-exec would add (code without column tables), `cloudctl serve`
# need not re-execute itself (cloudctl/malloc.py); an operator's own values win.
run:
	GLIBC_TUNABLES="$${GLIBC_TUNABLES:-glibc.malloc.tcache_count=2:glibc.malloc.mmap_threshold=1048576}" \
	PYTHONNODEBUGRANGES="$${PYTHONNODEBUGRANGES-1}" $(PY) -m cloudctl serve --config $(CONFIG)

# ruff (config in pyproject.toml): pyflakes' checks, pycodestyle's, import order, 120 columns.
lint:
	$(VENV)/bin/ruff check cloudctl tests bench

# The whole suite, as CI runs it (.ci/run): needs root, the host daemons and qemu. The e2e and lab
# tiers run serially (they share libvirtd, OVS and the host's network), then the rest as `make check`
# does, on every core; both always run, and either failing fails the target. Hypothesis runs its `ci`
# profile here (tests/conftest.py); elsewhere `dev` unless CI or HYPOTHESIS_PROFILE says otherwise.
test:
	@export HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci}; rc=0; \
	$(PY) -m pytest -q -m "e2e or lab" || rc=1; \
	$(PY) -m pytest -q -m "not e2e and not lab" -n auto --dist loadfile || rc=1; \
	exit $$rc

# In-process only (protocol, signatures, store, the core over test:///, the libvirt driver): seconds.
UNIT_TESTS := tests/test_protocol.py tests/test_auth.py tests/test_store.py tests/test_compute_core.py \
	tests/test_libvirt_driver.py tests/test_ec2_action_registry.py tests/test_hypervisor_registry.py \
	tests/test_failover_config.py tests/test_switch_families.py tests/test_configdrive.py tests/test_sshkeys.py
unit:
	$(PY) -m pytest -q $(UNIT_TESTS)

# Everything but the lab, e2e and conformance tiers, on every core; --dist loadfile keeps a module's
# servers on one worker. `make check PYTEST_ARGS='-m "not e2e and not lab and not conformance and not slow"'`
# is the tightest loop.
PYTEST_ARGS ?=
check:
	$(PY) -m pytest -q -m "not e2e and not lab and not conformance" -n auto --dist loadfile $(PYTEST_ARGS)

# The real tools (Ansible, libcloud, the JavaScript SDK, Terraform where installed) against a served
# cloudctl: minutes, most of them Terraform's provider starts. `make test` runs them with the rest.
test-conformance:
	$(PY) -m pytest -q -m conformance -n auto --dist loadfile

# Root and host daemons (OVS, sshd, ipmi_sim, nftables, namespaces, tmpfs): serially, they share the host.
test-lab:
	$(PY) -m pytest -q -m lab

test-e2e:
	$(PY) -m pytest -q -m e2e

# The long fuzzing run: 2000 hypothesis examples per EC2 action (CI runs a few per action).
FUZZ_EXAMPLES ?= 2000
fuzz:
	CLOUDCTL_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz_ec2.py

# Each run appends its figures to bench/results/history.jsonl and prints the change against the
# previous run on this machine (bench/history.py).
bench:
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'   # (never moves the pinned botocore)
	$(PY) bench/run.py
	$(PY) bench/flood.py

# 200 simulated hosts (libvirt's test driver in one unprivileged libvirtd a host, needs the
# libvirt-daemon packages of `make install`) filled to 1k, 5k, 20k and 50k instances: curves and
# a verdict in bench/results/ (12-15 min on 2 shared cores). QUICK=1: 1k and 5k only (~3 min).
bench-scale:
	$(PY) bench/scale.py $(if $(QUICK),--quick,)

# The long reliability run: 20 crash trials under load, then 50 clients for 60 s.
stress:
	CLOUDCTL_CRASH_TRIALS=20 $(PY) -m pytest -q -s tests/test_crash_trials.py
	$(PY) bench/stress.py --clients 50 --seconds 60

clean:
	rm -rf $(VENV) build *.egg-info tests/conformance/js/node_modules
