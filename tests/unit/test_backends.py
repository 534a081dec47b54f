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
from proxy.settings import Settings


def image() -> ImageInput:
    """A small JPEG request image."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buffer, format="JPEG")
    return ImageInput(buffer.getvalue(), ImageLimits.from_settings(Settings()))


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


def test_a_predict_call_that_cannot_start_gives_its_slot_back() -> None:
    """A Predict that raises as it starts (the channel is closed) frees its MAX_BACKEND_CALLS slot at once."""
    from odapi.contract import ANSWER_OUTPUTS
    from proxy.backends.serving import ModelSpec, ServingBackend, ServingConnection, _Signature

    calls = CallLimit(1)
    connection = ServingConnection("127.0.0.1:1")  # lazily connected: no socket is opened here
    connection.close()
    backend = ServingBackend(ModelSpec("m"), connection, calls=calls, labels=LabelMaps(None), request_timeout_s=1)
    signature = _Signature(1, "inputs", InputType.IMAGE_TENSOR, 4, ANSWER_OUTPUTS, None)
    with pytest.raises(ValueError, match="closed"):
        backend._send(signature, image(), time.monotonic() + 1, calls.request())
    calls.acquire(time.monotonic())  # Overloaded at once if the slot had leaked
    calls.release()


def test_errors_keep_headers_of_their_own() -> None:
    """Each error has its own headers: setting one error's never shows on another."""
    first, second = BackendError("a"), BackendError("b")
    first.headers["X-Test"] = "1"
    assert second.headers == {} and Overloaded("c").headers == {"Retry-After": "1"}


def test_a_request_has_at_most_its_share_of_the_calls() -> None:
    """One request's calls take at most per_request slots; another request still finds one of the process's."""
    limit = CallLimit(4, per_request=2)
    first, second = limit.request(), limit.request()
    first.acquire(time.monotonic() + 1)
    first.acquire(time.monotonic() + 1)
    with pytest.raises(Overloaded, match="this request's model calls"):
        first.acquire(time.monotonic() + 0.05)
    second.acquire(time.monotonic())  # at once: the first request left the process's other slots free
    threading.Timer(0.05, first.release).start()
    first.acquire(time.monotonic() + 2)  # its own call finished: its next one goes
    for calls in (first, first, second):
        calls.release()
