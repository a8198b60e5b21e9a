"""The benchmark runner on tiny cases: rows, files and the CLI (timings are never asserted)."""

import csv

import pytest
import torch
from cli_helpers import one_line_error

from fastgp.bench import (
    CSV_COLUMNS,
    Case,
    gpu_description,
    markdown_table,
    run_matrix,
    write_outputs,
)
from fastgp.cli import main
from fastgp.profile import float32_precision


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
    monkeypatch.setattr("fastgp.bench.run_case", None)  # never reached
    assert main(["bench", "--out", str(tmp_path / "out"), *arguments]) == 2
    one_line_error(capsys.readouterr().err, "bench", message)
    assert not (tmp_path / "out").exists()


def test_gpu_description_without_gpu_does_not_crash():
    text = gpu_description(torch.device("cpu"))
    assert isinstance(text, str) and text


@pytest.mark.parametrize("out,message", [("", "--out is empty"), ("FILE", "is a file, not a folder")])
def test_bench_checks_its_output_folder_before_timing(tmp_path, capsys, monkeypatch, out, message):
    import fastgp.bench

    def never_run(*args, **kwargs):
        raise AssertionError("the matrix ran before the output folder was checked")

    monkeypatch.setattr(fastgp.bench, "run_matrix", never_run)
    (tmp_path / "FILE").write_text("not a folder")
    out = str(tmp_path / out) if out else out
    assert main(["bench", "--cases", "mlp-b2", "--out", out]) == 2
    one_line_error(capsys.readouterr().err, "bench", message)

