"""Synthetic IBL sessions written as a local ONE cache in IBL's ALF layout, with their true rates.

`build_demo_cache` writes the whole demo; `write_demo_session` one session (then call
`mtm.ibl.one_cache.write_one_tables`); `demo_sessions` says which real sessions are imitated.
"""

from mtm.demo.build import build_demo_cache, write_demo_session
from mtm.demo.sessions import DemoSession, demo_sessions

__all__ = ["DemoSession", "build_demo_cache", "demo_sessions", "write_demo_session"]
