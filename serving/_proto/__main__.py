"""Regenerate ``predict_v2_pb2.py`` from ``predict_v2.proto`` (needs grpcio-tools)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


def main() -> None:
    """Run protoc on the .proto beside this file and write the module beside it."""
    from grpc_tools import protoc

    here = Path(__file__).parent
    with tempfile.TemporaryDirectory() as tmp:
        # protoc names the module after the .proto's path: lay it out as the package.
        src = Path(tmp) / "jaxtx" / "serving" / "_proto"
        src.mkdir(parents=True)
        shutil.copy(here / "predict_v2.proto", src)
        code = protoc.main(
            ["protoc", f"-I{tmp}", f"--python_out={tmp}", "jaxtx/serving/_proto/predict_v2.proto"]
        )
        if code != 0:
            raise SystemExit(f"protoc failed with status {code}")
        shutil.copy(src / "predict_v2_pb2.py", here / "predict_v2_pb2.py")
    print(f"wrote {here / 'predict_v2_pb2.py'}")


if __name__ == "__main__":
    main()
