#!/usr/bin/env bash
# The zoo's numbers as wcx produces them: `wcx demo`'s results.json, 17 `wcx calibrate --json`
# reports (window/threshold/none/all policies, empirical and guaranteed, selective and OOD, two
# and three members, INT8, from logits, and a fit without a certificate) and the manifests they
# wrote, all into OUT. Run it before and after a change that must not move a number, then
#     python tools/compare_results.py OUT_BEFORE OUT_AFTER
# (latencies, paths and timestamps are not compared). Takes about 30 s on two cores.
#
# Usage: bash tools/zoo_numbers.sh OUT
set -euo pipefail
OUT=${1:?usage: tools/zoo_numbers.sh OUT}; mkdir -p "$OUT"
Z=wcx/zoo/data
python - "$OUT" <<'PY'
import sys
from pathlib import Path
from wcx.bundle import Bundle, select_members
out = Path(sys.argv[1])
zoo = Bundle.load("wcx/zoo/bundles/fp32")
select_members(zoo, ["b3_s0", "b3_s1"], out / "b3pair", overwrite=True)
select_members(zoo, ["b1_s0", "b1_s1", "b1_s2"], out / "b1three", overwrite=True)
int8 = Bundle.load("wcx/zoo/bundles/int8")
select_members(int8, ["b2_s0", "b2_s1"], out / "b2int8", overwrite=True)
PY
wcx demo --out $OUT/demo --repeats 3 > /dev/null
# --replace-certified: the fits below replace one another on the same bundles, certified or not
cal() { name=$1; shift; wcx calibrate "$@" --replace-certified --json $OUT/$name.json > /dev/null || echo "calibrate $name exited $?"; }
cal g_window   $OUT/b3pair --data $Z/calib.npz --test $Z/test.npz --risk 0.05 --delta 0.1
cal e_window   $OUT/b3pair --data $Z/calib.npz --test $Z/test.npz --risk 0.05
cal e_thresh   $OUT/b3pair --data $Z/calib.npz --test $Z/test.npz --risk 0.05 --policy threshold
cal g_fixed    $OUT/b3pair --data $Z/calib.npz --test $Z/test.npz --risk 0.02 --delta 0.1 --widths 0.1,0.1
cal e_entropy  $OUT/b3pair --data $Z/calib.npz --test $Z/test.npz --risk 0.05 --score neg_entropy --n-boot 0
cal e_none     $OUT/b3pair --data $Z/calib.npz --test $Z/test.npz --risk 0.05 --policy none
cal g_all      $OUT/b3pair --data $Z/calib.npz --test $Z/test.npz --risk 0.05 --delta 0.1 --policy all
cal ood_e      $OUT/b3pair --data $Z/calib.npz --test $Z/test.npz --task ood --ood-data $Z/ood_mnist.npz
cal ood_g      $OUT/b3pair --data $Z/calib.npz --test $Z/test.npz --task ood --delta 0.1 --ood-data $Z/ood_mnist.npz --score max_logit
cal three_g    $OUT/b1three --data $Z/calib.npz --test $Z/test.npz --risk 0.05 --delta 0.1
cal three_e    $OUT/b1three --data $Z/calib.npz --test $Z/test.npz --risk 0.02
cal int8_g     $OUT/b2int8 --data $Z/calib.npz --test $Z/test.npz --risk 0.05 --delta 0.1
cal nocert     $OUT/b3pair --data $Z/calib.npz --risk 0.002 --delta 0.1
python - "$OUT" <<'PY'
import sys, numpy as np
from pathlib import Path
from wcx.bundle import Bundle
from wcx.calibration.held_out import collect_logits
out = Path(sys.argv[1])
b = Bundle.load(out / "b3pair")
for split in ("calib", "test"):
    d = np.load(f"wcx/zoo/data/{split}.npz")
    z = collect_logits(b, d["x"], cache=False)
    np.savez(out / f"logits_{split}.npz", logits=z, y=d["y"], macs=np.array(b.member_macs, dtype=np.float64))
PY
cal logits_g --logits $OUT/logits_calib.npz --test $OUT/logits_test.npz --risk 0.05 --delta 0.1
for b in b3pair b1three b2int8; do cp $OUT/$b/wcx.json $OUT/manifest_$b.json; done
