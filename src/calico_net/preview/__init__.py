"""Preview: what a planned datastore change would do to each node's table inet
calico and bird.cfg, rendered by the agent's and confd's own code (see `core`)."""
from .core import FORMS, NodePreview, ObjectChange, diff_objects, preview, preview_datastore, text_report
from .snapshot import Change, Snapshot, read_snapshot

__all__ = ["FORMS", "Change", "NodePreview", "ObjectChange", "Snapshot", "diff_objects", "preview",
           "preview_datastore", "read_snapshot", "text_report"]
