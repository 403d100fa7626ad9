"""`ort-cuda`: onnxruntime's CUDAExecutionProvider (optionally TensorRT EP first) on the ONNX file.

The input lives on the GPU (io_binding on a torch CUDA tensor) and outputs stay there, so no host
copy is timed. onnxruntime runs on a torch CUDA stream passed as `user_compute_stream`
(onnxruntime >= 1.17) and the runs are timed with CUDA events on that stream.
"""

from __future__ import annotations

import numpy as np
import torch

from hwnas.devices.base import BackendUnavailable, Runner, example_input
from hwnas.devices.ort_cpu import OrtCpuBackend
from hwnas.devices.torch_cuda import CudaEventRunner, cuda_status, gpu_fingerprint
from hwnas.errors import HwnasError

TRT_EP = "TensorrtExecutionProvider"
GPU_PACKAGE = ("it needs the onnxruntime-gpu package instead of onnxruntime "
               "(pip uninstall onnxruntime && pip install onnxruntime-gpu)")


class OrtCudaRunner(CudaEventRunner):
    """One `run_with_iobinding` on a fixed GPU input; outputs are allocated on the GPU by ORT.

    onnxruntime synchronizes its stream at the end of each run (its default), so the outputs
    (`binding.get_outputs()`) are ready when the call returns.
    """

    def __init__(self, session, input_shape: tuple[int, ...], device: int,
                 stream: torch.cuda.Stream) -> None:
        super().__init__()
        self.session, self.stream = session, stream
        inp = session.get_inputs()[0]
        if inp.type != "tensor(float)":
            raise HwnasError(f"ort-cuda feeds float32; the model's input is {inp.type}")
        self.x = example_input(input_shape).to(f"cuda:{device}").contiguous()
        torch.cuda.synchronize(device)
        self.binding = session.io_binding()
        self.binding.bind_input(inp.name, "cuda", device, np.float32, tuple(self.x.shape),
                                self.x.data_ptr())
        for out in session.get_outputs():
            self.binding.bind_output(out.name, "cuda", device)

    def __call__(self) -> object:
        self.session.run_with_iobinding(self.binding)
        return self.binding


class OrtCudaBackend(OrtCpuBackend):
    """onnxruntime on an NVIDIA GPU: CUDA EP (CPU EP second, for nodes CUDA lacks).

    `use_tensorrt_ep=True` puts the TensorRT EP first (it builds its engine in the first,
    untimed warm-up run). Only float32: the ONNX export is float32.
    """

    name = "ort-cuda"
    description = "onnxruntime CUDAExecutionProvider (optionally TensorRT EP), CUDA-event timing"
    provider = "CUDAExecutionProvider"

    def __init__(self, threads: int = 1, batch: int = 1, dtype: str = "float32",
                 optimization: str = "all", spinning: bool = False,
                 use_tensorrt_ep: bool = False) -> None:
        if dtype != "float32":
            raise ValueError("ort-cuda measures the float32 ONNX export (dtype 'float32'); for "
                             "half precision use tensorrt (fp16=True) or torch-cuda (float16)")
        super().__init__(threads, batch, dtype, optimization, spinning)
        self.use_tensorrt_ep = use_tensorrt_ep

    @classmethod
    def available(cls) -> tuple[bool, str]:
        missing = []
        try:
            import onnxruntime as ort
        except ImportError:
            missing.append(f"onnxruntime is not installed; {GPU_PACKAGE}")
        else:
            found = ort.get_available_providers()
            if cls.provider not in found:
                missing.append(f"onnxruntime {ort.__version__} here has no {cls.provider} "
                               f"(it has {', '.join(found)}); {GPU_PACKAGE}")
        ok, reason = cuda_status()
        if not ok:
            missing.append(reason)
        return (not missing, "; ".join(missing))

    def require(self) -> None:
        super().require()
        if self.use_tensorrt_ep:
            import onnxruntime as ort

            if TRT_EP not in ort.get_available_providers():
                raise BackendUnavailable(
                    f"backend {self.name!r} with use_tensorrt_ep: onnxruntime has no {TRT_EP} "
                    "here (it needs onnxruntime-gpu and the TensorRT libraries: "
                    "pip install 'hwnas[gpu]')")

    def options(self) -> dict:
        return {**super().options(), "use_tensorrt_ep": self.use_tensorrt_ep}

    def fingerprint(self) -> dict:
        fp = {**super().fingerprint(), **gpu_fingerprint()}
        if self.use_tensorrt_ep:  # a different runtime: keep its profiles apart
            fp["runtime_version"] = f"{fp['runtime_version']} + {TRT_EP}"
        return fp

    def providers(self, device: int = 0, stream: torch.cuda.Stream | None = None) -> list:
        """TensorRT EP (if asked), CUDA EP, CPU EP; the GPU ones run on `stream`."""
        cuda = {"device_id": str(device)}
        if stream is not None:  # the CUDA EP sets has_user_compute_stream itself
            cuda["user_compute_stream"] = str(stream.cuda_stream)
        chain: list = [(self.provider, cuda), "CPUExecutionProvider"]
        if self.use_tensorrt_ep:
            trt = dict(cuda, **({"has_user_compute_stream": "1"} if stream is not None else {}))
            chain.insert(0, (TRT_EP, trt))
        return chain

    def _check_session(self, session) -> None:
        """onnxruntime falls back to CPU silently when a GPU EP fails to start: refuse that."""
        import onnxruntime as ort

        used = session.get_providers()
        wanted = [self.provider] + ([TRT_EP] if self.use_tensorrt_ep else [])
        lost = [p for p in wanted if p not in used]
        if lost:
            raise BackendUnavailable(
                f"onnxruntime {ort.__version__} could not start {', '.join(lost)} (session "
                f"providers: {', '.join(used)}); check that the CUDA/cuDNN (and TensorRT) "
                "libraries this onnxruntime-gpu needs are installed, see its log above")

    def load_bytes(self, data: bytes, input_shape: tuple[int, ...]) -> Runner:
        import onnxruntime as ort

        self.require()
        device = torch.cuda.current_device()
        stream = torch.cuda.Stream(device)  # not the default stream: ORT treats handle 0 as unset
        session = ort.InferenceSession(data, self.session_options(),
                                       providers=self.providers(device, stream))
        self._check_session(session)
        return OrtCudaRunner(session, input_shape, device, stream)
