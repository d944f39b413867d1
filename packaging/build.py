"""Build the single executable: ``python packaging/build.py [--dist DIR]``.

PyInstaller's one-file mode packs the interpreter, simpleproxy, its
dependencies, the shipped configuration (``conf/``), the admin page and the
package metadata into ``dist/simpleproxy`` (``simpleproxy.exe`` on Windows).
It freezes the simpleproxy installed in this environment, so install the
checkout first: ``pip install '.[exe]'`` (the ``exe`` extra brings PyInstaller).
Optional extras installed here (``redis``, ``metrics``) are packed too.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent


def checkout_version() -> str:
    text = (CHECKOUT / "simpleproxy" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match is not None
    return match.group(1)


def pyinstaller_args(dist: Path, work: Path) -> list[str]:
    optional = [name for name in ("redis", "prometheus_client") if importlib.util.find_spec(name) is not None]
    return [
        str(HERE / "launcher.py"),
        "--onefile",
        "--name", "simpleproxy",
        "--distpath", str(dist),
        "--workpath", str(work),
        "--specpath", str(work),
        "--noconfirm",
        "--clean",
        "--log-level", "WARN",
        # conf/ is the package simpleproxy.conf once installed; the admin page is package data
        "--collect-submodules", "simpleproxy",
        "--collect-data", "simpleproxy",
        "--copy-metadata", "simpleproxy",
        *[arg for name in optional for arg in ("--hidden-import", name)],
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", default=str(CHECKOUT / "dist"), help="where the executable goes (default: dist/)")
    args = parser.parse_args(argv)
    try:
        import PyInstaller.__main__ as pyinstaller
    except ImportError:
        print("error: PyInstaller is not installed; run: pip install '.[exe]'", file=sys.stderr)
        return 1
    try:
        installed = importlib.metadata.version("simpleproxy")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != checkout_version():
        print(f"error: this environment has simpleproxy {installed or '(none)'}, the checkout is "
              f"{checkout_version()}; run: pip install '.[exe]'", file=sys.stderr)
        return 1
    direct_url = json.loads(importlib.metadata.distribution("simpleproxy").read_text("direct_url.json") or "{}")
    if direct_url.get("dir_info", {}).get("editable"):
        print("error: an editable install (pip install -e) cannot be frozen; run: pip install '.[exe]'",
              file=sys.stderr)
        return 1
    dist = Path(args.dist).resolve()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="simpleproxy-build-") as work:
        pyinstaller.run(pyinstaller_args(dist, Path(work)))
    binary = dist / ("simpleproxy.exe" if sys.platform == "win32" else "simpleproxy")
    size = binary.stat().st_size / 1024**2
    print(f"built {binary} ({size:.1f} MiB) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
