"""Repository URL -> backend, importing a backend module only when it is used.

Built-in schemes map to modules of this package; third-party packages add a
scheme through the ``walship.backends`` entry-point group, whose value is a
callable ``factory(url: str, config: Config) -> Backend``. Entry points are
only consulted for schemes walship does not know itself (looking them up costs
an import of importlib.metadata).
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config import Config
    from .base import Backend

ENTRY_POINT_GROUP = "walship.backends"

#: scheme -> "module:factory" (relative to this package)
BUILTIN: dict[str, str] = {
    "file": "local:open_backend",
    "mem": "memory:open_backend",
    "s3": "s3:open_backend",
    "gs": "gcs:open_backend",
    "az": "azure:open_backend",
}

#: extra needed for a built-in scheme's SDK
EXTRAS = {"s3": "s3", "gs": "gcs", "az": "azure"}


def scheme_of(url: str) -> str:
    head, sep, _ = url.partition("://")
    if not sep:
        return "file"
    return head.lower()


def open_backend(url: str, config: Config) -> Backend:
    """Open the backend for ``url`` (see :data:`BUILTIN`)."""
    scheme = scheme_of(url)
    target = BUILTIN.get(scheme)
    if target is not None:
        module_name, _, func_name = target.partition(":")
        try:
            module = importlib.import_module(f"{__package__}.{module_name}")
        except ImportError as exc:
            extra = EXTRAS.get(scheme, scheme)
            raise ConfigError(
                f"repository {url!r} needs the {scheme}:// backend, which cannot be imported "
                f"({exc})",
                hint=f"install it with: pip install 'walship[{extra}]'",
            ) from None
        factory = getattr(module, func_name)
    else:
        factory = _entry_point(scheme, url)
    backend: Backend = factory(url, config)
    return backend


def warm(url: str) -> None:
    """Import the module of a built-in backend for ``url`` without opening anything.

    (Written for the walship agent, since removed) so that its requests find the
    SDK loaded. Import errors are left for the request to report.
    """
    target = BUILTIN.get(scheme_of(url))
    if target is not None:
        warm_module(f"{__package__}.{target.partition(':')[0]}")


def warm_module(name: str) -> None:
    """Import a backend module and run its ``warm()`` if it has one (parsing
    what its SDK would parse per client). Errors are left to requests."""
    try:
        module = importlib.import_module(name)
        warm_up = getattr(module, "warm", None)
        if warm_up is not None:
            warm_up()
    except Exception:  # a warm-up only
        pass


def _entry_point(scheme: str, url: str) -> object:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == scheme:
            return ep.load()
    known = ", ".join(f"{s}://" for s in sorted(BUILTIN))
    raise ConfigError(
        f"repository {url!r} uses unknown scheme {scheme!r}",
        hint=f"use a directory path or one of {known} (or install a backend plugin)",
    )
