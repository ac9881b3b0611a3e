# calico.net — the two commands are `make lab` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps venv test test-molecule test-unit test-fv bench lab lab-down clean

deps:
	bash scripts/install-deps.sh

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# pip.conf on these machines names index folders that may not exist: drop that noise
	$(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(PY) -m pip install -q -e '.[agent,cni,test,ansible]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	touch $@

venv: $(VENV)/.installed

# `make test` includes molecule/default (the whole stack on 3 lab nodes: ~8 min with the
# lab images built, plus ~6 min to build them on a fresh machine). MOLECULE=0 leaves it
# out for a quicker developer run; `make test-molecule` runs only it.
MOLECULE ?= 1
ifeq ($(MOLECULE),0)
MOLECULE_ARGS := --ignore=tests/ansible/test_molecule.py
else
MOLECULE_ARGS :=
endif

test: deps venv
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 $(MOLECULE_ARGS) $(PYTEST_ARGS) tests

test-molecule: deps venv
	$(PY) -m pytest -q -p no:cacheprovider tests/ansible/test_molecule.py

test-unit: venv
	$(PY) -m pytest -q tests/unit

test-fv: deps venv
	$(PY) -m pytest -q tests/fv

# The lab: 3 systemd "hosts" on an internal podman network (198.18.0.0/24), site.yml
# over SSH, sample workloads and policy, then BGP status and a connectivity matrix.
LAB_INVENTORY := lab/.state/inventory.ini
lab: deps venv
	bash lab/up.sh
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR) ANSIBLE_HOST_KEY_CHECKING=False \
	  $(VENV)/bin/ansible-playbook -i $(LAB_INVENTORY) ansible_collections/calico/net/playbooks/site.yml
	bash lab/demo.sh

lab-down:
	bash lab/down.sh

bench: deps venv
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info
