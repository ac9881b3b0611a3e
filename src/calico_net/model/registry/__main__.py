"""`python -m calico_net.model.registry > docs/compatibility.md`: print the generated
compatibility document."""
import sys

from calico_net.model.registry import compatibility_markdown

sys.stdout.write(compatibility_markdown())
