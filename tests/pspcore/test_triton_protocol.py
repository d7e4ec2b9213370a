"""pspcore.triton_protocol: which model arguments are server URLs."""
from __future__ import annotations

from pspcore.triton_protocol import DEFAULT_PORTS, PROTOCOL_OF_SCHEME, is_server_url


def test_server_urls_and_file_paths():
    assert all(is_server_url(f"{scheme}://host:1/m") for scheme in PROTOCOL_OF_SCHEME)
    assert not is_server_url("models/m.onnx") and not is_server_url("ftp://host/m") and not is_server_url("grpc:/m")
    assert set(PROTOCOL_OF_SCHEME.values()) == set(DEFAULT_PORTS)


def test_url_scheme_is_the_one_url_rule():
    """Any scheme marks a URL (so an ftp:// model is not read as a file); only the server schemes are served
    models. The registry's messages, ONNX Runtime's claim and Triton's target all ask url_scheme."""
    from pspcore.registry import model_kind
    from pspcore.triton_protocol import url_scheme

    assert url_scheme("grpc://h:8001/m") == "grpc" and url_scheme("ftp://h/m") == "ftp"
    assert url_scheme("models/m.onnx") is None and url_scheme("C:/m.onnx") is None
    assert model_kind("ftp://h/m.onnx") == "a server URL" and model_kind("m.ONNX") == "a .onnx file"
    assert not is_server_url("ftp://h/m")
