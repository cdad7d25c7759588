"""DDNN-style multi-device fusion (Teerapittayanon et al., ICDCS 2017).

Several end devices each observe one view of the input, run a small branch and send
compact uint8 features to an edge aggregator, which fuses the devices that arrived
(``max``, ``mean`` or ``concat``), answers when its exit is confident and otherwise asks
the cloud. The pipeline, in order: :class:`FusionModel` (train with :func:`train_fusion`)
→ :func:`export_bundle` / :func:`load_bundle` (per-tier ONNX, sha256-checked) →
:func:`deploy` (gRPC services) → :class:`FusionClient` → :func:`run_fusion_bench`.
The wire protocol is Note [Fusion protocol] in :mod:`tierflow.fusion.protocol`.
"""

from tierflow.fusion.bench import FusionBenchReport, ModelSettings, run_fusion_bench
from tierflow.fusion.bundle import FusionBundle, export_bundle, load_bundle
from tierflow.fusion.client import FusionClient, FusionResult
from tierflow.fusion.deploy import FusionDeployment, deploy
from tierflow.fusion.model import CloudOnlyModel, FusionModel, fuse
from tierflow.fusion.protocol import FusionTrace, LinkBytes
from tierflow.fusion.server import FusionServer
from tierflow.fusion.services import CloudService, DeviceService, EdgeService, RawCloudService
from tierflow.fusion.training import (
    TrainSettings,
    calibrate_exit_threshold,
    train_cloud_only,
    train_fusion,
)

__all__ = [
    "CloudOnlyModel",
    "CloudService",
    "DeviceService",
    "EdgeService",
    "FusionBenchReport",
    "FusionBundle",
    "FusionClient",
    "FusionDeployment",
    "FusionModel",
    "FusionResult",
    "FusionServer",
    "FusionTrace",
    "LinkBytes",
    "ModelSettings",
    "RawCloudService",
    "TrainSettings",
    "calibrate_exit_threshold",
    "deploy",
    "export_bundle",
    "fuse",
    "load_bundle",
    "run_fusion_bench",
    "train_cloud_only",
    "train_fusion",
]
