"""The benchmark runner on tiny cases: rows, files and the CLI (timings are never asserted)."""

import csv
import sys
import types

import pytest
import torch
from cli_helpers import one_line_error

from fastgp.cli import main
from fastgp.perf.bench import (
    CSV_COLUMNS,
    Case,
    gpu_description,
    markdown_table,
    nvml_handle,
    run_matrix,
    visible_device,
    write_outputs,
)
from fastgp.perf.profile import float32_precision


def test_run_matrix_rows_and_outputs(tmp_path):
    precision = float32_precision()
    rows = run_matrix([Case("mlp", 8)], ["reference", "tier1"], repeats=2, warmup=1,
                      device=torch.device("cpu"), progress=False)
    assert [row["path"] for row in rows] == ["reference", "tier1", "nogp"]
    by_path = {row["path"]: row for row in rows}
    assert by_path["nogp"]["gp_overhead"] == 1.0 and by_path["nogp"]["flop_ratio"] == 1.0
    assert by_path["reference"]["speedup_vs_reference"] == 1.0
    assert by_path["reference"]["flop_ratio"] == pytest.approx(2.0, abs=0.05)
    assert all(row["torch_version"] == torch.__version__ for row in rows)
    written = write_outputs(tmp_path, rows)
    assert [p.name for p in written] == ["bench.csv", "bench.md", "bench.png"]
    with open(written[0], newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == CSV_COLUMNS and len(table) == 3
    # Every row names the fp32 precision mode it ran in, which the bench left as it found it.
    assert float32_precision() == precision
    assert all({name: row[name] for name in precision} == {k: str(v) for k, v in precision.items()}
               for row in table)
    markdown = written[1].read_text()
    assert markdown.count("\n| mlp-b8 |") == 3 and "not measurements" in markdown
    assert "TF32" not in markdown  # on the CPU it does not apply
    cuda_rows = [row | {"device": "cuda:0", "device_name": "NVIDIA H100", "tf32_cudnn_conv": True,
                        "tf32_cuda_matmul": False, "float32_matmul_precision": "highest"}
                 for row in rows]
    assert ("Device: NVIDIA H100; TF32: cuDNN conv on, CUDA matmul off (float32 matmul precision "
            "'highest'); torch") in markdown_table(cuda_rows)
    assert written[2].stat().st_size > 1000


def test_bench_quick_command(tmp_path, capsys):
    assert main(["bench", "--quick", "--cases", "mlp-b4,dcgan32-b2", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| dcgan32-b2 | tier1 |" in out
    assert (tmp_path / "bench.png").is_file()


def test_bench_rejects_unknown_cases_and_paths(tmp_path, capsys):
    assert main(["bench", "--cases", "vgg-b4", "--out", str(tmp_path)]) == 2
    assert "bad case 'vgg-b4'" in capsys.readouterr().err
    assert main(["bench", "--cases", "mlp-b4", "--paths", "fast", "--out", str(tmp_path)]) == 2
    assert "unknown paths ['fast']" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--cases", ""], "--cases is empty: expected comma-separated CRITIC-bBATCH cases"),
        (["--cases", " , "], "--cases is empty"),
        (["--paths", ""], "--paths is empty: expected comma-separated paths from reference, "
                          "tier1, tier2"),
        (["--repeats", "0"], "--repeats must be an integer >= 1, got 0"),
        (["--warmup=-1"], "--warmup must be an integer >= 0, got -1"),
    ],
)
def test_bench_refuses_empty_lists_and_counts_in_one_line(arguments, message, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setattr("fastgp.perf.bench.run_case", None)  # never reached
    assert main(["bench", "--out", str(tmp_path / "out"), *arguments]) == 2
    one_line_error(capsys.readouterr().err, "bench", message)
    assert not (tmp_path / "out").exists()


def test_gpu_description_without_gpu_does_not_crash():
    text = gpu_description(torch.device("cpu"))
    assert isinstance(text, str) and text


@pytest.mark.parametrize("out,message", [("", "--out is empty"), ("FILE", "is a file, not a folder")])
def test_bench_checks_its_output_folder_before_timing(tmp_path, capsys, monkeypatch, out, message):
    import fastgp.perf.bench

    def never_run(*args, **kwargs):
        raise AssertionError("the matrix ran before the output folder was checked")

    monkeypatch.setattr(fastgp.perf.bench, "run_matrix", never_run)
    (tmp_path / "FILE").write_text("not a folder")
    out = str(tmp_path / out) if out else out
    assert main(["bench", "--cases", "mlp-b2", "--out", out]) == 2
    one_line_error(capsys.readouterr().err, "bench", message)


class FakeNVML(types.ModuleType):
    """pynvml over four GPUs in PCI bus order; NVML ignores CUDA_VISIBLE_DEVICES."""

    GPUS = [  # (PCI bus id as NVML writes it, UUID, name)
        ("00000000:18:00.0", "GPU-1111aaaa-0000-0000-0000-000000000000", "GPU zero"),
        ("00000000:3B:00.0", "GPU-2222bbbb-0000-0000-0000-000000000000", "GPU one"),
        ("00000000:86:00.0", "GPU-3333cccc-0000-0000-0000-000000000000", "GPU two"),
        ("00000001:AF:00.0", "GPU-3333dddd-0000-0000-0000-000000000000", "GPU three"),
    ]

    class NVMLError(Exception):
        pass

    def __init__(self):
        super().__init__("pynvml")
        self.shutdowns = 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.GPUS)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.GPUS):
            raise self.NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        return self._find(0, bus_id)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return self._find(1, uuid)

    def _find(self, field, key):
        for index, gpu in enumerate(self.GPUS):
            if gpu[field] == key:
                return index
        raise self.NVMLError("Not Found")

    def nvmlDeviceGetUUID(self, handle):
        return self.GPUS[handle][1].encode()  # bytes, as older nvidia-ml-py releases return

    def nvmlDeviceGetName(self, handle):
        return self.GPUS[handle][2]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(total=80 * 2**30)

    def nvmlDeviceGetPowerManagementLimit(self, handle):
        return 700_000


def _properties(nvml_index, pci=True, uuid=True):
    """torch's properties of a device that is NVML's GPU ``nvml_index`` (torch prints the UUID
    without NVML's ``GPU-``)."""
    bus_id, gpu_uuid, _ = FakeNVML.GPUS[nvml_index]
    domain, bus, rest = bus_id.split(":")
    fields = {}
    if pci:
        fields |= {"pci_domain_id": int(domain, 16), "pci_bus_id": int(bus, 16),
                   "pci_device_id": int(rest.split(".")[0], 16)}
    if uuid:
        fields["uuid"] = gpu_uuid.removeprefix("GPU-")
    return types.SimpleNamespace(**fields)


@pytest.fixture
def two_visible_gpus(monkeypatch):
    """torch sees NVML's GPUs 2 and 3 as cuda:0 and cuda:1 (CUDA_VISIBLE_DEVICES=2,3)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    nvml = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)

    def use(**what_torch_knows):
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda index: _properties(2 + index, **what_torch_knows))
        return nvml
    return use


@pytest.mark.parametrize("what_torch_knows", [{}, {"pci": False}, {"pci": False, "uuid": False}],
                         ids=["pci bus id", "uuid", "CUDA_VISIBLE_DEVICES"])
def test_nvml_describes_the_gpu_torch_runs_on_not_nvml_gpu_0(two_visible_gpus, what_torch_knows):
    nvml = two_visible_gpus(**what_torch_knows)
    assert nvml_handle(nvml, torch.device("cuda:0")) == 2
    assert nvml_handle(nvml, torch.device("cuda:1")) == 3
    assert nvml_handle(nvml, torch.device("cuda")) == 2  # the current device
    assert gpu_description(torch.device("cuda:1")) == "GPU three, 80 GiB, power limit 700 W"
    assert nvml.shutdowns == 1


def test_nvml_falls_back_when_it_cannot_find_torchs_ids(two_visible_gpus, monkeypatch):
    nvml = two_visible_gpus()

    def not_found(key):  # as when NVML sees other GPUs than CUDA does
        raise FakeNVML.NVMLError("Not Found")

    monkeypatch.setattr(nvml, "nvmlDeviceGetHandleByPciBusId", not_found)
    monkeypatch.setattr(nvml, "nvmlDeviceGetHandleByUUID", not_found)
    assert nvml_handle(nvml, torch.device("cuda:1")) == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert gpu_description(torch.device("cuda:1")) == (
        "GPU present but NVML query failed: cuda:1 is not among the GPUs of "
        "CUDA_VISIBLE_DEVICES='2'")


def test_nvml_finds_gpus_named_by_uuid_prefixes_in_cuda_visible_devices(two_visible_gpus,
                                                                      monkeypatch):
    nvml = two_visible_gpus(pci=False, uuid=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-2222,GPU-1111aaaa-0000-0000-0000-000000000000")
    assert nvml_handle(nvml, torch.device("cuda:0")) == 1
    assert nvml_handle(nvml, torch.device("cuda:1")) == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-3333")  # GPUs 2 and 3 both match
    with pytest.raises(LookupError, match="2 GPUs have a UUID starting with 'GPU-3333'"):
        nvml_handle(nvml, torch.device("cuda:0"))


@pytest.mark.parametrize(
    "variable, index, expected",
    [
        (None, 1, 1),                     # unset: every GPU is visible, in order
        ("2,3", 0, 2),
        (" 3 , 1", 1, 1),
        ("1a,2", 0, 1),                   # CUDA reads an entry up to its first non-digit
        ("GPU-abc,GPU-def", 1, "GPU-def"),
        ("MIG-abc", 0, "MIG-abc"),
    ],
)
def test_visible_device_reads_cuda_visible_devices_as_cuda_does(variable, index, expected):
    assert visible_device(index, variable) == expected


@pytest.mark.parametrize("variable, index", [("", 0), ("2,-1,3", 1), ("0,x,1", 2), ("4", 1)])
def test_visible_device_stops_at_the_first_invalid_entry(variable, index):
    with pytest.raises(LookupError, match=f"cuda:{index} is not among the GPUs"):
        visible_device(index, variable)
