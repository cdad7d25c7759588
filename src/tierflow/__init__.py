"""tierflow: plan, split and run DNNs across end devices, edge nodes and the cloud."""

__version__ = "0.1.0"
