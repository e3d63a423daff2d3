"""Copy a trained model into the package as a shipped WMH or anatomy model (used by `make train-default`).

    python scripts/ship_model.py runs/default_flair_t1/model.pt sidefcn-flair-t1 --version 2026.11

The model file keeps everything `wmhkit train` exported (network, inputs, training data description,
git hash) and gains a name and version, which `wmhkit segment` writes into every stats file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from wmhkit.io import save_torch
from wmhkit.segment import ANATOMY_MODELS, SHIPPED_MODELS, shipped_model_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model.pt exported by `wmhkit train`")
    parser.add_argument("name", choices=sorted(SHIPPED_MODELS) + sorted(ANATOMY_MODELS))
    parser.add_argument("--version", required=True)
    args = parser.parse_args()
    payload = torch.load(args.model, map_location="cpu", weights_only=True)
    payload.setdefault("info", {}).update({"model_name": args.name, "model_version": args.version,
                                           "network": payload["network"]})
    target = shipped_model_path(args.name)
    save_torch(payload, target)
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB ({payload['network']}, {payload['data']['inputs']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
