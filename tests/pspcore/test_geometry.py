"""pspcore.geometry: the one input-size rule (fixed > requested > stored > default), and its errors."""
from __future__ import annotations

import pytest

from pspcore.errors import InputError
from pspcore.geometry import resolve_input_size
from pspcore.model_info import ModelInfo
from pspcore.runner import InputSpec

DYNAMIC = InputSpec(size=None)
STORED = ModelInfo(input_size=(97, 97))


def test_precedence_fixed_then_requested_then_stored_then_default():
    assert resolve_input_size(InputSpec(size=(65, 65)), STORED, None) == (65, 65)
    assert resolve_input_size(InputSpec(size=(65, 65)), STORED, (65, 65)) == (65, 65)
    assert resolve_input_size(DYNAMIC, STORED, (33, 49)) == (33, 49)
    assert resolve_input_size(DYNAMIC, STORED, None, default=(9, 9)) == (97, 97)
    assert resolve_input_size(None, ModelInfo(), None, default=(9, 9)) == (9, 9)


def test_a_fixed_model_refuses_another_size_naming_the_option():
    with pytest.raises(InputError, match=r"m.onnx takes 65x65 inputs only, not 33x33: --crop 33x33 needs"):
        resolve_input_size(InputSpec(size=(65, 65)), STORED, (33, 33), model="m.onnx", option="--crop")


def test_nothing_known_says_what_to_pass():
    with pytest.raises(InputError, match="dynamic input size and stores none: pass --size HxW"):
        resolve_input_size(DYNAMIC, ModelInfo(), None)


def test_a_size_outside_the_build_profile_is_refused():
    spec = InputSpec(size=None, min_size=(32, 32), max_size=(64, 64))
    assert resolve_input_size(spec, ModelInfo(), (48, 40)) == (48, 40)
    with pytest.raises(InputError, match="from 32x32 to 64x64"):
        resolve_input_size(spec, ModelInfo(), (96, 96))
