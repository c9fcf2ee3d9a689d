"""The bounded expiring cache behind the token caches (issue 13)."""

from __future__ import annotations

from hirepay_platform.expiring import ExpiringCache


def test_an_entry_is_served_until_its_expiry_and_never_after() -> None:
    cache: ExpiringCache[str, str] = ExpiringCache()
    cache.put("k", "v", expires=100.0, now=0.0)
    assert cache.get("k", 99.999) == "v"
    assert cache.get("k", 100.0) is None
    # Gone for good: an earlier clock reading later does not bring it back.
    assert cache.get("k", 50.0) is None
    assert len(cache) == 0


def test_a_full_cache_drops_expired_entries_first_then_everything() -> None:
    cache: ExpiringCache[int, int] = ExpiringCache(max_entries=3)
    cache.put(1, 1, expires=10.0, now=0.0)
    cache.put(2, 2, expires=50.0, now=0.0)
    cache.put(3, 3, expires=50.0, now=0.0)
    cache.put(4, 4, expires=50.0, now=20.0)  # full: 1 has expired and makes room
    assert [cache.get(k, 20.0) for k in (1, 2, 3, 4)] == [None, 2, 3, 4]
    cache.put(5, 5, expires=60.0, now=20.0)  # full, nothing expired: all go
    assert len(cache) == 1 and cache.get(5, 20.0) == 5
    cache.put(5, 6, expires=60.0, now=20.0)  # replacing a key never evicts
    assert cache.get(5, 20.0) == 6
