# FinStream: `make up` runs the whole stack, `make test` the whole suite.
# Both install what is missing first (Debian packages, virtualenv, Kafka jars).
SHELL := /bin/bash
.DEFAULT_GOAL := help
STACK := deploy/stack.sh

.PHONY: help install up down status logs clean test test-unit bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## install Debian packages, the virtualenv and the Kafka jars (idempotent)
	@$(STACK) install

up: ## start PostgreSQL, Redis, Kafka and every app process; print the URLs
	@$(STACK) up

down: ## stop everything, keep the data
	@$(STACK) down

status: ## what runs, and /ready
	@$(STACK) status

logs: ## follow every process's log
	@$(STACK) logs

clean: ## stop everything and delete the stack's data (var/), keeping installs
	@$(STACK) clean

test: ## the whole suite against its own PostgreSQL, Redis and Kafka (other ports, var/test)
	@deploy/test.sh $(ARGS)

test-unit: ## only the pure tests that need no services
	@deploy/test.sh --unit $(ARGS)
