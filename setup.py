# Metadata and dependencies live in setup.cfg; this shim lets older tools run `setup.py`.
from setuptools import setup

setup()
