# Sourced by the device-machine scripts (gpu_run.sh, gpu_py.sh, examples/train/gpu_train.sh):
# the environment they share, with no install and no network.
# * NVLink multicast stays off;
# * `import tilewarp.*` resolves through a package dir of links (the repo's own tilewarp/
#   holds only __init__.py), and the repo root follows it (for `examples.*`);
# * test wheels carried in .whl/ (pytest and its needs) go to /tmp/site.
# The caller has cd'ed to the repo root.
OUT=${OUT:-out}; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1 TILEWARP_CACHE_DIR=${TILEWARP_CACHE_DIR:-/tmp/tilewarp-cubin}
_tw_pkg=$(mktemp -d)/tilewarp; mkdir -p "$_tw_pkg"
cp tilewarp/__init__.py tilewarp/__main__.py "$_tw_pkg/"
for _d in pipeline runtime csrc; do ln -s "$PWD/$_d" "$_tw_pkg/$_d"; done
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$(dirname "$_tw_pkg"):$PWD${PYTHONPATH:+:$PYTHONPATH}"
