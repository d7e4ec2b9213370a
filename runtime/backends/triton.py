"""Triton Inference Server backend: the same Runner, with the model served by a (remote) Triton server over
gRPC or HTTP. ModelInfo comes from the served model's config `parameters` (written by psp-export triton)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspcore.errors import BackendUnavailable, InputError, PSPError
from pspcore.model_info import INPUT_NAME, ModelInfo, fallback_info
from pspcore.options import BackendOptions, option
from pspcore.runner import FrameRunner, InputSpec, Runner
from pspcore.tensor_types import triton_name_of_config_enum
from pspcore.triton_protocol import DEFAULT_PORTS, PROTOCOL_OF_SCHEME, is_server_url, url_scheme

NOT_READY_PHRASES = ("not ready", "not at ready state", "no available versions", "is loading")
# Triton lets go of a shared-memory region a moment after the response that used it (measured: an
# unregister right after an ensemble request through --shm was refused, once in a full test run).
BUSY_PHRASES = ("currently in use",)


@dataclass(frozen=True)
class ServerError:
    """A failed call, sorted: `retry` when waiting may help (server starting, model loading)."""

    kind: str  # "unavailable" | "timeout" | "not_found" | "not_ready" | "busy" | "rejected"
    detail: str
    retry: bool


def classify_error(exc: BaseException) -> ServerError:
    """Sort what tritonclient raises (gRPC status codes, HTTP status codes, socket errors) into our kinds."""
    status = str(exc.status() or "") if callable(getattr(exc, "status", None)) else ""
    message = exc.message() if callable(getattr(exc, "message", None)) else None
    detail = " ".join(str(message or exc).split()) or type(exc).__name__
    lowered = detail.lower()
    if isinstance(exc, TimeoutError) or "DEADLINE_EXCEEDED" in status or "timed out" in lowered:
        return ServerError("timeout", detail, retry=False)
    if isinstance(exc, OSError) or "UNAVAILABLE" in status or status == "503":
        return ServerError("unavailable", detail, retry=True)
    # Triton words a model that exists but failed to load or is still loading as an "unknown model" too.
    if any(phrase in lowered for phrase in NOT_READY_PHRASES):
        return ServerError("not_ready", detail, retry=True)
    if any(phrase in lowered for phrase in BUSY_PHRASES):
        return ServerError("busy", detail, retry=True)
    if "unknown model" in lowered or "NOT_FOUND" in status or status == "404":
        return ServerError("not_found", detail, retry=False)
    return ServerError("rejected", detail, retry=False)


def parse_target(model: str, url: str | None, protocol: str | None) -> tuple[str, str, str]:
    """(model name, host:port, protocol) from a model name, a model folder of a repository, or a URL such
    as grpc://host:8001/pspnet; `url` and `protocol` fill in what the model argument does not say."""
    text = str(model)
    scheme = url_scheme(text)
    if scheme is not None:
        rest = text.split("://", 1)[1]
        if scheme not in PROTOCOL_OF_SCHEME:
            raise InputError(f"unknown server scheme {scheme!r} in {text}; use grpc:// or http://")
        address, _, name = rest.partition("/")
        if url and url != address:
            raise InputError(f"{text} names server {address} but --url says {url}")
        protocol, url = protocol or PROTOCOL_OF_SCHEME[scheme], address
    else:
        # A folder counts only with a config.pbtxt: `pspnet` may name both a model and a local folder.
        name = _name_from_folder(Path(text)) if (Path(text) / "config.pbtxt").is_file() else text
    protocol = protocol or "grpc"
    if protocol not in DEFAULT_PORTS:
        raise InputError(f"protocol must be grpc or http, got {protocol!r}")
    name = name.strip("/")
    if not name or "/" in name:
        raise InputError(f"{text}: give the served model's name (e.g. pspnet), its repository folder, or "
                         "grpc://host:8001/NAME")
    return name, url or f"localhost:{DEFAULT_PORTS[protocol]}", protocol


def _name_from_folder(folder: Path) -> str:
    """A repository's model folder is served under the name in its config.pbtxt (else the folder's)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = folder / "config.pbtxt"
    try:
        parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise InputError(f"{config}: not a valid model config ({exc})") from None
    return parsed.name or folder.resolve().name


def info_from_config(config) -> ModelInfo | None:
    """The ModelInfo psp-export triton stored in a ModelConfig's parameters, or None when there is none."""
    return ModelInfo.from_props({k: v.string_value for k, v in config.parameters.items()})


def spec_from_config(config) -> InputSpec:
    """Input size and batch limits of a served model: dims exclude the batch when max_batch_size > 0."""
    dims = list(config.input[0].dims)
    if config.max_batch_size > 0:
        dims = [-1, *dims]
    size = (dims[2], dims[3]) if len(dims) == 4 and dims[2] > 0 and dims[3] > 0 else None
    if config.max_batch_size > 0:
        return InputSpec(size=size, min_batch=1, max_batch=config.max_batch_size)
    fixed = dims[0] if dims and dims[0] > 0 else None
    return InputSpec(size=size, min_batch=fixed or 1, max_batch=fixed, fixed_batch=fixed)


def takes_frames(config) -> bool:
    """A served image -> labels ensemble (psp-export triton --ensemble): one RGB uint8 [H, W, 3] per request."""
    image = config.input[0]
    return (len(config.input) == 1 and config.max_batch_size == 0 and _type_name(image.data_type) == "UINT8"
            and list(image.dims) == [-1, -1, 3])


def _full_shape(tensor, config) -> list[int]:
    """A config tensor's dims with the batch dimension in front (-1 when Triton batches)."""
    return [-1, *tensor.dims] if config.max_batch_size > 0 else list(tensor.dims)


@dataclass(frozen=True)
class TritonOptions(BackendOptions):
    """What the triton backends take."""

    url: str | None = option(None, "host:port [default: localhost:8001 for grpc, :8000 for http]")
    protocol: str | None = option(None, "grpc or http [default: the URL's scheme, else grpc]")
    timeout: float = option(30.0, "seconds per request")
    retries: int = option(3, "extra attempts while the server or model is unavailable")
    backoff: float = option(0.5, "the first wait between attempts in seconds, doubled each retry")
    model_version: str = option("", "the served version ('': the server's choice)")
    shm: bool = option(False, "exchange tensors with the server through system shared memory (client and "
                              "server on one machine)", cli=True)


class _Served:
    """What the two Triton runners share: the connection to the server (bounded retries, one-line errors), the
    served config, shared-memory regions, requests and responses (options: TritonOptions)."""

    name = "triton"
    options_class = TritonOptions
    requires = ("tritonclient",)
    model_is_path = False
    timed_by_wall = False
    input_type = "FP32"

    def __init__(self, model_path, **options):
        o = self.options_class.parse(self.name, options)
        self.model_name, self.url, self.protocol = parse_target(str(model_path), o.url, o.protocol)
        self.ssl = str(model_path).startswith("https://")
        super().__init__(str(model_path))
        self.timeout, self.retries, self.backoff = float(o.timeout), max(0, int(o.retries)), float(o.backoff)
        self.model_version = str(o.model_version)
        self.shm = bool(o.shm)
        self._regions: dict = {}
        self._client = None
        self.config = None

    @classmethod
    def auto_priority(cls, model_path: str) -> int | None:
        return 100 if is_server_url(model_path) else None

    @classmethod
    def create(cls, model_path: str, **options):
        """The runner for what the server serves: an image -> labels ensemble takes frames
        (TritonEnsembleRunner), any other model network batches (TritonRunner). Asks the server once."""
        probe = TritonRunner(model_path, **{**options, "shm": False})
        with probe:
            kind = TritonEnsembleRunner if takes_frames(probe.config) else TritonRunner
        return kind(model_path, **options)

    @property
    def display_name(self) -> str:
        return repr(self.model_name)

    def describe(self) -> str:
        return f"triton {self.model_name}@{self.url} ({self.protocol}, {self.info.precision})"

    def _where(self) -> str:
        return f"Triton at {self.url} ({self.protocol})"

    def server_time(self) -> tuple[int, float] | None:
        """(requests, seconds) the server has spent on this model since it started, from the request's arrival
        to its response (Triton's statistics extension, `success`); None when the server does not say. Two
        readings around a run split its round trips into server time and client + network time."""
        kwargs = {"as_json": True} if self.protocol == "grpc" else {}
        try:
            stats = self._client.get_inference_statistics(self.model_name, self.model_version, **kwargs)
            success = stats["model_stats"][0]["inference_stats"]["success"]
        except Exception:  # noqa: BLE001 - statistics are optional; the run does not depend on them
            return None
        return int(success.get("count", 0)), int(success.get("ns", 0)) / 1e9

    def _connect(self):
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as client_module

                return client_module.InferenceServerClient(self.url)
            import tritonclient.http as client_module

            return client_module.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                       network_timeout=self.timeout, ssl=self.ssl)
        except ImportError as exc:
            raise BackendUnavailable(f"tritonclient {self.protocol} support is not installed ({exc.name}); "
                                     "pip install 'pspnet-deploy[triton]'") from None
        except Exception as exc:  # a malformed URL fails here already
            raise InputError(f"cannot use {self._where()}: {classify_error(exc).detail}") from None

    def _call(self, what: str, fn, *args, **kwargs):
        """fn(*args) with bounded retries (backoff doubling) while the server/model may still come up; any
        failure left becomes one PSPError line naming the server, the model and what to do."""
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # tritonclient raises InferenceServerException, OSError, gevent errors
                error = classify_error(exc)
                if not error.retry or attempt == self.retries:
                    raise self._user_error(what, error, attempt + 1) from None
                time.sleep(self.backoff * 2 ** attempt)

    def _user_error(self, what: str, error: ServerError, attempts: int) -> PSPError:
        tried = f" (tried {attempts} times)" if attempts > 1 else ""
        if error.kind == "unavailable":
            return PSPError(f"cannot reach {self._where()}{tried}: {error.detail}; is the server running "
                            "and the port right (gRPC 8001, HTTP 8000)?")
        if error.kind == "timeout":
            return PSPError(f"{what} on {self._where()} timed out after {self.timeout:g} s; raise --timeout "
                            "or check the server's load")
        if error.kind == "not_found":
            return InputError(f"{self._where()} has no model {self.model_name!r}: {error.detail}")
        if error.kind == "not_ready":
            return PSPError(f"model {self.model_name!r} is not ready on {self._where()}{tried}: {error.detail};"
                            " see the server log")
        return PSPError(f"{what} failed on {self._where()}: {error.detail}")

    def _wait_until_ready(self) -> None:
        def ready():
            if not self._client.is_model_ready(self.model_name, self.model_version, **self._deadline()):
                # Unknown models and models still loading both answer "not ready"; the config tells which.
                self._client.get_model_config(self.model_name, self.model_version, **self._deadline())
                raise PSPError(f"model {self.model_name} is not ready")
            return True

        self._call("readiness check", ready)

    def _fetch_config(self):
        from google.protobuf import json_format
        from tritonclient.grpc import model_config_pb2

        served = self._call("get_model_config", self._client.get_model_config, self.model_name,
                            self.model_version, **self._deadline())
        if self.protocol == "grpc":
            return served.config
        return json_format.ParseDict(served, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)

    def _deadline(self) -> dict:
        # gRPC takes a deadline per call; the HTTP client got its timeouts when it was created.
        return {"client_timeout": self.timeout} if self.protocol == "grpc" else {}

    def load(self) -> None:
        self._client = self._connect()
        try:
            self._wait_until_ready()
            self.config = self._fetch_config()
            self.input_spec = spec_from_config(self.config)
            self.info = info_from_config(self.config) or self._assumed_info()
            if self.shm:
                from runtime.backends.triton_shm import SharedRegion

                self._regions = {role: SharedRegion(self._client, self._call, role) for role in ("in", "out")}
        except BaseException:
            self.release()
            raise

    def _assumed_info(self) -> ModelInfo:
        out = self.config.output[0]
        return fallback_info(f"triton:{self.url}/{self.model_name}", _full_shape(self.config.input[0], self.config),
                             out.name, _full_shape(out, self.config))

    def release(self) -> None:
        if self._client is None:
            return
        regions, self._regions = list(self._regions.values()), {}
        try:
            _release_all(regions)
        finally:
            self._client.close()
            self._client = None

    @property
    def input_name(self) -> str:
        names = [t.name for t in self.config.input]
        return INPUT_NAME if INPUT_NAME in names else names[0]

    @property
    def output_name(self) -> str:
        names = [t.name for t in self.config.output]
        return self.info.output if self.info.output in names else names[0]

    def _output_itemsize(self) -> int:
        from tritonclient.utils import triton_to_np_dtype

        out = next(t for t in self.config.output if t.name == self.output_name)
        return np.dtype(triton_to_np_dtype(_type_name(out.data_type))).itemsize

    def output_bytes(self, array: np.ndarray) -> int:
        """Room for the output of `array`: a shared-memory output region must be sized before the request.
        Labels are [N, H, W], logits [N, C, H, W]."""
        pixels = len(array) * int(np.prod(array.shape[2:]))
        if self.info.output == "labels":
            return pixels * self._output_itemsize()
        out = next(t for t in self.config.output if t.name == self.output_name)
        classes = self.info.num_classes or max(_full_shape(out, self.config)[1], 0)
        if not classes:
            raise InputError(f"--shm needs the class count of {self.display_name}, which its config does not give")
        return pixels * classes * self._output_itemsize()

    def build_request(self, array: np.ndarray) -> tuple[list, list]:
        """tritonclient InferInput/InferRequestedOutput lists for one request (a float32 [N, 3, H, W] batch,
        or one uint8 frame for an ensemble), the tensors in shared memory with `shm`."""
        module = _client_module(self.protocol)
        image = module.InferInput(self.input_name, list(array.shape), self.input_type)
        output = module.InferRequestedOutput(self.output_name)
        if self.shm:
            image.set_shared_memory(self._regions["in"].name, self._regions["in"].write(array))
            nbytes = self.output_bytes(array)
            self._regions["out"].ensure(nbytes)
            output.set_shared_memory(self._regions["out"].name, nbytes)
        else:
            image.set_data_from_numpy(array)
        return [image], [output]

    def decode(self, result) -> np.ndarray:
        """The requested output of an InferResult as a numpy array (read from the region with `shm`)."""
        if self.shm:
            from tritonclient.utils import triton_to_np_dtype

            meta = result.get_output(self.output_name)
            if meta is not None:
                shape, dtype = ((meta["shape"], meta["datatype"]) if isinstance(meta, dict)
                                else (meta.shape, meta.datatype))
                return self._regions["out"].read(triton_to_np_dtype(dtype), shape)
        array = None if self.shm else result.as_numpy(self.output_name)
        if array is None:
            raise PSPError(f"{self._where()} returned no {self.output_name!r} output for {self.model_name!r}")
        return array

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        # Larger batches than the server takes go in pieces (the Runner base); its dynamic batcher merges
        # small ones. last_timing stays empty: the server's own queue/compute split is not in a response
        # (perf_analyzer reads it from Triton's statistics, see docs/triton.md), and a round trip is no
        # "compute" time.
        inputs, outputs = self.build_request(batch)
        result = self._call("inference", self._client.infer, self.model_name, inputs,
                            model_version=self.model_version, outputs=outputs, **self._deadline())
        return self.decode(result)


class TritonRunner(_Served, Runner):
    """A model served by Triton that takes network batches like a local model file (see _Served's options)."""


class TritonEnsembleRunner(_Served, FrameRunner):
    """A served image -> labels ensemble (psp-export triton --ensemble): RGB uint8 frames of any size in, label
    maps at their size out; the server does the pre- and post-processing (see _Served's options)."""

    input_type = "UINT8"

    def output_bytes(self, array: np.ndarray) -> int:
        return array.shape[0] * array.shape[1] * self._output_itemsize()
def _release_all(regions) -> None:
    """Release every region, even when one fails (the server gone, a second Ctrl-C): each is destroyed here
    whatever the server answers; the first failure is raised afterwards."""
    failure = None
    for region in regions:
        try:
            region.release()
        except BaseException as exc:  # KeyboardInterrupt too: the other regions still get released
            failure = failure or exc
    if failure is not None:
        raise failure


def _type_name(data_type: int) -> str:
    """A config DataType enum value as the wire protocol's name ("FP32", "UINT8")."""
    from tritonclient.grpc import model_config_pb2

    return triton_name_of_config_enum(model_config_pb2.DataType.Name(data_type))


def _client_module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module
