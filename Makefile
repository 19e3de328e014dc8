# jira-oauth-broker: `make run` serves it locally, `make test` tests it. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

STAGE ?= dev
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
OUT := out/$(STAGE)
# A clean python3.11 with only what the Lambda runtime provides (boto3): runs the unpacked package.
LAMBDA_VENV := .venv-lambda
LAMBDA_STAMP := $(LAMBDA_VENV)/.installed

.PHONY: install run test test-browser test-artifact lint bench package check-infra audit deploy clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-lambda-runtime.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "Python 3.11+ is needed"' 2>/dev/null \
		|| { echo "Python 3.11 is needed: set PYTHON=/path/to/python3.11"; exit 1; }
	@echo "Installing $(VENV) from requirements-dev.txt"
	@# -qq: pip's errors only, none of its warnings about this machine's index settings; a failed install
	@# still fails loudly. pip is upgraded only in a new venv: chalice pins it, and the next line settles it.
	@test -x $(BIN)/python || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install -qq --upgrade pip; }
	@$(BIN)/python -m pip install -qq -r requirements-dev.txt
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m scripts.run_local

test: $(STAMP)
	$(BIN)/python -m pytest -m "not browser"

# Real-browser tests (Debian's chromium driven by Playwright); they skip, saying why, without chromium.
test-browser: $(STAMP)
	$(BIN)/python -m pytest -m browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(TOOLS_STAMP): requirements-tools.txt
	@echo "Installing $(TOOLS) from requirements-tools.txt"
	@test -x $(TOOLS)/bin/python || { $(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/python -m pip install -qq --upgrade pip; }
	@$(TOOLS)/bin/python -m pip install -qq -r requirements-tools.txt
	@touch $(TOOLS_STAMP)

# The deployable SAM template and code for STAGE (dev|prod) in out/STAGE/template/.
package: $(STAMP)
	rm -rf $(OUT)
	$(BIN)/python -m scripts.infra --stage $(STAGE) $(OUT)/merge.json
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/chalice package --stage $(STAGE) \
		--merge-template $(OUT)/merge.json $(OUT)/template
	@# Hash-based .pyc (Lambda's code directory is read-only): compiled by the venv's python3.11, the runtime's.
	$(BIN)/python -m scripts.package_pyc $(OUT)/template/deployment.zip

# No pip in it either (ensurepip's setuptools would hide a missing dependency); the dev venv's pip installs.
$(LAMBDA_STAMP): requirements-lambda-runtime.txt $(STAMP)
	@echo "Installing $(LAMBDA_VENV) (the Lambda runtime's python3.11 and boto3) from requirements-lambda-runtime.txt"
	@rm -rf $(LAMBDA_VENV) && $(PYTHON) -m venv --without-pip $(LAMBDA_VENV)
	@$(BIN)/python -m pip --python $(LAMBDA_VENV)/bin/python install -qq -r requirements-lambda-runtime.txt
	@touch $(LAMBDA_STAMP)

# The package `make package` builds, unpacked and run as Lambda runs it (API Gateway REST events,
# TOKEN-authorizer events) in $(LAMBDA_VENV), against moto and the fake Jira on loopback.
test-artifact: package $(LAMBDA_STAMP)
	$(BIN)/python -m scripts.artifact --zip $(OUT)/template/deployment.zip --stage $(STAGE) \
		--runtime-python $(LAMBDA_VENV)/bin/python

check-infra: package $(TOOLS_STAMP)
	$(TOOLS)/bin/cfn-lint $(OUT)/template/sam.json
	$(TOOLS)/bin/checkov -f $(OUT)/template/sam.json --framework cloudformation --skip-download --compact --quiet
	$(TOOLS)/bin/python -m scripts.sam_check $(OUT)/template/sam.json

audit: $(TOOLS_STAMP)
	$(TOOLS)/bin/python scripts/audit.py
	$(TOOLS)/bin/bandit -q -r app.py chalicelib --severity-level medium

# Needs the AWS CLI, credentials, and BUCKET (an S3 bucket for the code). See README "Deploy to AWS".
deploy: package
	@command -v aws >/dev/null || { echo "Install the AWS CLI first (https://aws.amazon.com/cli/)"; exit 1; }
	@test -n "$(BUCKET)" || { echo "Set BUCKET=<an S3 bucket for the deployment package>"; exit 1; }
	aws cloudformation package --template-file $(OUT)/template/sam.json --s3-bucket $(BUCKET) \
		--output-template-file $(OUT)/packaged.yaml
	aws cloudformation deploy --template-file $(OUT)/packaged.yaml --stack-name jira-oauth-broker-$(STAGE) \
		--capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND \
		--parameter-overrides Stage=$(STAGE) PublicUrl=$(PUBLIC_URL) ReturnToOrigins=$(RETURN_TO_ORIGINS)
	aws cloudformation describe-stacks --stack-name jira-oauth-broker-$(STAGE) \
		--query "Stacks[0].Outputs[?OutputKey=='EndpointURL'].OutputValue" --output text

clean:
	rm -rf $(VENV) $(TOOLS) $(LAMBDA_VENV) out .pytest_cache .mypy_cache .ruff_cache

bench: package $(LAMBDA_STAMP)
	$(BIN)/python -m scripts.bench --zip $(OUT)/template/deployment.zip --runtime-python $(LAMBDA_VENV)/bin/python
