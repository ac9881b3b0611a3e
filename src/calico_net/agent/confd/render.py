"""Printing bird.cfg: :func:`render_bird_config` builds the model
(:func:`.builder.build_bird_model`) and prints it through the Jinja2 template
``templates/bird.cfg.j2`` (:func:`render_model`), which only prints: every value
reaches the text through one function of :mod:`.birdtext`, and the template's
``finalize`` refuses any value that did not. The names callers use from the renderer
(options, model, errors, validation and install) are importable from here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2

from calico_net.agent.confd import birdtext
from calico_net.agent.confd.birdmodel import (
    LOG_CLASSES,
    BFD_ANNOTATION,
    BirdModel,
    RenderError,
    RenderOptions,
    protocol_name,
)
from calico_net.agent.confd.birdtext import BirdTextError
from calico_net.agent.confd.builder import build_bird_model
from calico_net.agent.confd.install import BirdConfigError, validate_bird_config, write_if_changed

TEMPLATE_DIR = Path(__file__).parent / "templates"

__all__ = [
    "BFD_ANNOTATION", "TEMPLATE_DIR", "BirdConfigError", "BirdModel", "RenderError",
    "RenderOptions", "build_bird_model", "protocol_name", "render_bird_config", "render_model",
    "validate_bird_config", "write_if_changed",
]

_env: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _env
    if _env is None:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            autoescape=False,
            # Only ints and birdtext.BirdText may be printed: a raw string is an error.
            finalize=birdtext.finalize,
        )
        env.filters.update({
            "comment": birdtext.bird_comment,
            "quoted": lambda v: birdtext.bird_str(v, "description"),
            "password": birdtext.bird_password,
            "ident": lambda v: birdtext.bird_ident(v, "protocol name"),
            "ip": birdtext.bird_ip,
            "ip4": lambda v: birdtext.bird_ip(v, "IPv4 address", family=4),
            "prefix": birdtext.bird_prefix,
            "prefix_pattern": birdtext.bird_prefix_pattern,
            "iface": birdtext.bird_iface_pattern,
            "log_target": birdtext.bird_log_target,
            "log_classes": lambda v: birdtext.bird_keyword(v, LOG_CLASSES.values(), "log classes"),
            "debug_protocols": lambda v: birdtext.bird_keyword(v, ("all", "{ states }"), "debug"),
        })
        _env = env
    return _env


def render_model(model: BirdModel, template: str = "bird.cfg.j2") -> str:
    """Print a :class:`BirdModel` through the Jinja2 template."""
    text = _environment().get_template(template).render(m=model)
    # Collapse runs of blank lines the template's conditionals leave behind.
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def render_bird_config(*resources: Any, rejected: list[str] | None = None, **options: Any) -> str:
    """BIRD 2 configuration text for one node. Raises :class:`RenderError` when
    this node's own resources make a configuration impossible; problems with other
    nodes or peers only drop those sessions (noted as comments in the output). When
    ``rejected`` is a list, the notes on objects skipped for an invalid value are
    appended to it (see :attr:`BirdModel.rejected`). The other arguments are
    :func:`~.builder.build_bird_model`'s: ``node_name, nodes, bgp_configs, peers,
    pools, affine_blocks``, and the keywords ``passwords`` and ``options``."""
    model = build_bird_model(*resources, **options)
    try:
        text = render_model(model)
    except BirdTextError as exc:
        # A value the builder let through and a filter refused: nothing is written.
        raise RenderError(f"refusing to write bird.cfg: {exc}") from None
    if rejected is not None:
        rejected.extend(model.rejected)
    return text
