"""The option vocabularies several settings and command lines share (choices checked before any heavy import)."""
# the ONNX opsets the exporters write (supernet/onnx_export.py) and the settings accept
DYNAMO_MIN_OPSET = 18  # the lowest opset the torch.export-based exporter writes
DEFAULT_OPSET = DYNAMO_MIN_OPSET
MIN_OPSET = 17  # TorchScript exporter only
MAX_OPSET = 21  # the newest opset torch's exporter and onnxruntime both take here
EXPORTERS = ("auto", "dynamo", "torchscript", "fast")  # supernet/onnx_export.py's ONNX exporters
CHECKPOINT_SOURCES = ("official", "timm", "ours")  # the checkpoint layouts supernet/convert.py reads
