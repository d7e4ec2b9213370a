"""End to end against a real Triton server serving a repository written by psp-export triton. No server can be
started on the CI machines, so this runs only when TRITON_URL (host:port) is set; TRITON_MODEL names the served
model (default pspnet), TRITON_PROTOCOL picks grpc (default) or http."""
from __future__ import annotations

import os

import numpy as np
import pytest

URL = os.environ.get("TRITON_URL")
pytestmark = pytest.mark.skipif(not URL, reason="set TRITON_URL=host:port of a running Triton server to run")


@pytest.fixture(scope="module")
def runner():
    from pspcore.registry import create_runner

    model = os.environ.get("TRITON_MODEL", "pspnet")
    with create_runner("triton", model, url=URL, protocol=os.environ.get("TRITON_PROTOCOL", "grpc"),
                       retries=5) as served:
        yield served


def test_served_model_answers_with_its_metadata_shapes(runner):
    h, w = runner.input_spec.size or runner.info.input_size or (65, 65)
    n = min(2, runner.input_spec.max_batch or 2) if not runner.input_spec.fixed_batch else runner.input_spec.fixed_batch
    out = runner.infer(np.random.default_rng(0).normal(size=(n, 3, h, w)).astype(np.float32))
    if runner.info.output == "labels":
        assert out.shape == (n, h, w) and np.issubdtype(out.dtype, np.integer)
    else:
        assert out.shape == (n, runner.info.num_classes, h, w) and out.dtype == np.float32
        assert np.isfinite(out).all()


def test_more_images_than_the_max_batch_come_back_in_order(runner):
    spec = runner.input_spec
    if spec.fixed_batch or not spec.max_batch:
        pytest.skip("the served model takes a fixed batch")
    h, w = spec.size or runner.info.input_size or (65, 65)
    batch = np.random.default_rng(1).normal(size=(spec.max_batch + 1, 3, h, w)).astype(np.float32)
    whole = runner.infer(batch)  # sent as two requests
    for i in (0, spec.max_batch):
        np.testing.assert_allclose(whole[i:i + 1], runner.infer(batch[i:i + 1]), rtol=1e-4, atol=1e-4)
