"""The LRU store and its entries: byte bounds, variants, 304 updates, purges."""

from __future__ import annotations

import threading

from simpleproxy.cache.store import ENTRY_OVERHEAD, Caches, Entry, Freshness, Store

T0 = 1_800_000_000.0
DATE = "Fri, 15 Jan 2027 08:00:00 GMT"  # T0


def entry(key="http://a/x", body=b"x" * 100, headers=None, environ=None, at=T0) -> Entry:
    headers = headers if headers is not None else [("Cache-Control", "max-age=60"), ("Date", DATE)]
    return Entry(key, "200 OK", list(headers), body, environ or {}, at, at, Freshness())


def test_an_entry_counts_its_body_fields_and_object_overhead() -> None:
    e = entry(body=b"y" * 1000)
    assert ENTRY_OVERHEAD + 1000 < e.size < ENTRY_OVERHEAD + 1000 + 1000


def test_rfc9110_6_6_1_a_response_without_date_is_dated_on_arrival() -> None:
    e = entry(headers=[("Cache-Control", "max-age=60")])
    assert ("Date", DATE) in e.headers and e.date == T0


def test_3_1_age_and_hop_by_hop_fields_are_not_stored_and_length_is_exact() -> None:
    e = entry(body=b"abc", headers=[("Age", "5"), ("Connection", "close"), ("Content-Length", "99"),
                                    ("Cache-Control", "max-age=60"), ("Date", DATE)])
    names = [n.lower() for n, _ in e.headers]
    assert "age" not in names and "connection" not in names
    assert ("Content-Length", "3") in e.headers
    assert e.age(T0) == 5  # the received Age still counts


def test_the_lru_evicts_least_recently_used_keys_to_stay_within_bytes() -> None:
    size = entry().size
    store = Store(max_size=3 * size, max_object=size)
    for name in "abc":
        assert store.put(entry(key=f"http://a/{name}"))
    store.lookup("http://a/a", {})  # a is now the most recently used
    store.put(entry(key="http://a/d"))
    assert store.lookup("http://a/b", {}) == (None, False)
    assert store.lookup("http://a/a", {})[0] is not None
    assert store.size <= store.max_size and store.evictions == 1


def test_an_object_over_the_limit_is_not_stored() -> None:
    store = Store(max_size=10**6, max_object=2000)
    assert not store.put(entry(body=b"z" * 5000))
    assert len(store) == 0 and store.size == 0


def test_4_1_variants_live_side_by_side_and_replace_their_own() -> None:
    store = Store(10**6, 10**5)
    vary = [("Cache-Control", "max-age=60"), ("Vary", "Accept-Encoding"), ("Date", DATE)]
    gzip = entry(headers=vary, environ={"HTTP_ACCEPT_ENCODING": "gzip"}, body=b"g")
    plain = entry(headers=vary, environ={}, body=b"p")
    store.put(gzip)
    store.put(plain)
    assert store.lookup("http://a/x", {"HTTP_ACCEPT_ENCODING": "gzip"})[0] is gzip
    assert store.lookup("http://a/x", {})[0] is plain
    assert store.lookup("http://a/x", {"HTTP_ACCEPT_ENCODING": "br"}) == (None, True)
    newer = entry(headers=vary, environ={"HTTP_ACCEPT_ENCODING": "gzip"}, body=b"G")
    store.put(newer)
    assert len(store) == 2 and store.lookup("http://a/x", {"HTTP_ACCEPT_ENCODING": "gzip"})[0] is newer
    assert store.size == newer.size + plain.size


def test_4_1_a_new_vary_replaces_every_variant_stored_under_the_old_one() -> None:
    store = Store(10**6, 10**5)
    store.put(entry(headers=[("Vary", "Accept"), ("Cache-Control", "max-age=9")], environ={"HTTP_ACCEPT": "a"}))
    store.put(entry(headers=[("Cache-Control", "max-age=9")]))
    assert len(store) == 1


def test_3_2_a_304_replaces_fields_except_content_length_and_keeps_the_rest() -> None:
    e = entry(body=b"body", headers=[("Cache-Control", "max-age=1"), ("ETag", '"v1"'), ("X-Kept", "1"),
                                     ("X-Changed", "old"), ("Date", DATE)])
    fresh = e.freshened([("Cache-Control", "max-age=600"), ("X-Changed", "new"), ("Content-Length", "0"),
                         ("ETag", '"v1"')], T0 + 100, T0 + 100, Freshness())
    assert dict(fresh.headers)["X-Changed"] == "new" and dict(fresh.headers)["X-Kept"] == "1"
    assert dict(fresh.headers)["Content-Length"] == "4" and fresh.body == b"body"
    assert fresh.lifetime == 600 and fresh.age(T0 + 100) == 0  # dated on arrival: no Date in the 304


def test_4_3_4_which_304s_identify_the_stored_response() -> None:
    strong = entry(headers=[("ETag", '"v1"'), ("Last-Modified", DATE)])
    assert strong.validated_by({"etag": '"v1"'})
    assert not strong.validated_by({"etag": '"v2"'})
    assert strong.validated_by({"etag": 'W/"v1"'})
    assert strong.validated_by({"last-modified": DATE}) and not strong.validated_by({"last-modified": "x"})
    assert strong.validated_by({})


def test_removal_and_purges() -> None:
    store = Store(10**6, 10**5)
    caches = Caches([store])
    for path in ("/static/a.css", "/static/b.js", "/api/x?q=1", "/api/x"):
        store.put(entry(key="http://site" + path))
    assert caches.purge("HTTP://SITE/api/x?q=1") == 2  # the URL, and its key without the query
    assert caches.purge_prefix("http://site/static/") == 2
    assert len(store) == 0 and store.size == 0


def test_4_4_invalidate_reaches_every_store() -> None:
    one, two = Store(10**6, 10**5), Store(10**6, 10**5)
    one.put(entry(key="http://h/a"))
    two.put(entry(key="http://h/b"))
    assert Caches([one, two]).invalidate(["http://h/a", "http://h/b", "http://h/c"]) == 2


def test_concurrent_puts_keep_the_byte_count_exact() -> None:
    size = entry().size
    store = Store(max_size=50 * size, max_object=size)

    def worker(n: int) -> None:
        for i in range(300):
            store.put(entry(key=f"http://a/{(n * 7 + i) % 120}"))
            store.remove(f"http://a/{(n + i) % 120}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.size == len(store) * size <= store.max_size


def tagged(key: str, *tags: str, body: bytes = b"x" * 100) -> Entry:
    return Entry(key, "200 OK", [("Cache-Control", "max-age=60"), ("Date", DATE)], body, {}, T0, T0, Freshness(),
                 tags=frozenset(tags))


def test_purging_a_tag_drops_those_entries_only_and_the_index_forgets_what_is_gone() -> None:
    store = Store(max_size=10_000, max_object=10_000)
    for key, tags in (("http://a/1", ("p1", "shop")), ("http://a/2", ("p2", "shop")), ("http://a/3", ("p3",))):
        assert store.put(tagged(key, *tags))
    assert store.remove_tag("p1") == 1 and store.lookup("http://a/1", {})[0] is None
    assert store.lookup("http://a/2", {})[0] is not None and "p1" not in store._tags
    assert store.remove("http://a/3") == 1 and "p3" not in store._tags  # removed by URL: forgotten by tag too
    assert store.put(tagged("http://a/2", "p2b"))  # stored again under other tags
    assert "shop" not in store._tags and store.remove_tag("shop") == 0
    for i in range(200):  # evictions forget their tags: the index stays bounded by what is stored
        store.put(tagged(f"http://a/e{i}", f"t{i}", body=b"x" * 1000))
    assert len(store._tags) <= len(store) + 1
