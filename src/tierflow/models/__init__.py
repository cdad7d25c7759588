"""Model sources: tierflow's seeded zoo, torchvision and user factories, by spec string."""

from tierflow.models.resolve import load_weights, resolve_model
from tierflow.models.zoo import ZOO, ZooEntry, zoo_names

__all__ = ["ZOO", "ZooEntry", "load_weights", "resolve_model", "zoo_names"]
