# passthrough.libvirt: the two front-door commands are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
BUILD := $(abspath .build)
SRC_TREE := $(BUILD)/src
SANITY_TREE := $(BUILD)/sanity/ansible_collections/passthrough/libvirt
DEMO_COLLECTIONS := $(BUILD)/collections
REPORT_DIR ?= $(abspath pci-report)
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
PIP_SEED := $(HOME)/.ansible/test/cache/get_pip_24_2.py
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# Building libvirt-python needs the libvirt headers; lspci and pci.ids give names and a cross-check.
DEMO_PACKAGES := python3 python3-venv python3-dev gcc pkg-config libvirt-dev pciutils pci.ids
TEST_PACKAGES := $(DEMO_PACKAGES) libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 rsync shellcheck chromium
# The nested VFIO lab: an image from Debian's mirror, QEMU VMs, SSH to them. The VMs run on QEMU 10 from
# bookworm-backports, which tests/lab/lab.py downloads (apt-get download, the archive's keyring) and extracts
# under .build/lab/qemu without installing it: it uses the libraries and data of the system's qemu-system-x86.
LAB_PACKAGES := $(DEMO_PACKAGES) debootstrap debian-archive-keyring qemu-system-x86 qemu-utils e2fsprogs openssh-client

export ANSIBLE_CALLBACK_RESULT_FORMAT := yaml
export ANSIBLE_NOCOWS := 1

.PHONY: help demo test sanity lint units units-py39 integration molecule bench bench-discovery bench-fleet bench-attach bench-drain ee system-ee lab lab-down system-demo system-test system-lab venv src-tree collection libvirtd clean

help:
	@echo "make demo   - install what is needed, then inventory this host's PCI devices (table + ./pci-report/)"
	@echo "make test   - install what is needed, start libvirtd if none answers, run every test: sanity, lint, unit (3.11 and 3.9),"
	@echo "              integration, molecule, the nested VFIO lab and the execution environment build (25-35 min on 2 cores)"
	@echo "make bench  - the performance goals in one table, docs/performance.md updated (bench/all; bench-discovery, bench-fleet, bench-attach for one part)"
	@echo "make lab    - the nested VFIO lab: two hypervisor VMs with a virtual IOMMU, scenario over SSH (docs/lab.md)"
	@echo "make lab-down - stop lab VMs left running"
	@echo "make clean  - remove .venv, .build and pci-report"

system-demo:
	@bash tests/utils/install-system-packages.sh $(DEMO_PACKAGES)

system-test:
	@bash tests/utils/install-system-packages.sh $(TEST_PACKAGES)

system-lab:
	@bash tests/utils/install-system-packages.sh $(LAB_PACKAGES)

$(VENV)/.stamp: requirements.txt tests/unit/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q 'ansible-core>=2.19,<2.20' -r requirements.txt -r tests/unit/requirements.txt
	touch $@

venv: $(VENV)/.stamp

# ansible_collections/passthrough/libvirt -> this checkout, for the tests and the benchmark.
src-tree:
	@mkdir -p $(SRC_TREE)/ansible_collections/passthrough
	@ln -sfn $(CURDIR) $(SRC_TREE)/ansible_collections/passthrough/libvirt

# The collection as a user gets it: built from galaxy.yml and installed from the tarball.
collection: venv
	@mkdir -p $(BUILD)/dist
	$(BIN)/ansible-galaxy collection build --force --output-path $(BUILD)/dist . >/dev/null
	ANSIBLE_COLLECTIONS_PATH=$(DEMO_COLLECTIONS) $(BIN)/ansible-galaxy collection install --force -p $(DEMO_COLLECTIONS) $(BUILD)/dist/passthrough-libvirt-$(VERSION).tar.gz >/dev/null
	@echo "collection: passthrough.libvirt $(VERSION) installed in $(DEMO_COLLECTIONS)"

demo: system-demo venv collection
	cd playbooks && ANSIBLE_COLLECTIONS_PATH=$(DEMO_COLLECTIONS) $(BIN)/ansible-playbook \
		-i examples/localhost.yml inventory.yml \
		-e pci_report_dir=$(REPORT_DIR) -e pci_require_libvirt=false

libvirtd:
	@$(SUDO) bash tests/utils/start-libvirtd.sh

$(PIP_SEED): tests/utils/get_pip_standin.py
	@mkdir -p $(dir $@)
	cp $< $@

# ansible-test needs the checkout at ansible_collections/<namespace>/<name>: a copy of the tracked
# and new (not ignored) files.
sanity: venv $(PIP_SEED)
	@rm -rf $(BUILD)/sanity && mkdir -p $(SANITY_TREE)
	@git ls-files -co --exclude-standard | rsync -a --ignore-missing-args --files-from=- . $(SANITY_TREE)/
	cd $(SANITY_TREE) && git init -q && git add -A && PATH=$(BIN):$$PATH $(BIN)/ansible-test sanity --local --requirements \
		--python $$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

units: venv src-tree
	PYTHONPATH=$(SRC_TREE) $(BIN)/pytest -q tests/unit

# Managed hosts run Python 3.9 (RHEL 9): module and module_utils code compiled, imported and unit-tested
# under it, with ansible-core's module_utils from .venv on the path, as AnsiballZ ships them to a host.
PY39 ?= $(shell for p in $(HOME)/.pyenv/versions/3.9*/bin/python3.9 $$(command -v python3.9); do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null && { echo "$$p"; break; }; done)
PY39_VENV := $(BUILD)/py39
$(PY39_VENV)/.stamp: tests/unit/requirements-py39.txt
	@test -n "$(PY39)" || { echo "units-py39: no python3.9 found (PATH or ~/.pyenv/versions/3.9*); set PY39=/path/to/python3.9" >&2; exit 1; }
	$(PY39) -m venv $(PY39_VENV)
	$(PY39_VENV)/bin/pip install -q -r tests/unit/requirements-py39.txt
	touch $@

units-py39: venv src-tree $(PY39_VENV)/.stamp
	@mkdir -p $(BUILD)/py39-ansible
	@ln -sfn $$($(BIN)/python -c 'import ansible, os; print(os.path.dirname(ansible.__file__))') $(BUILD)/py39-ansible/ansible
	$(PY39_VENV)/bin/python -m compileall -q plugins/module_utils plugins/modules
	PYTHONPATH=$(SRC_TREE):$(BUILD)/py39-ansible $(PY39_VENV)/bin/python -m pytest -q -p no:cacheprovider \
		tests/unit/plugins/module_utils tests/unit/plugins/modules

integration: venv src-tree libvirtd
	PYTHONPATH=$(SRC_TREE) $(BIN)/pytest -q tests/integration

# ansible-lint, production profile, on the roles and playbooks (.ansible-lint).
lint: venv src-tree
	PATH=$(BIN):$$PATH ANSIBLE_COLLECTIONS_PATH=$(SRC_TREE) $(BIN)/ansible-lint roles playbooks extensions

# The whole workflow with the roles (extensions/molecule/default): real libvirtd, a fixture sysfs tree.
# On failure the failing tasks are printed again at the end (the log is in .build/molecule.log).
molecule: venv src-tree libvirtd
	@mkdir -p $(BUILD)
	PATH=$(BIN):$$PATH $(BIN)/molecule test -s default 2>&1 | tee $(BUILD)/molecule.log; rc=$${PIPESTATUS[0]}; \
	if [ $$rc -ne 0 ]; then echo "molecule failed; the failed tasks (whole log: $(BUILD)/molecule.log):"; \
		sed 's/\x1b\[[0-9;]*m//g' $(BUILD)/molecule.log | grep -B12 -A6 -E 'fatal:|FAILED!' | cut -c1-200; fi; exit $$rc

# Every test: the suites on this machine, then the real-kernel proof (live VFIO hot-plug in the nested
# lab) and the execution environment built and checked with podman. CI runs exactly this.
# The lab's image (debootstrap, about 3 min, mostly downloads and disk) is built in the background while the
# suites run; the lab step waits for it (a lock in tests/lab/lab.py) and builds it itself if that failed.
# The suites run as two streams side by side, each suite keeping one of the machine's two cores busy: suites that
# do not use libvirtd (the execution environment's build among them), and those that do (one after the other: they
# share its pcitest- domains), followed by the Python 3.9 unit tests, so that both streams take about as long (in a
# fresh-clone run: 693 s against 515 s with units-py39 in the first). Their output comes whole, stream by stream,
# when both have ended (logs in .build/suites/). The lab comes last, alone: its two VMs need both cores.
SUITES_CPU := sanity lint units ee
SUITES_LIBVIRT := integration molecule units-py39
test: system-test system-lab venv src-tree
	@mkdir -p $(BUILD)
	@echo "test: preparing the lab's image and QEMU in the background (log: $(BUILD)/lab-prepare.log)"
	@$(SUDO) $(BIN)/python tests/lab/lab.py --prepare >$(BUILD)/lab-prepare.log 2>&1 &
	@bash tests/utils/side-by-side.sh $(BUILD)/suites "$(MAKE) $(SUITES_CPU)" "$(MAKE) $(SUITES_LIBVIRT)"
	$(MAKE) lab

# The goals of docs/performance.md in one table (bench/all, a few minutes); it rewrites the doc's generated section.
bench: system-test venv src-tree libvirtd
	PYTHONPATH=$(SRC_TREE) $(BIN)/python bench/all --update-doc docs/performance.md

bench-discovery: venv src-tree
	PYTHONPATH=$(SRC_TREE) $(BIN)/python bench/discovery

bench-fleet: venv src-tree
	PYTHONPATH=$(SRC_TREE) $(BIN)/python bench/fleet

# Needs root and libvirtd (a real domain, config-mode attach and detach).
bench-attach: system-test venv src-tree libvirtd
	PYTHONPATH=$(SRC_TREE) $(BIN)/python bench/attach

# Needs root and libvirtd: N defined domains, their devices taken out one domain at a time against one drain (config mode).
bench-drain: system-test venv src-tree libvirtd
	PYTHONPATH=$(SRC_TREE) $(BIN)/python bench/drain

# The execution environment built with ansible-builder and podman on a local Debian base image
# (debootstrap, cached), then checked inside: import libvirt, ansible-doc, ansible-runner (docs/awx.md).
# Part of `make test`: minutes, root, network to PyPI and Debian's mirror.
EE_PACKAGES := podman runc debootstrap

system-ee:
	@bash tests/utils/install-system-packages.sh $(EE_PACKAGES)

ee: system-ee venv
	$(SUDO) $(BIN)/python tests/ee/ee.py $(EE_ARGS)

# Part of `make test`: it takes minutes and needs root (debootstrap).
lab: system-lab venv collection
	$(SUDO) $(BIN)/python tests/lab/lab.py $(LAB_ARGS)

lab-down:
	$(SUDO) $(PYTHON) tests/lab/lab.py --down

clean:
	rm -rf $(VENV) $(BUILD) $(REPORT_DIR)
