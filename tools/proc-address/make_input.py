"""Writes the probe's question list: every API name the 13.0 headers version (from the
PFN_<name>_v<version> typedefs), at each version where a variant appears, one version below the
first, and 13000; plus every base name of the driver's exports at 1000 and 13000.

usage: python3 make_input.py INCLUDE_DIR EXPORTS_TXT > input.txt
"""
import glob, os, re, sys

inc, exports = sys.argv[1], sys.argv[2]
versions = {}
for h in glob.glob(os.path.join(inc, "*Typedefs.h")):
    for name, ver in re.findall(r"\bPFN_(cu\w+?)_v(\d+)(?:_ptsz|_ptds)?\b", open(h, errors="replace").read()):
        versions.setdefault(name, set()).add(int(ver))

def base(sym):
    s = re.sub(r"_(ptds|ptsz)$", "", sym)
    return re.sub(r"_v\d+$", "", s)

for line in open(exports):
    sym = line.strip()
    if sym.startswith("cu") and not sym.startswith("cudbg"):
        versions.setdefault(base(sym), set())

out = []
for name, vs in sorted(versions.items()):
    qs = set(vs) | {1000, 13000}
    for v in vs:
        qs.add(v - 10)
    for v in sorted(qs):
        if v > 0:
            out.append(f"{name} {v}")
print("\n".join(out))
