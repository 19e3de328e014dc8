# jira-oauth-broker: `make run` serves it locally, `make test` tests it. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

STAGE ?= dev
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
OUT := out/$(STAGE)

.PHONY: install run test test-browser lint bench package check-infra audit deploy clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
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

check-infra: package $(TOOLS_STAMP)
	$(TOOLS)/bin/cfn-lint $(OUT)/template/sam.json
	$(TOOLS)/bin/checkov -f $(OUT)/template/sam.json --framework cloudformation --skip-download --compact --quiet

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
	rm -rf $(VENV) $(TOOLS) out .pytest_cache .mypy_cache .ruff_cache

bench: $(STAMP)
	$(BIN)/python -m scripts.bench
