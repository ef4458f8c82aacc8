package mpiexec

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/rankfarm/rankfarm/launch"
	"github.com/rankfarm/rankfarm/mpiexec/mpi"
)

// TestNetworkVariable checks that the launcher passes the block's network
// under the name the ranks read.
func TestNetworkVariable(t *testing.T) {
	assert.Equal(t, mpi.EnvNetwork, launch.EnvNetwork)
}
