"""The machine line every results file opens with: what it reads from /proc/cpuinfo and the
idle settings of a virtual machine, and how it reads with files written before those fields."""

from __future__ import annotations

from bench import stats

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni hypervisor

processor\t: 1
model name\t: something else
"""


def test_cpu_facts_come_from_the_first_processor_block() -> None:
    facts = stats.cpu_facts(CPUINFO)

    assert facts == {
        "cpu_model": "AMD EPYC",
        "cpu_family": "25",
        "cpu_features": ["avx2", "avx512f", "avx512_vnni"],
        "virtual_machine": True,
    }


def test_cpu_facts_of_an_unreadable_cpuinfo_are_empty() -> None:
    assert stats.cpu_facts("") == {"cpu_model": "", "cpu_family": "", "cpu_features": [], "virtual_machine": False}


def test_the_description_names_family_features_and_how_a_vm_idles() -> None:
    snapshot = {
        **stats.cpu_facts(CPUINFO),
        "idle": {"cpuidle_driver": "haltpoll", "guest_halt_poll_ns": "0"},
    }

    described = stats.cpu_description(snapshot)

    assert described == "AMD EPYC, family 25, avx2 avx512f avx512_vnni; a VM, cpuidle haltpoll, halt polling 0 ns"


def test_a_snapshot_written_before_these_fields_gives_the_model_alone() -> None:
    old = {"time": "2026-11-26T14:19:00Z", "cpus": 2, "cpu_model": "AMD EPYC", "load_average": [0.5, 0.4, 0.3]}

    sentence = stats.machine_sentence({"machine_start": old, "machine_end": old})

    assert "2 CPUs (AMD EPYC)," in sentence


def test_the_snapshot_of_this_machine_has_every_field() -> None:
    snapshot = stats.machine()

    assert {"time", "cpus", "cpu_model", "cpu_family", "cpu_features", "virtual_machine", "idle"} <= snapshot.keys()
    assert isinstance(snapshot["idle"], dict)
