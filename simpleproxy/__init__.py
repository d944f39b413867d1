"""simpleproxy: a reverse proxy for simple deployments, as a WSGI application on waitress.

Public API::

    from simpleproxy import load_config, make_app, ProxyApp, ProxyMiddleware
    app = make_app("simpleproxy.yaml")      # a WSGI application
    app = ProxyMiddleware(flask_app.wsgi_app, "proxy.yaml")  # its routes proxied, the rest to Flask

For WSGI servers, ``simpleproxy.wsgi:application`` reads ``SIMPLEPROXY_CONFIG``.
"""

from __future__ import annotations

from pathlib import Path

from .app import ProxyApp
from .config import Config, config_from_dict, load_config, parse_config
from .errors import ConfigError
from .wsgi import ProxyMiddleware

__version__ = "0.1.0"
__all__ = [
    "Config", "ConfigError", "ProxyApp", "ProxyMiddleware", "__version__", "config_from_dict", "load_config",
    "make_app", "parse_config",
]


def make_app(config: Config | str | Path) -> ProxyApp:
    """A WSGI application from a :class:`Config` or the path of a YAML file."""
    return ProxyApp(config if isinstance(config, Config) else load_config(config))

