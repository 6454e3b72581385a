"""The measured-kernel table and the Vidur reader, against the data's README and hand-computed bytes."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from kernels.measured import MeasuredKernel, read_table, write_table
from kernels.vidur_import import stream_bytes
from tests.kernels import measured_tables
from workloads.errors import InputError

VIDUR = Path(__file__).resolve().parents[3] / "shared" / "data" / "vidur"
needs_vidur = pytest.mark.skipif(not VIDUR.is_dir(), reason="../shared/data/vidur is not beside the checkout")


@pytest.fixture(scope="module")
def vidur_rows() -> tuple[MeasuredKernel, ...]:
    return measured_tables.vidur_rows()


@needs_vidur
def test_vidur_gemm_counts_match_the_data_readme(vidur_rows):
    # ../shared/data/README.md: 80,364 GEMM rows: A100 36,516, H100 21,924, A40 21,924.
    counts = Counter(r.device for r in vidur_rows if r.kernel == "gemm")
    assert counts == {"a100-sxm-80gb": 36516, "h100-sxm": 21924, "a40": 21924}


@needs_vidur
def test_vidur_first_gemm_row_by_hand(vidur_rows):
    # gemm_points.csv.gz line 2: a100, Qwen/Qwen-72B, tp 1, attn_pre_proj, m 4096, k 8192, n 24576, 7.306 ms.
    first = vidur_rows[0]
    assert (first.device, first.m, first.k, first.n) == ("a100-sxm-80gb", 4096, 8192, 24576)
    assert first.time_s == pytest.approx(7.306e-3)
    assert first.source == "vidur:Qwen/Qwen-72B"


def test_streaming_bytes_by_hand():
    shape = {"num_tokens": 4096, "n_embd": 4096, "n_head": 32, "n_kv_head": 8, "n_expanded_embd": 14336,
             "use_gated_mlp": True, "num_tensor_parallel_workers": 2}
    assert stream_bytes("add", shape) == ("elementwise", 3 * 4096 * 4096 * 2)  # 100,663,296 B
    assert stream_bytes("input_layernorm", shape) == ("norm", 2 * 4096 * 4096 * 2)
    # SiLU-and-mul over F / TP = 7168 columns: reads gate and up, writes one.
    assert stream_bytes("mlp_act", shape) == ("activation", 3 * 4096 * 7168 * 2)
    # RoPE on (32 + 8) / 2 heads of 128, read and written.
    assert stream_bytes("attn_rope", shape) == ("rope", 2 * 4096 * 20 * 128 * 2)
    assert stream_bytes("emb", shape) is None  # vocab-parallel under TP: not one gather


def test_table_round_trip_and_deterministic_gzip(tmp_path):
    rows = [MeasuredKernel(device="h100-sxm", kernel="gemm", dtype="fp16", time_s=1.5e-5, source="t", m=8, n=16,
                           k=32),
            MeasuredKernel(device="h100-sxm", kernel="norm", dtype="bf16", time_s=3e-6, source="t", bytes=4096.0)]
    a, b = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    write_table(a, rows)
    write_table(b, rows)
    assert read_table(a) == rows
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz"])
def test_a_table_rewrite_killed_midway_leaves_the_table_it_had(tmp_path, monkeypatch, name):
    """`explore measure` and the importers write their table at the end of minutes of work: one killed while writing
    it leaves the earlier table whole (or none), never a table cut short that calibrate or validate would read."""
    import csv

    kernel = MeasuredKernel(device="h100-sxm", kernel="gemm", dtype="fp16", time_s=1.5e-5, source="t", m=8, n=16,
                            k=32)
    path = tmp_path / name
    before = [kernel, replace(kernel, m=16)]
    write_table(path, before)
    writerow = csv.DictWriter.writerow
    calls = []

    def killed_after_one_row(writer, row):
        calls.append(row)
        if len(calls) > 2:  # the header and one row written
            raise KeyboardInterrupt  # the kill: nothing after it runs
        return writerow(writer, row)

    monkeypatch.setattr(csv.DictWriter, "writerow", killed_after_one_row)
    with pytest.raises(KeyboardInterrupt):
        write_table(path, [replace(kernel, m=m) for m in (32, 64, 128)])
    monkeypatch.undo()
    assert read_table(path) == before
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left beside it


def test_a_last_row_cut_short_is_left_out_and_a_short_row_ended_by_its_line_end_is_read(tmp_path, caplog):
    """A table copied or written by a writer killed inside its last row: cut in its time_s cell (1.4128 of
    1.4128e-05 s, with its source and timing cells lost) it read as a row 100,000x slow. write_table ends every
    line, so a file not ending in a line end ends inside a cut row: that row is left out, with a warning."""
    header = "device,kernel,m,n,k,dtype,time_s,source,timing\r\n"
    whole = "h100-sxm,gemm,8,16,32,fp16,1.5e-05,t,kernel\r\n"
    path = tmp_path / "t.csv"
    path.write_text(header + whole + "h100-sxm,gemm,16,16,32,fp16,1.4128", newline="")
    assert [(r.m, r.time_s) for r in read_table(path)] == [(8, 1.5e-05)]
    assert caplog.messages == [f"{path}:3: left out: the file ends inside this row (no line end after it), a write "
                               f"cut short; the command that wrote it, run again, writes it again"]
    # Ended by its line end, a row without its optional trailing cells (source, timing) is whole.
    path.write_text(header + whole + "h100-sxm,gemm,16,16,32,fp16,1.4128\r\n", newline="")
    assert [(r.m, r.time_s, r.timing) for r in read_table(path)] == [(8, 1.5e-05, "kernel"), (16, 1.4128, "kernel")]


def test_decode_step_rows_round_trip_with_a_model_column_kernels_alone_without(tmp_path):
    kernel = MeasuredKernel(device="h100-sxm", kernel="gemm", dtype="fp16", time_s=1.5e-5, source="t", m=8, n=16, k=32)
    step = MeasuredKernel(device="h100-sxm", kernel="decode_step", dtype="bf16", time_s=0.012, source="t", batch=1,
                          kv_len=2049, model="llama-3-8b")
    both, alone = tmp_path / "both.csv", tmp_path / "alone.csv"
    write_table(both, [kernel, step])
    write_table(alone, [kernel])
    assert read_table(both) == [kernel, step] and read_table(alone) == [kernel]
    assert both.read_text().splitlines()[0].endswith(",source,model")
    assert alone.read_text().splitlines()[0].endswith(",time_s,source")  # the columns of DESIGN.md, no more
    assert step.is_step and not kernel.is_step
    with pytest.raises(ValueError, match="whole step"):
        step.to_kernel()


@pytest.mark.parametrize("line,message", [
    ("h100-sxm,decode_step,,,,1,,,,,,,bf16,0.01,x,llama-3-8b", "decode_step: model, batch and kv_len"),
    ("h100-sxm,decode_step,,,,1,,513,,,,,bf16,0.01,x,", "decode_step: model, batch and kv_len"),
    ("h100-sxm,gemm,1,2,3,,,,,,,,fp16,-1,x,", "time_s: found -1.0"),
    ("h100-sxm,conv,1,2,3,,,,,,,,fp16,1e-5,x,", "kernel: found 'conv'"),
    ("h100-sxm,gemm,1,2,3,,,,,,,,fp12,1e-5,x,", "dtype: found 'fp12', allowed: fp64"),
    ("h100-sxm,gemm,1,2,3,,,,,,,,w7a16,1e-5,x,", "dtype: weight_bits: found 7"),
    ("h100-sxm,gemm,one,2,3,,,,,,,,fp16,1e-5,x,", "m: found 'one'"),
    # Values validate used to score and calibrate to fit (issue 17): each refused with its column.
    ("h100-sxm,gemm,-5,2,3,,,,,,,,fp16,1e-5,x,", "m: found -5, allowed: a whole number from 0 to 16,777,216"),
    ("h100-sxm,gemm,0,2,3,,,,,,,,fp16,1e-5,x,", "m: found m 0, n 2, k 3, allowed: at least 1 in each of m, n, k"),
    ("h100-sxm,gemm,,2,3,,,,,,,,fp16,1e-5,x,", "m: found m \\(empty cell\\), n 2, k 3"),
    ("h100-sxm,gemm,1.7,2,3,,,,,,,,fp16,1e-5,x,", "m: found 1.7, allowed: a whole number"),
    ("h100-sxm,gemm,1e30,2,3,,,,,,,,fp16,1e-5,x,", "m: found 1e\\+30, allowed: a whole number"),
    ("h100-sxm,gemm,inf,2,3,,,,,,,,fp16,1e-5,x,", "m: found inf, allowed: a whole number"),
    ("h100-sxm,norm,,,,,,,,,,NaN,fp16,1e-5,x,", "bytes: found nan, allowed: a number of bytes from 0 to 1e\\+13"),
    ("h100-sxm,norm,,,,,,,,,,,fp16,1e-5,x,",
     "bytes: found bytes \\(empty cell\\), allowed: at least 1 in each of bytes"),
    ("h100-sxm,attention_decode,,,,0,0,0,0,0,0,,fp16,1e-5,x,",
     "batch, heads, kv_heads, kv_len, head_dim: found batch 0, heads 0"),
    ("h100-sxm,attention_prefill,,,,1,128,128,32,0,128,,fp16,1e-5,x,", "kv_heads: found batch 1, heads 32, kv_heads 0"),
    ("h100-sxm,gemm,16,16,16,,,,,,,,fp16,1e-30,x,", "time_s: found 1e-30, allowed: 1e-09 to 86,400 seconds"),
    ("h100-sxm,gemm,16,16,16,,,,,,,,fp16,nan,x,", "time_s: found nan"),
    ("h100-sxm,decode_step,,,,1000000000000000,,513,,,,,bf16,0.01,x,llama-3-8b", "batch: found 1e\\+15"),
    # A whole run decodes kv_len - seq_len tokens a sequence: none decoded is no run.
    ("h100-sxm,batch_run,,,,8,1024,1024,,,,,bf16,10,x,llama-3-8b", "kv_len: found 1024 with seq_len 1024"),
    ("h100-sxm,batch_run,,,,8,,1536,,,,,bf16,10,x,llama-3-8b", "batch_run: model, batch and seq_len"),
    ("h100-sxm,batch_run,,,,8,1024,1536,,,,,fp8,10,x,llama-3-8b,block128",
     "variant: found 'block128' for an fp8 batch_run"),
])
def test_bad_rows_name_file_line_and_key(tmp_path, line, message):
    path = tmp_path / "t.csv"
    path.write_text("device,kernel,m,n,k,batch,seq_len,kv_len,heads,kv_heads,head_dim,bytes,dtype,time_s,source,"
                    "model,variant\n" + line + "\n")
    with pytest.raises(InputError, match=message) as err:
        read_table(path)
    assert str(err.value).startswith(f"{path}:2: ")


def test_batch_run_rows_round_trip_with_their_devices_and_a_table_without_keeps_its_columns(tmp_path):
    run = MeasuredKernel(device="a100-sxm-80gb", kernel="batch_run", dtype="fp16", time_s=12.5, source="t", batch=16,
                         seq_len=128, kv_len=256, model="llama-2-70b", timing="engine", tp=4)
    both, alone = tmp_path / "both.csv", tmp_path / "alone.csv"
    write_table(both, [run, replace(run, tp=0)])
    write_table(alone, [replace(run, tp=0)])
    assert read_table(both) == [run, replace(run, tp=0)] and read_table(alone) == [replace(run, tp=0)]
    assert "tp" in both.read_text().splitlines()[0].split(",")
    assert "tp" not in alone.read_text().splitlines()[0].split(",")


def test_a_batch_run_names_how_its_all_reduces_ran(tmp_path):
    """`backend` of a batch_run: nccl (or empty) or custom; anything else is the one-line error naming the key."""
    header = "device,kernel,batch,seq_len,kv_len,dtype,time_s,source,model,timing,backend,tp\n"
    path = tmp_path / "t.csv"
    path.write_text(header + "a100-sxm-80gb,batch_run,1,5,205,bf16,0.6,x,llama-2-7b,engine,custom,8\n"
                    "a100-sxm-80gb,batch_run,1,5,205,bf16,0.6,x,llama-2-7b,engine,,8\n")
    assert [row.backend for row in read_table(path)] == ["custom", ""]
    path.write_text(header + "a100-sxm-80gb,batch_run,1,5,205,bf16,0.6,x,llama-2-7b,engine,mpi,8\n")
    with pytest.raises(InputError, match="backend: found 'mpi' for a batch_run, allowed: nccl, custom") as err:
        read_table(path)
    assert str(err.value).startswith(f"{path}:2: ") and "\n" not in str(err.value)


def test_a_weight_quantized_gemm_row_moves_its_weights_at_their_width():
    row = MeasuredKernel(device="h100-sxm", kernel="gemm", dtype="w4a16", time_s=1e-5, source="t", m=16, n=4096,
                         k=4096)
    kernel = row.to_kernel()
    # Hand: 4096 x 4096 weights at 4 bits plus one 16-bit scale per 128 = 4.125 bits; fp16 input and output.
    assert kernel.weight_bytes == 4096 * 4096 * 4.125 / 8
    assert kernel.act_bytes == (16 * 4096 + 16 * 4096) * 2
    assert kernel.dtype == "fp16" and kernel.flops == 2 * 16 * 4096 * 4096


def test_a_header_only_table_has_no_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("device,kernel,m,n,k,dtype,time_s,source\n")
    with pytest.raises(InputError, match="no rows"):
        read_table(path)


def test_rows_of_every_shipped_kind_pass_the_limits(tmp_path):
    """The extremes of the imported Vidur and aiconfigurator tables (kv_len 131,072, a 5.6 GB activation, a 1 us
    kernel) stay within the row limits."""
    rows = [MeasuredKernel(device="h100-sxm", kernel="attention_decode", dtype="fp16", time_s=7e-3, source="t",
                           batch=2048, seq_len=1, kv_len=131072, heads=96, kv_heads=96, head_dim=512),
            MeasuredKernel(device="h100-sxm", kernel="activation", dtype="bf16", time_s=1e-6, source="t",
                           bytes=5637144576.0),
            MeasuredKernel(device="h100-sxm", kernel="gemm", dtype="fp16", time_s=1.01, source="t", m=32768, n=65536,
                           k=65536)]
    path = tmp_path / "t.csv"
    write_table(path, rows)
    assert read_table(path) == rows
