"""Generated Open Inference Protocol messages (``make proto``); do not edit by hand.

Only :mod:`tierflow.runtime.serde`, the transports and the server import this package.
"""
