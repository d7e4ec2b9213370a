"""How a Triton server is addressed: the URL schemes that name a served model (grpc://host:8001/NAME), the
protocol each scheme means and the protocols' default ports, for every command that talks to or starts one."""
from __future__ import annotations

PROTOCOL_OF_SCHEME = {"grpc": "grpc", "http": "http", "https": "http", "triton": "grpc"}
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}  # tritonserver's own defaults


def url_scheme(text: str) -> str | None:
    """The scheme of a URL ('grpc' for grpc://host:8001/m, whatever it is), None for a file path: the one rule
    that tells a URL from a path."""
    scheme, separator, _ = str(text).partition("://")
    return scheme if separator else None


def is_server_url(text: str) -> bool:
    """True for a served model's URL (grpc://, http://, https://, triton://), False for a file path."""
    return url_scheme(text) in PROTOCOL_OF_SCHEME
