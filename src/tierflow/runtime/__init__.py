"""Tier services: executors, the Open Inference Protocol server and client, the testbed."""
