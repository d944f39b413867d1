"""Static files through the real proxy: validators, conditions, ranges, HEAD, precompressed
variants, the single-page-app fallback, and every way out of the root refused (static.py)."""

from __future__ import annotations

import email.parser
import gzip
import os
from pathlib import Path

import pytest

from simpleproxy.config import config_from_dict
from simpleproxy.errors import ConfigError

BIG = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "public"
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / ".well-known").mkdir()
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "sub" / "index.html").write_text("<h1>sub</h1>")
    (root / "app.js").write_text("console.log(1)")
    (root / "style.css").write_text("body { margin: 0 }" * 50)
    (root / "style.css.gz").write_bytes(gzip.compress((root / "style.css").read_bytes()))
    (root / "style.css.br").write_bytes(b"pretend brotli")
    (root / "big.bin").write_bytes(BIG)
    (root / ".env").write_text("SECRET=1")
    (root / ".well-known" / "security.txt").write_text("Contact: a@example.com")
    (root / "nul.txt").write_text("a device on Windows")
    (root / "a:b.txt").write_text("a stream on Windows")
    (tmp_path / "outside.txt").write_text("outside the root")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    (root / "elsewhere").symlink_to(tmp_path, target_is_directory=True)  # a directory link out of the root
    (root / "inner-link.txt").symlink_to(root / "app.js")
    return root


def files(root: Path, **static: object) -> dict:
    return {"routes": [{"path": "/", "static": {"root": str(root), **static}}]}


def test_a_file_with_its_type_validators_and_length(site, proxy) -> None:
    p = proxy(files(site, cache_control="public, max-age=3600"))
    answer, body = p.request("GET", "/app.js")
    assert answer.status == 200 and body == b"console.log(1)"
    assert answer.getheader("Content-Type") == "text/javascript; charset=utf-8"
    assert answer.getheader("Content-Length") == "14" and answer.getheader("Accept-Ranges") == "bytes"
    assert answer.getheader("Cache-Control") == "public, max-age=3600"
    assert answer.getheader("ETag").startswith('"') and answer.getheader("Last-Modified").endswith("GMT")
    big, body = p.request("GET", "/big.bin")
    assert body == BIG and big.getheader("Content-Type") == "application/octet-stream"
    head, body = p.request("HEAD", "/big.bin")
    assert head.status == 200 and body == b"" and head.getheader("Content-Length") == str(len(BIG))
    home, body = p.request("GET", "/")
    assert body == b"<h1>home</h1>" and home.getheader("Content-Type") == "text/html; charset=utf-8"
    assert p.request("GET", "/.well-known/security.txt")[1] == b"Contact: a@example.com"
    assert p.request("GET", "/inner-link.txt")[1] == b"console.log(1)"  # a link that stays inside


def test_conditional_requests(site, proxy) -> None:
    p = proxy(files(site))
    first, _ = p.request("GET", "/app.js")
    etag, modified = first.getheader("ETag"), first.getheader("Last-Modified")
    same, body = p.request("GET", "/app.js", headers={"If-None-Match": f'"other", W/{etag}'})
    assert same.status == 304 and body == b"" and same.getheader("ETag") == etag
    assert p.request("GET", "/app.js", headers={"If-Modified-Since": modified})[0].status == 304
    assert p.request("GET", "/app.js", headers={"If-Match": '"other"'})[0].status == 412
    assert p.request("GET", "/app.js", headers={"If-Match": etag})[0].status == 200
    assert p.request("GET", "/app.js", headers={"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})[0].status == 412


def test_single_and_multiple_ranges_and_if_range(site, proxy) -> None:
    p = proxy(files(site))
    etag = p.request("HEAD", "/big.bin")[0].getheader("ETag")
    one, body = p.request("GET", "/big.bin", headers={"Range": "bytes=1000-1999"})
    assert one.status == 206 and body == BIG[1000:2000]
    assert one.getheader("Content-Range") == f"bytes 1000-1999/{len(BIG)}"
    tail, body = p.request("GET", "/big.bin", headers={"Range": "bytes=-10", "If-Range": etag})
    assert tail.status == 206 and body == BIG[-10:]
    several, body = p.request("GET", "/big.bin", headers={"Range": "bytes=0-1, 900000-900002"})
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + several.getheader("Content-Type").encode() + b"\r\n\r\n" + body)
    assert [part.get_payload(decode=True) for part in message.get_payload()] == [BIG[:2], BIG[900000:900003]]
    assert int(several.getheader("Content-Length")) == len(body)
    changed, body = p.request("GET", "/big.bin", headers={"Range": "bytes=0-1", "If-Range": '"old"'})
    assert changed.status == 200 and body == BIG
    beyond, _ = p.request("GET", "/big.bin", headers={"Range": f"bytes={len(BIG)}-"})
    assert beyond.status == 416 and beyond.getheader("Content-Range") == f"bytes */{len(BIG)}"


def test_precompressed_variants_by_accept_encoding(site, proxy) -> None:
    p = proxy(files(site, precompressed=["br", "gzip"]))
    brotli, body = p.request("GET", "/style.css", headers={"Accept-Encoding": "gzip, br"})
    assert body == b"pretend brotli" and brotli.getheader("Content-Encoding") == "br"
    assert brotli.getheader("Vary") == "Accept-Encoding" and brotli.getheader("Content-Type") == "text/css; charset=utf-8"
    zipped, body = p.request("GET", "/style.css", headers={"Accept-Encoding": "gzip"})
    assert zipped.getheader("Content-Encoding") == "gzip" and gzip.decompress(body) == (site / "style.css").read_bytes()
    assert zipped.getheader("ETag") != brotli.getheader("ETag")
    plain, body = p.request("GET", "/style.css")
    assert plain.getheader("Content-Encoding") is None and body == (site / "style.css").read_bytes()
    assert plain.getheader("Vary") == "Accept-Encoding"
    js, _ = p.request("GET", "/app.js", headers={"Accept-Encoding": "br"})  # no app.js.br: the original
    assert js.getheader("Content-Encoding") is None


def test_directories_single_page_fallback_and_no_listings(site, proxy) -> None:
    p = proxy({"routes": [{"path": "/app", "strip_prefix": True, "static": {"root": str(site), "fallback": "/index.html"}},
                          {"path": "/", "static": {"root": str(site)}}]})
    moved, _ = p.request("GET", "/sub?x=1")
    assert moved.status == 301 and moved.getheader("Location") == "/sub/?x=1"
    assert p.request("GET", "/sub/")[1] == b"<h1>sub</h1>"
    assert p.request("GET", "/empty/")[0].status == 404  # a directory without index: never listed
    assert p.request("GET", "/app/settings/profile")[1] == b"<h1>home</h1>"  # the app's own router takes it
    assert p.request("GET", "/app/app.js")[1] == b"console.log(1)"
    refused, _ = p.request("POST", "/app.js", body=b"x")
    assert refused.status == 405 and refused.getheader("Allow") == "GET, HEAD"


@pytest.mark.parametrize("target", [
    "/../outside.txt", "/%2e%2e/outside.txt", "/sub/..%2F..%2Foutside.txt", "/..%5Coutside.txt",
    "/link.txt", "/elsewhere/outside.txt", "/elsewhere/public/app.js", "/.env", "/nul.txt", "/NUL", "/a:b.txt", "/app.js::$DATA", "/C:%5Cwindows%5Cwin.ini",
    "/app.js.", "/app.js%20", "/%c0%ae%c0%ae/outside.txt", "/app.js%00.png",
])
@pytest.mark.parametrize("at_admission", [True, False])
def test_every_way_out_of_the_root_is_refused(site, proxy, target, at_admission) -> None:
    """Refused by the static route itself, with or without the server's ambiguous-path check first."""
    p = proxy({**files(site), "server": {"reject_ambiguous_paths": at_admission}})
    answer, body = p.request("GET", target)
    assert answer.status in (400, 404)
    for content in (b"outside the root", b"SECRET", b"console.log", b"a device on", b"a stream on"):
        assert content not in body


def test_a_link_leaving_the_root_is_served_when_allowed(site, proxy) -> None:
    p = proxy(files(site, follow_symlinks=True))
    assert p.request("GET", "/link.txt")[1] == b"outside the root"
    assert p.request("GET", "/elsewhere/outside.txt")[1] == b"outside the root"


def test_without_a_file_wrapper_files_are_read_in_blocks(site) -> None:
    from werkzeug.test import Client

    from simpleproxy.app import ProxyApp

    app = ProxyApp(config_from_dict(files(site)))
    client = Client(app)
    answer = client.get("/big.bin", buffered=True)  # buffered: read whole, then closed (the file with it)
    assert answer.status_code == 200 and answer.data == BIG
    assert client.get("/big.bin", headers={"Range": "bytes=5-9"}, buffered=True).data == BIG[5:10]
    app.close()


def test_static_settings_are_checked_at_load(site) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"routes": [{"path": "/", "static": {
            "root": str(site / "nothing"), "precompressed": ["lzma"], "index": ["../x"], "fallback": "index.html"}}]})
    text = str(caught.value)
    for key in ("static.root: ", "static.precompressed[0]: expected br", "static.index[0]", "static.fallback"):
        assert f"routes[0].{key}" in text
    with pytest.raises(ConfigError, match="only a route with an upstream has something to cache"):
        config_from_dict({"routes": [{"path": "/", "static": {"root": str(site)}, "cache": True}]})
    assert os.path.isdir(site)
