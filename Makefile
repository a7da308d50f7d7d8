# Two commands do all set-up on a fresh machine with Python 3.11: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run test lint types unit fast controlplane helm e2e bench bench-scale image deploy-template k8s-schema clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
		|| { echo "need Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/mesher-injector serve --host 127.0.0.1 --self-signed --self-signed-dir .run/certs \
		--template-file injector/default_template.yaml --log-format json

lint: $(STAMP)
	$(BIN)/ruff check injector tests bench
	$(BIN)/ruff format --check injector tests bench
	$(BIN)/lint-imports

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) controlplane helm
	$(BIN)/pytest -q -rs -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

# The tests that need no control plane (and no Go).
fast: $(STAMP)
	$(BIN)/pytest -q -rs -p no:cacheprovider -m "not e2e"

# etcd, kube-apiserver, kube-controller-manager and kubectl for the e2e tests, built from
# the Go modules pinned in scripts/controlplane/ into ~/.cache (minutes the first time,
# nothing after while the pins stay).
controlplane:
	bash scripts/controlplane/build.sh >/dev/null

# helm for the chart's tests (deploy/helm/mesher-injector), built from the Go module pinned
# in scripts/helm/ into ~/.cache the same way (about 3 minutes the first time).
helm:
	bash scripts/helm/build.sh >/dev/null

test: lint types unit

# deploy/e2e.sh against the cluster in $KUBECONFIG (its output as it goes: it first says
# which cluster and what it will touch); with none, against the e2e tests' own control
# plane (tests/e2e/test_install.py runs it there, on an install and on a bare cluster).
e2e: $(STAMP) controlplane
	@log=$$(mktemp); \
	bash -o pipefail -c 'bash deploy/e2e.sh | tee "$$0"' "$$log"; rc=$$?; \
	skipped=$$(grep -c '^skipped: no cluster' "$$log"); rm -f "$$log"; \
	if [ "$$skipped" != 0 ]; then \
		echo "running deploy/e2e.sh on a loopback control plane instead"; \
		$(BIN)/pytest -q -p no:cacheprovider tests/e2e/test_install.py -k e2e_sh; \
	else exit $$rc; fi

image:
	docker build -t mesher-injector:0.1.0 .

# The Kubernetes schema the template is checked against, trimmed from the recorded OpenAPI.
k8s-schema: $(STAMP)
	$(BIN)/python -c 'import json; from injector.core.schema import trim; \
		d = json.load(open("tests/fixtures/kube-api/openapi-v3-api-v1.json")); \
		open("injector/k8s_schema.json", "w").write(json.dumps(trim(d), indent=1, sort_keys=True) + "\n")'

# injector/default_template.yaml is the one template people edit (the package ships it as
# the embedded default). kustomize cannot read above deploy/, nor helm above its chart, so
# deploy/template/ and the chart's files/ hold generated copies (the chart's also of
# deploy/monitoring/'s rules and dashboard); a test fails when a copy differs.
CHART_FILES := deploy/helm/mesher-injector/files
deploy-template:
	cp injector/default_template.yaml deploy/template/template.yaml
	cp injector/default_template.yaml $(CHART_FILES)/template.yaml
	cp deploy/monitoring/prometheusrule.yaml deploy/monitoring/dashboard.json $(CHART_FILES)/

bench: $(STAMP)
	$(BIN)/python -m bench

# status and the injector's memory on 50,000 pods of the e2e control plane (bench/README.md;
# about 10 minutes on 2 cores).
bench-scale: $(STAMP) controlplane
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache
