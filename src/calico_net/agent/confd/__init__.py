"""confd: BIRD 2 configuration from the datastore, and BIRD's control socket.

Pure parts, no datastore access: :mod:`.values` reads datastore values by the model's
rules, :mod:`.builder` decides the configuration into :mod:`.birdmodel`'s data,
:mod:`.render` prints it through :mod:`.birdtext`, :mod:`.install` checks it with
``bird -p`` and swaps it in, :mod:`.birdctl` talks to BIRD's control socket. The live
parts: :mod:`.settings`, :mod:`.index` (the datastore view), :mod:`.watcher` (etcd),
:mod:`.status` (metrics and status) and :mod:`.runner` (the render loop).
"""

from __future__ import annotations

from calico_net.agent.confd.birdctl import (
    BGPSession,
    BirdCtlError,
    ConfigureResult,
    Protocol,
    bgp_sessions,
    configure,
    peer_type,
    show_protocols,
)
from calico_net.agent.confd.render import (
    BFD_ANNOTATION,
    BirdConfigError,
    BirdModel,
    RenderError,
    RenderOptions,
    build_bird_model,
    render_bird_config,
    validate_bird_config,
    write_if_changed,
)

__all__ = [
    "BFD_ANNOTATION",
    "BGPSession",
    "BirdConfigError",
    "BirdCtlError",
    "BirdModel",
    "ConfigureResult",
    "Protocol",
    "RenderError",
    "RenderOptions",
    "bgp_sessions",
    "build_bird_model",
    "configure",
    "peer_type",
    "render_bird_config",
    "show_protocols",
    "validate_bird_config",
    "write_if_changed",
]
