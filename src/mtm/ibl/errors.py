"""Errors that name the session, the file and what is wrong."""


class FetchError(RuntimeError):
    """ONE or the IBL server cannot deliver a session (configuration, network, missing session)."""


class SessionDataError(RuntimeError):
    """A session file is missing, truncated or inconsistent."""

    def __init__(self, eid: str, rel_path: str, problem: str):
        self.eid, self.rel_path, self.problem = eid, rel_path, problem
        super().__init__(f"session {eid}: {rel_path}: {problem}")
