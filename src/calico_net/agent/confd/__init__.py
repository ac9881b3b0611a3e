"""confd: BIRD 2 configuration from the datastore, and BIRD's control socket.

Pure parts (no datastore access): :mod:`.render` builds ``bird.cfg`` from Calico v3
resources given as dicts, validates it with ``bird -p`` and installs it atomically;
:mod:`.birdctl` talks to BIRD's control socket (``configure``, ``show protocols``).
The watcher that feeds render from etcd lives beside them.
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
