"""Offline stand-in for ansible-test's pip bootstrap script.

ansible-test creates a virtual environment per sanity test and bootstraps pip in it with
a script it downloads from ci-files.testing.ansible.com, which these machines cannot
reach (PyPI itself is reachable). test_modules_sanity.py puts this file where
ansible-test caches that script (~/.ansible/test/cache/get_pip_<version>.py). It
installs the pip bundled with Python (ensurepip), then lets that pip install what
ansible-test asked for (pip==<version>, setuptools, wheel) with the machine's own pip
configuration (index, CA bundle), which ensurepip would otherwise switch off.
"""
import ensurepip
import os
import subprocess
import sys

env = dict(os.environ)  # ensurepip sets PIP_CONFIG_FILE=/dev/null in os.environ
ensurepip.bootstrap(upgrade=True)
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + sys.argv[1:], env=env))
