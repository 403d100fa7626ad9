"""`ort-cpu`: onnxruntime's CPUExecutionProvider on the ONNX file that `hwnas.convert.onnx` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from hwnas.convert.onnx import export_onnx
from hwnas.devices.base import Backend, Runner, example_input


class OrtCpuBackend(Backend):
    """onnxruntime, CPU. Threads: intra-op threads (default 1); inter-op 1, sequential execution.

    Spinning is off (`session.intra_op.allow_spinning = 0`): with 2 threads and spinning on, runs
    were bimodal and not repeatable on a 2-core machine (Kendall tau 0.28 between two passes);
    with it off, 100% of nets agreed within +-2%.
    """

    name = "ort-cpu"
    description = "onnxruntime CPUExecutionProvider (graph optimisations on)"
    artifact = "onnx"
    provider = "CPUExecutionProvider"

    def __init__(self, threads: int = 1, batch: int = 1, dtype: str = "float32",
                 optimization: str = "all", spinning: bool = False) -> None:
        super().__init__(threads, batch, dtype)
        self.optimization = optimization
        self.spinning = spinning

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, "onnxruntime is not installed (pip install onnxruntime)"
        if cls.provider not in ort.get_available_providers():
            return False, f"onnxruntime has no {cls.provider} here"
        return True, ""

    @classmethod
    def runtime_version(cls) -> str:
        try:
            import onnxruntime as ort
        except ImportError:
            return ""
        return f"onnxruntime {ort.__version__}"

    def options(self) -> dict:
        return {**super().options(), "optimization": self.optimization,
                "spinning": self.spinning}

    def session_options(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[self.optimization]
        so.add_session_config_entry("session.intra_op.allow_spinning",
                                    "1" if self.spinning else "0")
        so.log_severity_level = 3
        return so

    def providers(self) -> list:
        return [self.provider]

    def convert(self, module: nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
        return export_onnx(module, input_shape, path, check=False)

    def load(self, path: Path, input_shape: tuple[int, ...]) -> Runner:
        return self.load_bytes(Path(path).read_bytes(), input_shape)

    def load_bytes(self, data: bytes, input_shape: tuple[int, ...]) -> Runner:
        import onnxruntime as ort

        sess = ort.InferenceSession(data, self.session_options(), providers=self.providers())
        feed = {sess.get_inputs()[0].name: example_input(input_shape).numpy().astype(np.float32)}
        return Runner(lambda: sess.run(None, feed))

    def node_profile(self, path: Path, input_shape: tuple[int, ...], runs: int = 20,
                     warmup: int = 5):
        """The runtime's own kernel split and per-kernel times: `path` run `warmup + runs` times
        in a session with this backend's settings and onnxruntime's per-node profiler on.

        Returns (`OrtProfile` of the runs after the warm-up, the optimised graph the session
        executed as an `onnx.ModelProto`): its nodes, named as in the profile, are the kernels
        (after fusion and layout transformation), with their attributes (activation, group).
        """
        import tempfile

        import onnx
        import onnxruntime as ort

        from hwnas.devices.parsers import parse_ort_profile

        with tempfile.TemporaryDirectory() as tmp:
            so = self.session_options()
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "ort")
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            sess = ort.InferenceSession(str(path), so, providers=self.providers())
            feed = {sess.get_inputs()[0].name:
                    example_input(input_shape).numpy().astype(np.float32)}
            for _ in range(warmup + runs):
                sess.run(None, feed)
            trace = sess.end_profiling()
            prof = parse_ort_profile(Path(trace))
            graph = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False)
        prof.events = prof.events[prof.events["run"] >= warmup].reset_index(drop=True)
        prof.runs = prof.runs[prof.runs["run"] >= warmup].reset_index(drop=True)
        return prof, graph
