"""TensorRT engines from ONNX models, correct on TensorRT 10.x and 11.x.

TensorRT 11 removed the FP16/INT8 builder flags: networks are strongly typed and every tensor's precision
comes from the ONNX graph (fp16 casts, Q/DQ nodes). deploykit therefore builds fp16 engines from the fp16
graph that `deploykit export` writes, and detects which API it talks to by feature (`hasattr` on the real
enums), never by parsing version strings.

    capabilities  which TensorRT API is present (detect), the GPU (cuda_device), loading tensorrt
    onnx_info     what the ONNX graph says: inputs, outputs, precision, Q/DQ nodes, node names
    profiles      optimization profiles from --profile flags, the export sidecar, or static shapes
    builder       the precision decision, the build itself (parser errors with their nodes, timing cache)
    repository    the Triton layout: model.plan (plain, no header), config.pbtxt, deploykit.json

Nothing here imports tensorrt at module level: the module is passed in (`trt=`), so the API conformance
tests can hand in the real bindings with autospec'd objects, and machines without TensorRT import this
package freely.
"""
