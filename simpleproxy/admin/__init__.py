"""The admin listener: health, readiness, metrics, the active configuration, reload, purge, a status page."""

from .app import AdminApp

__all__ = ["AdminApp"]
