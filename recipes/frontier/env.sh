#!/bin/bash
# ROCm / RCCL environment for PyTorch on Frontier (OLCF). Sourced by pretrain.sbatch on the
# batch node; srun propagates the exported variables to every node.
#
# Sources: OLCF "PyTorch on Frontier" guide (docs.olcf.ornl.gov, software/python/
# pytorch_frontier) and the aws-ofi-rccl README. Values marked SITE-SPECIFIC depend on your
# project, module versions or install paths: check them against `module avail` and the current
# OLCF documentation before the first large run.

# -- modules (SITE-SPECIFIC: versions change with the programming environment) ---------------
# PrgEnv-gnu + ROCm + the gfx90a (MI250X) target, as in OLCF's PyTorch guide. Match the ROCm
# module to the ROCm your torch wheel was built for (e.g. torch+rocm6.x -> rocm/6.x).
if type module >/dev/null 2>&1; then
    module load PrgEnv-gnu
    module load "rocm/${GEOFM_ROCM_VERSION:-6.2.4}"
    module load craype-accel-amd-gfx90a
else
    echo "env.sh: 'module' not available (not on Frontier?): skipping module loads" >&2
fi

# -- Python environment (SITE-SPECIFIC) -----------------------------------------------------------
# OLCF: environments on NFS (/ccs/home, /ccs/proj) initialise slowly at scale; Orion is faster,
# node-local NVMe (sbcast a conda-pack'ed env) fastest. Point GEOFM_VENV at your environment.
if [[ -n "${GEOFM_VENV:-}" ]]; then
    # shellcheck disable=SC1091
    source "${GEOFM_VENV}/bin/activate"
fi

# -- RCCL over Slingshot -----------------------------------------------------------------------
# The aws-ofi-rccl plugin lets RCCL use libfabric (CXI provider) on Slingshot instead of TCP
# sockets; without it inter-node collectives fall back to sockets and are many times slower.
# SITE-SPECIFIC: the path where you built it (OLCF's guide builds it under your project space).
if [[ -n "${GEOFM_OFI_RCCL_LIB:-}" ]]; then
    export LD_LIBRARY_PATH="${GEOFM_OFI_RCCL_LIB}:${LD_LIBRARY_PATH:-}"
else
    echo "env.sh: GEOFM_OFI_RCCL_LIB unset: RCCL will not use the aws-ofi-rccl plugin" >&2
fi
# OLCF: set the socket interface RCCL's bootstrap (and any socket fallback) uses to the first
# high-speed NIC; the management network is slow and sometimes unreachable between nodes.
# Elsewhere (a test cluster without Slingshot) the default interface is kept: naming one that
# does not exist makes gloo and RCCL fail at start.
if [[ -e /sys/class/net/hsn0 ]]; then
    export NCCL_SOCKET_IFNAME=hsn0
    # torch.distributed's TCP store (rendezvous) on the same network.
    export GLOO_SOCKET_IFNAME=hsn0
else
    echo "env.sh: no hsn0 interface (not on Frontier?): keeping the default socket interface" >&2
fi
# aws-ofi-rccl README (Frontier): let RCCL use GPU-direct RDMA between GCD memory and NIC.
# OLCF: "can improve performance, but remove this setting if you encounter a hang/crash".
export NCCL_NET_GDR_LEVEL=3
# OLCF: "On large systems, this NCCL setting has been found to improve performance".
export NCCL_CROSS_NIC=1
# aws-ofi-rccl README: the CXI provider's address-translation service must be off for RCCL.
export FI_CXI_ATS=0
# libfabric memory-registration cache monitor that is safe with GPU memory (HPE guidance for
# *CCL over CXI); the default can stall or corrupt registrations when memory is freed.
export FI_MR_CACHE_MONITOR=userfaultfd
# Larger completion queue for many concurrent peers (HPE CXI guidance at scale).
export FI_CXI_DEFAULT_CQ_SIZE=131072
# Off by default: set NCCL_DEBUG=INFO for one run to confirm "NET/OFI Selected Provider is cxi".
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"

# -- MIOpen caches on node-local storage -------------------------------------------------------
# OLCF: MIOpen's user database and kernel cache default to $HOME (NFS); hundreds of ranks writing
# there give "Disk I/O error"s. /tmp is node-local; the per-job directory keeps jobs apart.
export MIOPEN_USER_DB_PATH="/tmp/miopen-${USER:-$(id -un)}-${SLURM_JOB_ID:-local}"
export MIOPEN_CUSTOM_CACHE_DIR="${MIOPEN_USER_DB_PATH}"

# -- Hugging Face on the parallel file system --------------------------------------------------
# Compute nodes have no internet: everything (model code, datasets) is staged beforehand from a
# login/DTN node; offline mode makes a missing file an immediate error instead of a timeout.
# SITE-SPECIFIC: your Orion (Lustre) project directory; Orion is purged, /ccs/proj is not.
export HF_HOME="${HF_HOME:-/lustre/orion/${SLURM_JOB_ACCOUNT:-PROJECT}/scratch/${USER:-$(id -un)}/hf_home}"
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
# OMP_NUM_THREADS (cores per rank) is set by pretrain.sbatch from the job's geometry.
