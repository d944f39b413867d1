"""simpleproxy: a reverse proxy for simple deployments (waitress + werkzeug + urllib3)."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "simpleproxy" / "__init__.py").read_text()).group(1)

setup(
    name="simpleproxy",
    version=VERSION,
    description="A reverse proxy for simple deployments: one pip install, one YAML file.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=[*find_packages(include=["simpleproxy", "simpleproxy.*"]), "simpleproxy.conf"],
    # The shipped configuration lives in conf/ at the top of the repository and is
    # installed as the package data of simpleproxy.conf.
    package_dir={"simpleproxy.conf": "conf"},
    package_data={"simpleproxy.conf": ["*.yaml", "examples/*.yaml"], "simpleproxy.admin": ["*.html"]},
    install_requires=[
        "urllib3>=2.0,<3",  # pool internals (_get_conn/_put_conn) are used; see upstream/pool.py
        "werkzeug>=3.0,<4",  # the admin app, HTTP dates, the test client (README: Architecture)
        "waitress>=3.0.2,<3.1",  # internals are used: simpleproxy/frontend/contract.py (TESTED)
        "pyyaml>=6.0",
    ],
    extras_require={
        # /metrics on the admin listener writes the Prometheus format with prometheus_client
        "metrics": ["prometheus_client>=0.17"],
        # rate_limit.store: redis://... shares the buckets between instances and worker processes
        "redis": ["redis>=5.0"],
        # basic_auth checks bcrypt hashes; simpleproxy hash-password makes them
        "auth": ["bcrypt>=4.1"],
        # compress: brotli and zstd beside the standard library's gzip
        "compress": ["brotli>=1.1", "zstandard>=0.22"],
        # the single executable: python packaging/build.py
        "exe": ["pyinstaller>=6.0"],
        "test": [
            "pytest>=7.4", "pytest-timeout>=2.1", "trustme>=1.0", "prometheus_client>=0.17", "redis>=5.0", "bcrypt>=4.1",
            "brotli>=1.1", "zstandard>=0.22",
            # the WSGI hosts, the executable and the packages the tests build and run
            "gunicorn>=22.0; sys_platform != 'win32'", "PasteDeploy>=3.0", "pyinstaller>=6.0", "build>=1.0",
            "mypy>=1.10",
        ],
    },
    entry_points={
        "console_scripts": ["simpleproxy = simpleproxy.cli:main"],
        "paste.app_factory": ["main = simpleproxy.wsgi:paste_app_factory"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: OS Independent",
        "Topic :: Internet :: Proxy Servers",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Application",
    ],
)
