import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """ONE writes ~/.one and ~/Downloads/ONE: keep every test away from the real home."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("ALYX_LOGIN", "ALYX_PWD", "ALYX_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    from one.api import ONE

    ONE.cache_clear()
    yield home
