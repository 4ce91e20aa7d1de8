#!/usr/bin/env bash
# Placeholder until the service scripts land: up/down/status succeed with nothing to start.
echo "services: $1 (none yet)"
