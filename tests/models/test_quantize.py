"""int8 quantization: embedding tables get one scale per row, MatMuls stay per channel; real ORT sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from newswatch.models.quantize import quantize_embedding_rows, quantize_int8

ROWS, DIM = 5000, 32


def _table(rng: np.random.Generator) -> np.ndarray:
    """Rows of very different norms, as in a word-embedding table (rare tokens are large)."""
    norms = np.exp(rng.normal(0.0, 1.0, size=(ROWS, 1))).astype(np.float32)
    return (rng.normal(size=(ROWS, DIM)).astype(np.float32) * norms * 0.05).astype(np.float32)


def _graph(table: np.ndarray, proj: np.ndarray, share_table: bool = False) -> onnx.ModelProto:
    """ids -> Gather(table) -> MatMul(proj) -> out, like an encoder's first steps."""
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="lookup"),
        helper.make_node("MatMul", ["emb", "proj"], ["out"], name="project"),
    ]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", proj.shape[1]])]
    if share_table:  # a second reader of the same table (e.g. tied output weights)
        nodes.append(helper.make_node("Identity", ["table"], ["table_copy"], name="tied"))
        outputs.append(helper.make_tensor_value_info("table_copy", TensorProto.FLOAT, list(table.shape)))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        outputs,
        initializer=[numpy_helper.from_array(table, "table"), numpy_helper.from_array(proj, "proj")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["out"], {"ids": ids})[0])


def test_each_looked_up_row_is_within_half_its_own_step(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    table, eye = _table(rng), np.eye(DIM, dtype=np.float32)
    model = _graph(table, eye)
    assert quantize_embedding_rows(model) == ["table"]
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "rows.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert "table" not in inits and inits["table_rows_int8"].dtype == np.int8

    ids = rng.integers(0, ROWS, size=(4, 50))
    got = _run(tmp_path / "rows.onnx", ids)  # projection is the identity: these are the rows
    want = table[ids]
    step = np.abs(table).max(axis=1)[ids] / 127.0
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= step[..., None] / 2 + 1e-7)


def test_int8_graph_is_closer_than_one_scale_per_table_and_a_quarter_of_the_size(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(11)
    table, proj = _table(rng), rng.normal(size=(DIM, DIM)).astype(np.float32)
    onnx.save(_graph(table, proj), str(tmp_path / "fp32.onnx"))
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "ours.onnx")
    # What ONNX Runtime does on its own: the Gather table with one scale and zero point.
    quantize_dynamic(
        str(tmp_path / "fp32.onnx"), str(tmp_path / "ort.onnx"), weight_type=QuantType.QInt8, per_channel=True
    )
    ops = {n.op_type for n in onnx.load(str(tmp_path / "ours.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # the MatMul is int8 too

    ids = rng.integers(0, ROWS, size=(8, 40))
    ref = _run(tmp_path / "fp32.onnx", ids)
    ours = np.linalg.norm(_run(tmp_path / "ours.onnx", ids) - ref) / np.linalg.norm(ref)
    theirs = np.linalg.norm(_run(tmp_path / "ort.onnx", ids) - ref) / np.linalg.norm(ref)
    assert ours < theirs / 2, (ours, theirs)
    assert (tmp_path / "ours.onnx").stat().st_size < (tmp_path / "fp32.onnx").stat().st_size / 3


def test_small_or_shared_tables_stay_fp32() -> None:
    rng = np.random.default_rng(3)
    eye = np.eye(DIM, dtype=np.float32)
    small = _graph(rng.normal(size=(512, DIM)).astype(np.float32), eye)  # position embeddings' size
    assert quantize_embedding_rows(small) == []
    shared = _graph(_table(rng), eye, share_table=True)
    assert quantize_embedding_rows(shared) == []
    assert "table" in {i.name for i in shared.graph.initializer}
