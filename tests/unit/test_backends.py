"""What backends share: the value an image becomes for each input type, the call limit, label maps per answer."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from odapi.contract import InputType
from proxy.backends import CallLimit, LabelMaps, model_input
from proxy.errors import BackendError, Overloaded
from proxy.images import ImageInput, ImageLimits
from proxy.labels import LabelMap


def image() -> ImageInput:
    """A small JPEG request image."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buffer, format="JPEG")
    return ImageInput(buffer.getvalue(), ImageLimits())


def test_pixel_inputs_are_a_batch_of_one() -> None:
    """image_tensor takes uint8 [1, h, w, 3]; float_image_tensor the same values as float32."""
    prepared = image()
    uint8 = model_input(prepared, InputType.IMAGE_TENSOR, 4)
    floats = model_input(prepared, InputType.FLOAT_IMAGE_TENSOR, 4)
    assert (uint8.dtype, uint8.shape) == (np.uint8, (1, 6, 8, 3))
    assert floats.dtype == np.float32
    np.testing.assert_array_equal(floats, uint8.astype(np.float32))


def test_string_inputs_carry_the_bytes_or_an_example() -> None:
    """encoded_image_string_tensor takes the bytes, tf_example a tf.Example around them; rank 0 takes a scalar."""
    prepared = image()
    encoded = model_input(prepared, InputType.ENCODED_IMAGE_STRING_TENSOR, 1)
    assert encoded.shape == (1,) and encoded[0] == prepared.data
    example = model_input(prepared, InputType.TF_EXAMPLE, 1)
    assert prepared.data in example[0] and b"image/encoded" in example[0]
    assert model_input(prepared, InputType.TF_EXAMPLE, 0).shape == ()


def test_call_limit_waits_until_its_deadline_then_refuses() -> None:
    """Past MAX_BACKEND_CALLS a call waits for a slot; none freeing before the deadline is a 503."""
    limit = CallLimit(1)
    limit.acquire(time.monotonic() + 1)
    with pytest.raises(Overloaded, match="MAX_BACKEND_CALLS"):
        limit.acquire(time.monotonic() + 0.05)
    threading.Timer(0.05, limit.release).start()
    limit.acquire(time.monotonic() + 2)  # freed meanwhile
    limit.release()


def test_label_maps_parse_once_and_fall_back() -> None:
    """The same text gives the same parsed map; no text gives the fallback; a broken one is a 502."""
    maps = LabelMaps(LabelMap({1: "Fallback"}))
    text = 'item { id: 1 name: "person" }'
    assert maps.parse(text, "m") is maps.parse(text, "m")
    assert maps.parse(text, "m").name(1) == "Person"
    assert maps.parse(None, "m").name(1) == "Fallback" and maps.parse("", "m").name(1) == "Fallback"
    assert LabelMaps(None).parse(None, "m").name(1) == "Class 1"
    with pytest.raises(BackendError, match="label map is malformed"):
        maps.parse("item { id: nope }", "m")
