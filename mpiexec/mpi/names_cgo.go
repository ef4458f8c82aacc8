//go:build cgo && !nompi

package mpi

/*
#include <string.h>
#include <mpi.h>

// rf_gather_names gathers the processor name of every node leader to rank 0:
// a leader sends its name in a slot of len bytes, the other ranks send
// nothing; at rank 0 counts and displs place leader k's slot at k*len.
static int rf_gather_names(int leader, int len, char *out, int *counts, int *displs) {
	char name[MPI_MAX_PROCESSOR_NAME + 1];
	int n = 0, rc;
	memset(name, 0, sizeof name);
	if ((rc = MPI_Get_processor_name(name, &n)) != MPI_SUCCESS) return rc;
	if (len > (int)sizeof name) len = sizeof name;
	return MPI_Gatherv(name, leader ? len : 0, MPI_CHAR, out, counts, displs, MPI_CHAR, 0, MPI_COMM_WORLD);
}
*/
import "C"

import (
	"bytes"
	"unsafe"
)

// nameSlot is the bytes of a host name that GatherHosts carries.
const nameSlot = 64

// GatherHosts gathers the host name (MPI_Get_processor_name, cut to 63
// bytes) of each node to rank 0, where it returns them by node: the name
// of node k, as nodeOf numbers the nodes, at index k. Other ranks get nil.
// Only each node's first rank sends (MPI_Gatherv), so rank 0 receives one
// name per node, not one per rank. It is collective over MPI_COMM_WORLD;
// nodeOf must be the same on every rank. Call it from the MPI thread.
func GatherHosts(rank int, nodeOf []int) ([]string, error) {
	nodes := 0
	leader := false
	for r, n := range nodeOf {
		if n >= nodes {
			nodes = n + 1
			if r == rank {
				leader = true
			}
		}
	}
	var out []byte
	var counts, displs []C.int
	if rank == 0 {
		out = make([]byte, nodes*nameSlot)
		counts = make([]C.int, len(nodeOf))
		displs = make([]C.int, len(nodeOf))
		seen := 0
		for r, n := range nodeOf {
			if n == seen {
				counts[r] = nameSlot
				displs[r] = C.int(n * nameSlot)
				seen++
			}
		}
	}
	var po *C.char
	var pc, pd *C.int
	if rank == 0 {
		po = (*C.char)(unsafe.Pointer(&out[0]))
		pc, pd = &counts[0], &displs[0]
	}
	l := C.int(0)
	if leader {
		l = 1
	}
	if err := mpiError("MPI_Gatherv", C.rf_gather_names(l, nameSlot, po, pc, pd)); err != nil {
		return nil, err
	}
	if rank != 0 {
		return nil, nil
	}
	hosts := make([]string, nodes)
	for k := range hosts {
		slot := out[k*nameSlot : (k+1)*nameSlot]
		if i := bytes.IndexByte(slot, 0); i >= 0 {
			slot = slot[:i]
		}
		hosts[k] = string(slot)
	}
	return hosts, nil
}
