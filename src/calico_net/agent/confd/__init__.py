"""confd: BIRD 2 configuration from the datastore, and BIRD's control socket.

Pure parts, no datastore access: :mod:`.values` reads datastore values by the model's
rules, :mod:`.builder` decides the configuration into :mod:`.birdmodel`'s data,
:mod:`.render` prints it through :mod:`.birdtext`, :mod:`.install` checks it with
``bird -p`` and swaps it in, :mod:`.birdctl` talks to BIRD's control socket. The live
parts: :mod:`.settings`, :mod:`.index` (the datastore view), :mod:`.watcher` (etcd),
:mod:`.status` (metrics and status) and :mod:`.runner` (the render loop).

The package imports nothing itself, so a caller that needs only the control socket
(the `bgp_status_info` module, `calicoctl node status`) does not load Jinja2.
"""
