# Sourced by tests/mpi/run.sh and bench/mpi/run.sh: Open MPI on loopback
# only (pml ob1 keeps it from probing UCX), root allowed, oversubscribed
# (../shared/design-mpi.md section 4; docs/mpi.md, "CI and tests").
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo
export OMPI_MCA_rmaps_base_oversubscribe=1
# Containers may forbid the ptrace-based single copy.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
