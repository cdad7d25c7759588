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
``WireError``          a wire message is malformed (tensor size, datatype, shape)
``ServiceError``       a tier service refuses or fails a request; carries a gRPC status
``ArtifactError``      a segment cannot be built, or an artifact is missing, tampered or malformed
``TestbedError``       the local testbed cannot emulate a link or tier as asked
``DatasetError``       a dataset spec, file or array is invalid
``TrainingError``      training cannot start or resume (checkpoint, settings)
``ExitError``          an exit head, policy, threshold or exit statistics file is invalid
``FusionError``        multi-device fusion is misconfigured (views, devices, fusion mode)
``CodecError``         an activation codec payload is malformed or a codec misconfigured
``CompressionError``   a model or segment cannot be compressed as asked
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


class ArtifactError(TierflowError):
    """A segment cannot be exported, or a built artifact (manifest, file) is invalid."""


class TestbedError(TierflowError):
    """The local testbed cannot emulate a link or a tier as asked (bad parameter, port)."""

    __test__ = False  # not a pytest test class, despite the name


class WireError(TierflowError):
    """A wire message is malformed: a tensor's bytes, datatype or shape do not agree."""


class ServiceError(TierflowError):
    """A tier service refused or failed a request.

    ``status`` is the name of the gRPC status code it maps to (``"INVALID_ARGUMENT"``,
    ``"NOT_FOUND"``, ``"UNAVAILABLE"``, ...); the message names the tensor or tier at fault.
    """

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class DatasetError(TierflowError):
    """A dataset spec, file or array is invalid (names the file, field or array)."""


class TrainingError(TierflowError):
    """Training cannot start or resume: bad settings, or a checkpoint that does not match."""


class ExitError(TierflowError):
    """An exit head, exit policy, threshold or exit statistics document is invalid."""


class FusionError(TierflowError):
    """Multi-device fusion is misconfigured: views, devices or fusion mode."""


class CodecError(TierflowError):
    """An activation codec is misconfigured or its payload is malformed."""


class CompressionError(TierflowError):
    """A model or segment cannot be compressed as asked (pruning, quantisation)."""
