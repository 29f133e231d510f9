"""The EC2 endpoint's front for the usual request: what it takes as read without parsing it is
what the parse would have given."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from cloudctl.api.ec2.app import _FORM, _FORM_TYPES


@pytest.mark.parametrize("spelling", sorted(_FORM_TYPES))
def test_the_form_types_taken_as_read_are_the_form(spelling: str) -> None:
    """A Content-Type in `_FORM_TYPES` is the form as aiohttp's own parse reads it."""
    assert make_mocked_request("POST", "/", headers={"Content-Type": spelling}).content_type == _FORM


@pytest.mark.parametrize("spelling", ["application/x-www-form-urlencoded;charset=utf-8",
                                      "Application/X-WWW-Form-Urlencoded", "text/plain", "multipart/form-data"])
def test_other_spellings_are_parsed(spelling: str) -> None:
    """Anything else is not taken as read (the request's parse decides, as before)."""
    assert spelling not in _FORM_TYPES
