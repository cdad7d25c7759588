"""The tierflow error hierarchy.

Every error tierflow raises on bad input derives from :class:`TierflowError` and names
the field, file, node, tensor or tier at fault, so that a user can fix it without reading
tierflow's source.

=====================  ==============================================================
``ModelSpecError``     a model spec string cannot be resolved (``torchvision:NAME``, ...)
``CaptureError``       a model cannot be traced into a :class:`~tierflow.LayerGraph`
``TopologyError``      a topology file or override is invalid
``ProfileError``       a profile file is missing, malformed or does not match the model
``PlanError``          no plan satisfies the constraints, or a plan is malformed
``PartitionError``     a plan cannot be applied to a model
=====================  ==============================================================
"""

from __future__ import annotations


class TierflowError(Exception):
    """Base class of every error tierflow raises on bad input or infeasible requests."""


class ModelSpecError(TierflowError):
    """A model spec string (``torchvision:NAME``, ``zoo:NAME``, ``pkg.mod:factory``) is invalid."""


class CaptureError(TierflowError):
    """A model cannot be captured into a layer graph."""


class TopologyError(TierflowError):
    """A topology file, or an override applied to one, is invalid."""


class ProfileError(TierflowError):
    """A profile is malformed or does not match the model it is used with."""


class PlanError(TierflowError):
    """No assignment satisfies the constraints, or a plan document is malformed."""


class InfeasiblePlanError(PlanError):
    """The constraints (memory, pins, privacy, latency SLO) admit no assignment."""


class PartitionError(TierflowError):
    """A plan cannot be applied to the given model."""
