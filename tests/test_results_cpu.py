"""The CPU description that benchmark headers and evaluation records carry."""

from __future__ import annotations

import os

from agents.results import cpu_description


def test_cpu_description_reads_model_name_and_bf16_units(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some Vendor CPU 9000\n"
        "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16\n\n"
        "processor\t: 1\nmodel name\t: Some Vendor CPU 9000\nflags\t\t: fpu\n"
    )
    assert cpu_description(info) == f"Some Vendor CPU 9000, {os.cpu_count()} CPUs, avx512_bf16 amx_bf16"


def test_cpu_description_without_bf16_units_or_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Plain CPU\nflags\t\t: fpu sse2 avx2\n")
    assert cpu_description(info) == f"Plain CPU, {os.cpu_count()} CPUs"
    missing = cpu_description(tmp_path / "absent")
    assert missing.endswith(f", {os.cpu_count()} CPUs") and not missing.startswith(",")
