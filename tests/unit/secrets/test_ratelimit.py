from __future__ import annotations

import pytest

from doorward_kit.errors import DoorwardError, ErrorCode
from services.secrets.ratelimit import RateLimiter

pytestmark = pytest.mark.unit


def test_sliding_window_per_user() -> None:
    now = [0.0]
    limiter = RateLimiter(3, 60.0, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("alice")
    with pytest.raises(DoorwardError) as refused:
        limiter.check("alice")
    assert refused.value.code is ErrorCode.RATE_LIMITED
    limiter.check("bob")  # another user is not affected
    now[0] = 60.5
    limiter.check("alice")
