"""End-to-end `wmhkit segment` on a 512x512x16 and a 256x256x48 FLAIR: seconds per stage and peak RSS.

Both FLAIRs are the real clinical FLAIR of bench/preprocess_speed.py (open MS patient12 study2, skull on)
resampled to the two clinical geometries and written as NIfTI. Each is segmented by the command itself
in a fresh process (load -> brain mask -> network -> write, FLAIR only, shipped default model), so the
wall time includes Python start-up and imports and the RSS is that process's peak. Targets (issue 7):
<= 10 s and <= 2 GB each on 2 CPU cores.
Run: .venv/bin/python bench/segment_speed.py [--tta] [--t1]   (needs ../shared/data beside the checkout)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess_speed import CLINICAL, GEOMETRIES, clinical_flair

WMHKIT = Path(sys.executable).with_name("wmhkit")


def run_segment(flair_path: Path, out: Path, extra: list[str]) -> tuple[float, float, dict]:
    """(wall seconds, peak RSS in MB, stats) of one `wmhkit segment` process."""
    start = time.perf_counter()
    process = subprocess.Popen([str(WMHKIT), "segment", str(flair_path), "-o", str(out), "--force", "-q", *extra])
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"wmhkit segment failed on {flair_path} (exit {process.returncode})")
    stats_file = next(out.glob("*_desc-wmh_stats.json"))
    return wall, usage.ru_maxrss / 1024.0, json.loads(stats_file.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tta", action="store_true", help="with flip test-time augmentation")
    parser.add_argument("--t1", action="store_true", help="with the session's T1 (registered to each grid)")
    args = parser.parse_args()
    extra = (["--tta"] if args.tta else []) + (["--t1", f"{CLINICAL}_T1W.nii.gz"] if args.t1 else [])
    print(f"wmhkit segment, {os.cpu_count()} CPU cores, options: {' '.join(extra) or 'none'}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, spacing) in GEOMETRIES.items():
            data, affine = clinical_flair(shape, spacing)
            flair_path = Path(tmp) / f"sub-{name}_FLAIR.nii.gz"
            nib.save(nib.Nifti1Image(data.astype(np.float32), affine), flair_path)
            wall, rss, stats = run_segment(flair_path, Path(tmp) / name, extra)
            stages = ", ".join(f"{k} {v:.2f}" for k, v in stats["timings_s"].items() if k != "total")
            verdict = "ok" if wall <= 10 and rss <= 2048 else "OVER TARGET"
            print(f"{name} ({spacing[0]}x{spacing[1]}x{spacing[2]} mm): {wall:.2f} s end to end, "
                  f"peak RSS {rss:.0f} MB [{verdict}]")
            print(f"  in-process stages (s): {stages}; in-process total {stats['timings_s']['total']:.2f}")
            print(f"  WMH {stats['wmh_volume_ml']:.2f} ml, {stats['lesion_count']} lesions, "
                  f"brain {stats['brain_volume_ml']:.0f} ml ({stats['brain_mask_source']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
