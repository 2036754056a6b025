"""ONNX export with an open vocabulary (:mod:`ovseg.export.onnx_export`) and its ONNX Runtime
predictor (:mod:`ovseg.export.runtime`). Needs ``onnx``, ``onnxscript`` and ``onnxruntime``
(``pip install "ovseg[export]"``), imported only here."""

from ovseg.export.onnx_export import ExportError, export_onnx
from ovseg.export.runtime import OnnxPredictor, read_export

__all__ = ["ExportError", "OnnxPredictor", "export_onnx", "read_export"]
