"""mtm.device: "auto" precision is bf16 on CUDA and fp32 on every CPU (the same numbers on every
machine); bf16 asked for on a CPU without AVX512-BF16 or AMX is kept with a warning; the CPU
detection reads what it can and says no where it cannot tell."""

import pytest
import torch

from mtm import device as mtm_device
from mtm.device import cpu_has_fast_bf16, resolve_device, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda")

# the flags lines of two x86 CPUs: an Ice Lake Xeon (AVX-512 without bf16) and a Sapphire Rapids
ICE_LAKE = "fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni avx512_bitalg"
SAPPHIRE_RAPIDS = ICE_LAKE + " avx512_bf16 amx_bf16 amx_tile amx_int8"


def cpuinfo(tmp_path, flags: str | None):
    path = tmp_path / "cpuinfo"
    lines = ["processor\t: 0", "model name\t: a CPU"] + ([f"flags\t\t: {flags}"] if flags is not None else [])
    path.write_text("\n".join(lines * 2) + "\n")
    return path


@pytest.fixture
def torch_cannot_tell(monkeypatch):
    """torch's own detection unavailable (an older torch, another architecture)."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)


@pytest.mark.parametrize("fast", [False, True])
def test_auto_is_fp32_on_every_cpu_and_bf16_on_cuda(monkeypatch, fast):
    monkeypatch.setattr(mtm_device, "cpu_has_fast_bf16", lambda *args: fast)
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("auto", CUDA) == "bf16"
    assert resolve_precision("fp32", CUDA) == "fp32"
    assert resolve_precision("auto", torch.device("meta")) == "fp32"  # neither CPU nor CUDA


def test_bf16_asked_for_on_a_cpu_is_kept_with_a_warning_where_it_is_emulated(monkeypatch, caplog):
    monkeypatch.setattr(mtm_device, "cpu_has_fast_bf16", lambda *args: False)
    assert resolve_precision("bf16", CPU) == "bf16"
    assert "emulated" in caplog.text
    caplog.clear()
    monkeypatch.setattr(mtm_device, "cpu_has_fast_bf16", lambda *args: True)
    assert resolve_precision("bf16", CPU) == "bf16" and not caplog.text


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16", CPU)


def test_cpuinfo_flags_decide_when_torch_cannot(tmp_path, torch_cannot_tell):
    assert not cpu_has_fast_bf16(cpuinfo(tmp_path, ICE_LAKE))  # AVX-512 alone is not enough
    assert cpu_has_fast_bf16(cpuinfo(tmp_path, SAPPHIRE_RAPIDS))
    assert cpu_has_fast_bf16(cpuinfo(tmp_path, ICE_LAKE + " avx512_bf16"))  # e.g. Zen 4, Cooper Lake
    assert cpu_has_fast_bf16(cpuinfo(tmp_path, ICE_LAKE + " amx_tile"))


def test_unknown_cpus_have_no_fast_bf16(tmp_path, torch_cannot_tell):
    assert not cpu_has_fast_bf16(tmp_path / "missing")  # macOS, Windows: no /proc/cpuinfo
    assert not cpu_has_fast_bf16(cpuinfo(tmp_path, None))  # ARM: "Features", no "flags"
    arm = cpuinfo(tmp_path, None)
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm sve\n")
    assert not cpu_has_fast_bf16(arm)


def test_torch_detection_counts(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_has_fast_bf16(cpuinfo(tmp_path, ICE_LAKE))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: 1 / 0, raising=False)  # broken: ignored
    assert not cpu_has_fast_bf16(cpuinfo(tmp_path, ICE_LAKE))


def test_this_machine_gets_an_answer():
    """On whatever machine runs the tests, the detection answers without raising."""
    assert isinstance(cpu_has_fast_bf16(), bool)


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
