"""EfficientFormerV2 models: ArchConfig, the static network, its analytic costs, checkpoint
conversion, deploy form and ONNX export; the weight-sharing supernet and its training."""
import supernet.dimensions  # noqa: F401  (the per-block dimensions register their block options)
from supernet.arch import ArchConfig, ArchConfigError, BlockConfig, StageConfig
from supernet.convert import CheckpointError, convert_state_dict, load_checkpoint
from supernet.deploy import fuse
from supernet.errors import UserError
from supernet.model import EfficientFormerV2, build_model, build_piece
from supernet.onnx_export import export_onnx
from supernet.signatures import BlockSignature, arch_signatures, count_macs, count_params

__all__ = [
    "ArchConfig",
    "ArchConfigError",
    "BlockConfig",
    "BlockSignature",
    "CheckpointError",
    "EfficientFormerV2",
    "StageConfig",
    "UserError",
    "arch_signatures",
    "build_model",
    "build_piece",
    "convert_state_dict",
    "count_macs",
    "count_params",
    "export_onnx",
    "fuse",
    "load_checkpoint",
]
