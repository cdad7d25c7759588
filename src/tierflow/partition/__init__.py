"""Applying a plan's assignment: one torch.fx segment per tier, and running them in order."""

from tierflow.partition.assignment import check_monotone
from tierflow.partition.segment import Segment, SplitModel, ValueRef, run_split
from tierflow.partition.split import split_traced

__all__ = ["Segment", "SplitModel", "ValueRef", "check_monotone", "run_split", "split_traced"]
