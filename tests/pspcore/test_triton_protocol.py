"""pspcore.triton_protocol: which model arguments are server URLs."""
from __future__ import annotations

from pspcore.triton_protocol import DEFAULT_PORTS, PROTOCOL_OF_SCHEME, is_server_url


def test_server_urls_and_file_paths():
    assert all(is_server_url(f"{scheme}://host:1/m") for scheme in PROTOCOL_OF_SCHEME)
    assert not is_server_url("models/m.onnx") and not is_server_url("ftp://host/m") and not is_server_url("grpc:/m")
    assert set(PROTOCOL_OF_SCHEME.values()) == set(DEFAULT_PORTS)
