package frontend

import (
	"github.com/rankfarm/rankfarm/rankpool"
	"github.com/rankfarm/rankfarm/serialize"
)

// NodeInfo is one host of a block.
type NodeInfo struct {
	// Host is the host's name as MPI reports it (MPI_Get_processor_name).
	Host string
	// Ranks are the world ranks on the host, in order.
	Ranks []int
	// SubMasters are the ranks on the host that relay tasks to workers
	// below rank 0: the host's leader and, past the fan-out, more. Rank 0,
	// the block's scheduler, is not among them.
	SubMasters []int
}

// layoutOf returns the nodes of the block that hello introduced: the ranks
// on each host and, from the tree that the block's size, node map and
// fan-out make (rankpool.Topology, the same function the ranks use), its
// sub-masters. nil when the Hello carries no layout.
func layoutOf(hello *serialize.Hello) []NodeInfo {
	nodeOf := hello.NodeOf()
	if len(nodeOf) == 0 {
		return nil
	}
	topo, err := rankpool.NewTopology(len(nodeOf), nodeOf, int(hello.Fanout))
	nodes := make([]NodeInfo, len(hello.NodeHosts))
	for k := range nodes {
		nodes[k].Host = hello.NodeHosts[k]
	}
	for r, k := range nodeOf {
		nodes[k].Ranks = append(nodes[k].Ranks, r)
		if err == nil && topo.Place(r).Role == rankpool.RoleSubMaster {
			nodes[k].SubMasters = append(nodes[k].SubMasters, r)
		}
	}
	return nodes
}

// nodes returns the block's layout, worked out once.
func (b *block) nodes() []NodeInfo {
	if b.layout == nil && b.hello != nil {
		b.layout = layoutOf(b.hello)
	}
	return b.layout
}
